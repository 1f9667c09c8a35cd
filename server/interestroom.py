"""A room's chunked snapshots: interest bookkeeping for every client at once, and shared
chunk encodings.

Theory of operation
-------------------
With ``interest.enabled`` the room hands each tick to ``InterestRoom.deliveries`` instead
of encoding the whole world. Sans-I/O like the room: arrays and ticks in, bytes out.

Per tick, shared by everyone: the world's live slots are assigned to grid cells in one
NumPy pass (``sim.interest.Grid.assign``), and each chunk ``(cell, baseline)`` a client
needs is encoded once, in one batch (``proto.chunks.encode_chunks``), already framed as a
``ServerFrame{snapshot{chunks: [chunk]}}`` fragment that every client sent that chunk
reuses by identity (the delivery writes the fragments with ``writelines``, no copy). So
the encoding cost grows with occupied cells x distinct baselines, not clients x entities.

Per client, what the wire spec needs the server to know (proto/README.md, *Chunked
snapshots*):

- its interest cells with hysteresis and their send schedule under the byte budget
  (``sim.interest.RoomCells``) and its byte allowance (`tokens`);
- for each cell, the newest *acknowledged* tick in which it was sent that cell: the
  cell's baseline (acks arrive in order, so acking T means every earlier snapshot sent was
  applied), whose member list the client kept; the grid of each recent tick is kept here
  (``_GridRing``) to know those members;
- a log of what each sent snapshot carried (slots), so it knows which chunk members the
  client will skip (their slot was not carried by the baseline snapshot) and sends those
  whole in the personal part;
- its view model (kind|gen per slot the client holds) and the removals not yet
  acknowledged (``left`` / ``gone``), repeated until an ack covers them.

All of it is kept for the whole room as arrays, so a tick costs a fixed number of NumPy
calls over all clients together, not a Python pass per client (issue 16: 200 clients in a
33 ms tick). Scalars are arrays indexed by seat row; per-(client, cell) state is dense
(``row * stride + cell``, see ``RoomCells``); sets of slots per client (the removals,
what a snapshot carried, recent hitters) are sorted int64 keys ``row << shift | slot``
over all clients (``shift`` bits hold any slot). The views are a dense (slot, row) map of
the kind|gen held (0: none). A held entry can only stop being of interest when its slot
changes cell or entity or its cell leaves the client's interest, so the removal pass
looks at those entries only (plus a watch list of held entries out of interest that are
kept: own entity, hitters, rows not delivered), not at every view's every entry (~90k at
bigworld). The log holds, per recent tick,
every client's sent cells and carried keys, and ``logged[row, tick % ring] == tick`` says
row's snapshot of that tick is in it (not skipped, not before a reset). An ack from a to b
applies the logged ticks in (a, b]: a loop over those few ticks, vectorised over clients.
Only the final hand-over (each client's tuple of fragments and its personal bytes) walks
the clients.

A snapshot the delivery skips marks the view entries it added as unknown (the client may
still hold an older entity in such a slot), so the next removal pass sends them as gone
unless carried again. A reset (join, resume, ack 0, or a skipped snapshot that carried
the reset) clears a client's baselines, log, view and removals; the next
snapshot carries the reset flag and only keyframe chunks.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import numpy as np

from proto import chunks as chunkcodec
from proto import tickwire_pb2 as pb
from proto.codec import SnapshotHistory
from sim.interest import CellIndex, Grid, RoomCells, in_sorted, sorted_unique
from sim.params import Params

_W_KIND_GEN = 6
_EMPTY = np.zeros(0, dtype=np.int64)
_NO_ACK = -1
_UNKNOWN_KG = 0xFFFF  # a view entry the client may hold with another entity (never a kind|gen)


@dataclass(slots=True)
class ClientPart:
    """What one client gets this tick (the room wraps it into a Delivery)."""

    chunks: tuple[bytes, ...]
    personal: bytes  # the Snapshot.personal bytes
    reset: bool


@dataclass(frozen=True, slots=True)
class InterestCells:
    cells: np.ndarray  # ascending cell ids
    last_sent: np.ndarray  # tick each was last sent (0 = not since it entered)


@dataclass(frozen=True, slots=True)
class ClientView:
    """A read-only copy of one client's state (``InterestRoom.clients``; tests, tools)."""

    cells: InterestCells
    view_slots: np.ndarray  # the slots the server thinks the client holds, ascending
    acked: int


class InterestRoom:
    """The chunked-snapshot side of a room with ``interest.enabled``."""

    def __init__(self, params: Params, capacity: int, history: SnapshotHistory) -> None:
        self.params = params
        self.grid = Grid.for_world(params.world_width, params.world_height,
                                   params.interest_cell)
        self.capacity = capacity
        # Keys of (seat row, slot): row << shift | slot, so that splitting them is a shift
        # and a mask, not an int64 division (5x dearer over the ~25k keys of a tick).
        self.shift = max(1, (capacity - 1).bit_length())
        self.mask = (1 << self.shift) - 1
        self.history = history
        self.ring = history.size
        self.cells = RoomCells(self.grid, params.interest_radius, params.interest_margin,
                               params.tick_rate, params.interest_near)
        self.stride = self.cells.stride
        self.encodes = 0  # chunks encoded (the rest of the chunks sent were shared)
        self.chunks_sent = 0
        self.oldest_age_s = 0.0  # the oldest unsent in-interest entity's wait, last tick
        # Bytes of each cell's last encoding, for estimates (the last entry: no cell).
        self.last_size = np.zeros(self.grid.cells + 1, dtype=np.int64)
        self.grids = _GridRing(self.ring, capacity, self.grid.cells)  # recent ticks' grids
        # Per seat row.
        self.joined = np.zeros(0, dtype=bool)
        self.reset_pending = np.zeros(0, dtype=bool)
        self.reset_tick = np.zeros(0, dtype=np.int64)  # the snapshot that carried the reset
        self.acked = np.zeros(0, dtype=np.int64)
        self.centre = np.zeros((0, 2))
        self.tokens = np.zeros(0)  # byte allowance
        self.logged = np.zeros((0, self.ring), dtype=np.int64)
        self.cell_sent_at = np.zeros(0, dtype=np.int64)  # row * stride + cell -> baseline
        # The views, dense (slot, seat row): the kind|gen of the entity the client holds in
        # that slot, 0 for none (a held record is never of kind 0). Slot-major, so the
        # removal pass reads every row's entry of a changed slot from one place.
        self.view = np.zeros((capacity, 0), dtype=np.uint16)
        # The removal pass looks only at what changed since it last ran: the slots whose
        # cell or kind|gen changed (against `seen_cell` / `seen_kg`), the cells that left
        # an interest, and `watch`: held keys out of interest kept so far (own entity,
        # hitters, rows not delivered) and last tick's personal spawns.
        self.seen_cell = _EMPTY
        self.seen_kg = np.zeros(0, dtype=np.uint16)
        self.watch = _EMPTY
        # Sets over all clients, as sorted keys row << shift | slot.
        self.rm_keys = _EMPTY  # removals sent and not yet acknowledged...
        self.rm_tick = _EMPTY  # ...the tick first sent...
        self.rm_gone = np.zeros(0, dtype=bool)  # ...and gone (True) or left
        self.hit_keys = _EMPTY  # row << shift | the slot that hit it...
        self.hit_tick = _EMPTY  # ...the last tick it did...
        self.hit_kg = np.zeros(0, dtype=np.uint16)  # ...and its kind|gen then
        # tick -> (flat keys row * stride + cell of the cells sent, sorted carried keys,
        # sorted carried keys the view model did not hold with that kind|gen before).
        self.log: dict[int, tuple[np.ndarray, np.ndarray, np.ndarray]] = {}

    # -- seats ------------------------------------------------------------------------------

    def _grow(self, row: int) -> None:
        n_old = len(self.joined)
        if row < n_old:
            return
        n = max(row + 1, 2 * n_old, 8)
        more = n - n_old

        def pad(arr: np.ndarray, fill: object = 0) -> np.ndarray:
            extra = np.full((more, *arr.shape[1:]), fill, dtype=arr.dtype)
            return np.concatenate([arr, extra])

        self.joined = pad(self.joined)
        self.reset_pending = pad(self.reset_pending)
        self.reset_tick = pad(self.reset_tick)
        self.acked = pad(self.acked)
        self.centre = pad(self.centre)
        self.tokens = pad(self.tokens)
        self.logged = pad(self.logged, _NO_ACK)
        self.cell_sent_at = np.concatenate(
            [self.cell_sent_at, np.zeros(more * self.stride, dtype=np.int64)])
        view = np.zeros((self.capacity, n), dtype=np.uint16)
        view[:, :n_old] = self.view
        self.view = view
        self.cells.grow(n)

    def _drop_keys(self, rows: np.ndarray) -> None:
        """Forget the view, removals and hitters of `rows`."""
        self.view[:, rows] = 0
        keep = ~np.isin(self.rm_keys >> self.shift, rows)
        self.rm_keys, self.rm_tick = self.rm_keys[keep], self.rm_tick[keep]
        self.rm_gone = self.rm_gone[keep]

    def _reset_rows(self, rows: np.ndarray) -> None:
        self.reset_pending[rows] = True
        self.reset_tick[rows] = 0
        self.acked[rows] = 0
        self.cell_sent_at.reshape(-1, self.stride)[rows] = 0
        self.logged[rows] = _NO_ACK
        self._drop_keys(rows)

    def join(self, row: int) -> None:
        self._grow(row)
        self.joined[row] = True
        self.cells.clear(row)
        self.centre[row] = 0.0
        self.tokens[row] = 0.0
        self._forget_hitters(row)
        self._reset_rows(np.array([row]))

    def reset(self, row: int) -> None:
        if row < len(self.joined) and self.joined[row]:
            self._reset_rows(np.array([row]))

    def leave(self, row: int) -> None:
        if row < len(self.joined) and self.joined[row]:
            self.joined[row] = False
            self.cells.clear(row)
            self._forget_hitters(row)
            self._reset_rows(np.array([row]))

    def _forget_hitters(self, row: int) -> None:
        self._keep_hitters(self.hit_keys >> self.shift != row)

    def _keep_hitters(self, keep: np.ndarray) -> None:
        self.hit_keys, self.hit_tick = self.hit_keys[keep], self.hit_tick[keep]
        self.hit_kg = self.hit_kg[keep]

    def skipped(self, row: int, tick: int) -> None:
        """The delivery did not send this client's snapshot of `tick`. No chunk will name
        it as a baseline, and the removals it held are still pending (they repeat until
        an ack covers a snapshot that carried them, and the next snapshot carries them).
        But the view model took in what it carried: an entity the client lacks (costs at
        most a removal it ignores), or one whose slot the client holds with an older
        entity (a slot reused, its removal cancelled because the snapshot carried the
        new one). So each slot that snapshot gave the model is marked unknown: the next
        removal pass sends it as gone unless carried again. A skipped reset is sent
        again."""
        if row >= len(self.joined) or not self.joined[row]:
            return
        entry = self.log.get(tick)
        if entry is not None:
            fresh = entry[2]
            lo, hi = np.searchsorted(fresh, [row << self.shift, (row + 1) << self.shift])
            keys = fresh[lo:hi]
            at = self._at(keys)
            held = self.view.ravel()[at] != 0
            self.view.ravel()[at[held]] = _UNKNOWN_KG
            keys = keys[held]
            self.watch = np.concatenate([self.watch, keys])
        if self.logged[row, tick % self.ring] == tick:
            self.logged[row, tick % self.ring] = _NO_ACK
        if tick == self.reset_tick[row]:
            self._reset_rows(np.array([row]))

    @property
    def clients(self) -> dict[int, ClientView]:
        """Each joined row's state, copied (for tests and tools; not used per tick)."""
        out = {}
        for row in np.flatnonzero(self.joined).tolist():
            cells, last_sent, _ = self.cells.cells_of(row)
            held = self.view[:, row]
            out[row] = ClientView(InterestCells(cells, last_sent), np.flatnonzero(held),
                                  int(self.acked[row]))
        return out

    # -- reporting --------------------------------------------------------------------------

    def info(self) -> pb.InterestInfo:
        p = self.params
        return pb.InterestInfo(cell=p.interest_cell, columns=self.grid.columns,
                               rows=self.grid.rows, radius=p.interest_radius,
                               margin=p.interest_margin,
                               budget_bytes_per_s=p.interest_budget_kbps * 1024.0)

    def summary(self) -> dict[str, object]:
        """For /rooms: the grid, the oldest wait, and how much encoding was shared."""
        return {"cell": self.params.interest_cell, "radius": self.params.interest_radius,
                "columns": self.grid.columns, "rows": self.grid.rows,
                "budget_kbps": self.params.interest_budget_kbps,
                "oldest_age_s": round(self.oldest_age_s, 3),
                "chunks_encoded": self.encodes, "chunks_sent": self.chunks_sent}

    def set_params(self, params: Params) -> None:
        """Live changes: only the budget is live."""
        self.params = params

    # -- the tick ---------------------------------------------------------------------------

    def deliveries(self, tick: int, state: np.ndarray, pos: np.ndarray, alive: np.ndarray,
                   rows: list[int], entities: list[int], acks: list[int],
                   hits: tuple[np.ndarray, np.ndarray]) -> list[ClientPart]:
        """Each connected seat's chunks and personal part for snapshot `tick`.

        `state` is the quantised world at `tick` (already pushed into the history);
        `pos`/`alive` the world's positions and live mask; `rows`, `entities` and `acks`
        the connected seats' rows, entity slots and newest acks; `hits` this tick's
        (shooter, target) slots.

        Three passes, each over all clients at once: choose every client's cells and
        their baselines (sizes estimated from the cells' last encodings); encode every
        distinct (cell, baseline) in one batch; build every personal part from what each
        client was sent."""
        index = self.grid.assign(pos, alive)
        words = state.view("<u2").reshape(-1, 8)
        self.grids.put(tick, index, words)
        for old in [t for t in self.log if t <= tick - self.ring]:
            del self.log[old]
        rows_a = np.asarray(rows, dtype=np.int64)
        if len(rows_a) == 0:
            self.oldest_age_s = 0.0
            return []
        ent = np.asarray(entities, dtype=np.int64)
        chosen = self._choose(tick, index, words, pos, alive, rows_a, ent,
                              np.asarray(acks, dtype=np.int64), hits)
        frames, members, lookup = self._encode(chosen, tick, index, words)
        return self._finish(tick, chosen, frames, members, lookup, words)

    def _hits(self, tick: int, hits: tuple[np.ndarray, np.ndarray], rows: np.ndarray,
              ent: np.ndarray, kg: np.ndarray) -> None:
        """Remember who hit a connected player this tick (it stays in view a second)."""
        shooter = np.asarray(hits[0], dtype=np.int64)
        target = np.asarray(hits[1], dtype=np.int64)
        if not len(target):
            return
        by_entity = np.argsort(ent, kind="stable")
        at = np.minimum(np.searchsorted(ent[by_entity], target), len(ent) - 1)
        found = (ent[by_entity][at] == target) & (shooter >= 0)
        if not found.any():
            return
        keys = np.concatenate([self.hit_keys,
                               rows[by_entity[at[found]]] << self.shift | shooter[found]])
        ticks = np.concatenate([self.hit_tick, np.full(int(found.sum()), tick)])
        kgs = np.concatenate([self.hit_kg, kg[shooter[found]]])
        order = np.lexsort((ticks, keys))
        keys, ticks, kgs = keys[order], ticks[order], kgs[order]
        last = np.r_[keys[1:] != keys[:-1], True]  # a key's newest hit
        self.hit_keys, self.hit_tick, self.hit_kg = keys[last], ticks[last], kgs[last]

    def _acks(self, rows: np.ndarray, acks: np.ndarray) -> None:
        """The clients' newest acks (Seat.acked_tick); 0 after a nonzero ack is a reset.
        An ack advancing a row from a to b makes each cell it was sent in a logged tick
        of (a, b] have that tick as its baseline (a newer send wins)."""
        acked = self.acked[rows]
        zero = (acks == 0) & (acked > 0)
        if zero.any():
            self._reset_rows(rows[zero])
        adv = acks > acked
        if not adv.any():
            return
        r, a_from, a_to = rows[adv], acked[adv], acks[adv]
        since = np.full(len(self.joined), np.iinfo(np.int64).max)
        upto = np.full(len(self.joined), _NO_ACK, dtype=np.int64)
        since[r], upto[r] = a_from, a_to
        lo, hi = int(a_from.min()), int(a_to.max())
        for t in sorted(t for t in self.log if lo < t <= hi):  # oldest first
            cell_keys = self.log[t][0]
            er = cell_keys // self.stride
            ok = (since[er] < t) & (t <= upto[er]) & (self.logged[er, t % self.ring] == t)
            self.cell_sent_at[cell_keys[ok]] = t
        if len(self.rm_keys):
            keep = self.rm_tick > upto[self.rm_keys >> self.shift]
            self.rm_keys, self.rm_tick = self.rm_keys[keep], self.rm_tick[keep]
            self.rm_gone = self.rm_gone[keep]
        self.acked[r] = a_to

    def _choose(self, tick: int, index: CellIndex, words: np.ndarray, pos: np.ndarray,
                alive: np.ndarray, rows: np.ndarray, ent: np.ndarray, acks: np.ndarray,
                hits: tuple[np.ndarray, np.ndarray]) -> _Chosen:
        """Pass 1 for every client: acks, interest cells, removals, the cells to send."""
        shift, mask, rate = self.shift, self.mask, self.params.tick_rate
        kg = words[:, _W_KIND_GEN]
        self._hits(tick, hits, rows, ent, kg)
        self._acks(rows, acks)
        reset = self.reset_pending[rows]
        if reset.any():
            self._reset_rows(rows[reset])
            self.reset_pending[rows] = False
            self.reset_tick[rows[reset]] = tick
        live = alive[ent]
        self.centre[rows[live]] = pos[ent[live]]
        keys, keep, dist = self.cells.update(rows, self.centre[rows])

        # The interest set: live members of the interest cells, own entity, recent hitters.
        delivered = np.zeros(len(self.joined), dtype=bool)
        delivered[rows] = True
        if len(self.hit_keys):
            h_row, h_slot = self.hit_keys >> shift, self.hit_keys & mask
            # A hitter that died or whose slot holds another entity now is forgotten, for
            # every seat (also one not connected this tick: its slot may be reused before
            # that seat's next snapshot); an old hit, when the seat's snapshot is built.
            drop = ~alive[h_slot] | (kg[h_slot] != self.hit_kg)
            drop |= delivered[h_row] & (self.hit_tick <= tick - rate)
            self._keep_hitters(~drop)
            hitters = self.hit_keys[delivered[self.hit_keys >> shift]]
        else:
            hitters = _EMPTY
        always = sorted_unique(np.concatenate([rows[live] << shift | ent[live], hitters]))
        own = np.full(len(self.joined), -1, dtype=np.int64)
        own[rows[live]] = ent[live]

        # Removals: what a view holds that is not in the interest set now (an entity whose
        # cell is out, that died, or whose slot holds another entity). A held entry that
        # stayed in interest leaves it only when its slot changes cell or entity, or its
        # cell leaves the client's interest: only those entries (and the watched ones)
        # are looked at, not every view's every entry.
        self._removals(tick, index, kg, delivered, own, hitters)

        # Cells to send: near and overdue ones always, then by priority while the byte
        # allowance lasts (sizes estimated from each cell's last encoding).
        counts = np.zeros(self.grid.cells + 1, dtype=np.int64)
        counts[:-1] = np.diff(index.starts)
        # Per cell first (a thousand entries), then one gather per client window entry.
        size = self.last_size
        cell_est = np.where(counts == 0, 0, np.where(size > 0, size, 16 + 3 * counts))
        ids = self.cells.window_cells
        est = cell_est[ids]
        per_tick = self.params.interest_budget_kbps * 1024.0 / rate
        tokens = None
        if per_tick > 0:
            tokens = np.minimum(2.0 * per_tick, self.tokens[rows] + per_tick)
        plan, cost = self.cells.schedule(tick, rows, keys, keep, dist, est, tokens,
                                         (counts > 0)[ids])
        if tokens is not None:
            self.tokens[rows] = tokens - cost
        self.oldest_age_s = plan.oldest_wait / rate

        go = counts[plan.cell] > 0
        client, cells = plan.client[go], plan.cell[go]
        row = rows[client]
        base = self.cell_sent_at[row * self.stride + cells]
        usable = (base > tick - self.ring) & (self.logged[row, base % self.ring] == base)
        base = np.where(usable, base, 0)
        return _Chosen(rows, delivered, reset, always, client, cells, base,
                       tokens is not None)

    def _at(self, keys: np.ndarray) -> np.ndarray:
        """Flat indices into `view` of keys row << shift | slot."""
        return (keys & self.mask) * self.view.shape[1] + (keys >> self.shift)

    def _removals(self, tick: int, index: CellIndex, kg: np.ndarray, delivered: np.ndarray,
                  own: np.ndarray, hitters: np.ndarray) -> None:
        shift, mask, view = self.shift, self.mask, self.view.ravel()
        if len(self.seen_cell) != len(index.cell_of):  # first pass: every slot changed
            self.seen_cell = np.full(len(index.cell_of), -1, dtype=np.int64)
            self.seen_kg = np.zeros(len(kg), dtype=np.uint16)
        changed = np.flatnonzero((index.cell_of != self.seen_cell) | (kg != self.seen_kg))
        self.seen_cell, self.seen_kg = index.cell_of, kg.copy()
        parts = [self.watch]
        if len(changed):
            # Every row's view of the changed slots, in one (rows, slots) gather.
            # (flatnonzero and a division: np.nonzero's 2-D form is ~5x dearer)
            n = self.view.shape[1]
            flat = np.flatnonzero(self.view[changed])
            j = flat // n
            r = flat - j * n
            parts.append(r << shift | changed[j])
        dropped = self.cells.dropped
        if len(dropped):
            d_row, d_cell = dropped // self.stride, dropped % self.stride
            n = index.starts[d_cell + 1] - index.starts[d_cell]
            parts.append(np.repeat(d_row << shift, n)
                         | index.order[_gather(index.starts[d_cell], n)])
        cand = sorted_unique(np.concatenate(parts))
        at = self._at(cand)
        held = view[at]
        on = held != 0
        cand, held, at = cand[on], held[on], at[on]
        c_row, c_slot = cand >> shift, cand & mask
        cell = index.cell_of[c_slot]
        cell[cell < 0] = self.grid.cells  # not live: the sentinel, never of interest
        same = kg[c_slot] == held
        odd = ~(self.cells.in_interest[c_row * self.stride + cell] & same)
        o_key, o_row, o_slot, same = cand[odd], c_row[odd], c_slot[odd], same[odd]
        kept = (o_slot == own[o_row]) & same
        if len(hitters):
            kept |= in_sorted(o_key, hitters) & same
        leaving = delivered[o_row] & ~kept
        if leaving.any():
            self.rm_keys = np.concatenate([self.rm_keys, o_key[leaving]])
            self.rm_tick = np.concatenate(
                [self.rm_tick, np.full(int(leaving.sum()), tick, dtype=np.int64)])
            self.rm_gone = np.concatenate([self.rm_gone, ~same[leaving]])
            view[at[odd][leaving]] = 0
        self.watch = o_key[~leaving]  # still held out of interest: looked at next tick

    def _encode(self, chosen: _Chosen, tick: int, index: CellIndex, words: np.ndarray
                ) -> tuple[list[bytes], _Members, np.ndarray]:
        """Pass 2: every distinct (cell, baseline) the clients need, encoded in one batch.
        A delta chunk lists the cell's members at its baseline (the client has them) with
        an op each, then the members added since. Returns the serialized fragments, the
        chunks' rows, and the sorted (baseline, cell) keys that index them."""
        if not len(chosen.cells):
            none = np.zeros(0, dtype=bool)
            return [], _Members(_EMPTY, none, none, np.zeros(1, np.int64)), _EMPTY
        # Chunks in (baseline, cell) order, so every array below is grouped by baseline
        # and the per-baseline work is on contiguous slices.
        uniq = sorted_unique(chosen.base * _KEY + chosen.cells)
        bases, cells = uniq // _KEY, uniq % _KEY
        k_n = len(cells)
        cur_n = index.starts[cells + 1] - index.starts[cells]
        cur = index.order[_gather(index.starts[cells], cur_n)]
        cur_chunk = np.repeat(np.arange(k_n), cur_n)
        # The cells' members at their baselines (none for keyframe chunks), and which
        # members now were not in the cell then (added), from the ring of recent grids.
        delta = bases > 0
        grids = self.grids
        d_cells = cells[delta]
        then = bases[delta] % self.ring
        d_first = grids.starts[then, d_cells]
        d_n = grids.starts[then, d_cells + 1] - d_first
        prev_n = np.zeros(k_n, dtype=np.int64)
        prev_n[delta] = d_n
        prev = grids.order.ravel()[_gather(then * grids.capacity + d_first, d_n)]
        added = np.ones(len(cur), dtype=bool)
        at = np.flatnonzero(delta[cur_chunk])
        at_chunk = cur_chunk[at]
        # Flat (tick % ring) * capacity + slot indices: one index array, not two.
        added[at] = grids.cell_of.ravel()[bases[at_chunk] % self.ring * grids.capacity
                                          + cur[at]] != cells[at_chunk]
        prev_chunk = np.repeat(np.arange(k_n), prev_n)
        prev_in = index.cell_of[prev] == cells[prev_chunk]
        add_n = np.bincount(cur_chunk[added], minlength=k_n)
        # Rows: each chunk's previous members, then its added ones (each part ascending).
        counts = prev_n + add_n
        row_start = np.cumsum(counts) - counts
        r_n = int(counts.sum())
        row_slots = np.empty(r_n, dtype=np.int64)
        in_cell = np.ones(r_n, dtype=bool)
        at = _gather(row_start, prev_n)
        row_slots[at] = prev
        in_cell[at] = prev_in
        row_slots[_gather(row_start + prev_n, add_n)] = cur[added]
        now = chunkcodec.gather_rows(words, row_slots)
        row_base = np.repeat(bases, counts)
        base_rows = chunkcodec.gather_rows(grids.words.reshape(-1, 8),
                                           row_base % self.ring * grids.capacity + row_slots)
        base_rows[row_base == 0] = 0
        kg = now[:, _W_KIND_GEN]
        same = (row_base > 0) & (kg == base_rows[:, _W_KIND_GEN]) & (kg & 0xFF != 0)
        elapsed = np.where(bases > 0, tick - bases, 0)
        batch = chunkcodec.encode_chunks(cells, elapsed, prev_n, add_n, row_slots, in_cell,
                                         same, now, base_rows,
                                         tick_rate=self.params.tick_rate,
                                         pos_scale=self.history.pos_scale, framed=True)
        self.last_size[cells] = batch.sizes
        self.encodes += k_n
        return (batch.chunks, _Members(row_slots, batch.skippable, batch.stays, batch.starts),
                uniq)

    def _finish(self, tick: int, chosen: _Chosen, frames: list[bytes], members: _Members,
                lookup: np.ndarray, words: np.ndarray) -> list[ClientPart]:
        """Pass 3 for every client: what it will skip (sent whole in its personal part),
        its view model, the log of what this snapshot carried, and the personal part."""
        shift, mask, rows = self.shift, self.mask, chosen.rows
        m = len(rows)
        kg = words[:, _W_KIND_GEN]
        ks = np.searchsorted(lookup, chosen.base * _KEY + chosen.cells)
        # All members of all clients' chunks at once, with each one's client and baseline.
        first = members.starts[ks]
        lens = members.starts[ks + 1] - first
        at = _gather(first, lens)
        stays = members.stays[at]
        at = at[stays]
        sent = np.repeat(np.arange(len(ks)), lens)[stays]  # each member's entry in `chosen`
        keys = (rows[chosen.client] << shift)[sent] | members.slots[at]
        skip = np.zeros(len(keys), dtype=bool)
        d_at = np.flatnonzero(members.delta[at])
        if len(d_at):
            # Few members are added op 0/1 ones: group them by baseline, one lookup each.
            d_base = chosen.base[sent[d_at]]
            by_base = np.argsort(d_base, kind="stable")
            d_at, d_base = d_at[by_base], d_base[by_base]
            # (np.r_ costs ~15 us of Python indexing machinery: the edges by hand)
            edges = [0, *(np.flatnonzero(d_base[1:] != d_base[:-1]) + 1).tolist(),
                     len(d_base)]
            for a, b in itertools.pairwise(edges):
                sel = d_at[a:b]
                skip[sel] = ~in_sorted(keys[sel], self.log[int(d_base[a])][1])
        from_chunks = np.sort(keys[~skip])
        always = chosen.always
        spawns = sorted_unique(np.concatenate([keys[skip],
                                               always[~in_sorted(always, from_chunks)]]))
        carried = np.sort(np.concatenate([from_chunks, spawns]), kind="stable")
        # The view holds `carried` now. The personal spawns may be out of interest (own
        # entity, hitters): the next removal pass looks at them.
        now_kg = kg[carried & mask]
        v_at = self._at(carried)
        view = self.view.ravel()
        fresh = carried[view[v_at] != now_kg]  # for `skipped`
        view[v_at] = now_kg
        self.watch = np.concatenate([self.watch, spawns])
        if len(self.rm_keys):
            back = in_sorted(self.rm_keys, carried)  # came back: no removal to repeat
            if back.any():
                self.rm_keys, self.rm_tick = self.rm_keys[~back], self.rm_tick[~back]
                self.rm_gone = self.rm_gone[~back]
        client_of = np.full(len(self.joined), -1, dtype=np.int64)
        client_of[rows] = np.arange(m)
        rm_order = np.argsort(self.rm_keys)
        rm_keys, rm_gone = self.rm_keys[rm_order], self.rm_gone[rm_order]
        rm_client = client_of[rm_keys >> shift]
        mine = rm_client >= 0
        left = mine & ~rm_gone
        gone = mine & rm_gone
        spawn_slots = spawns & mask
        personals = chunkcodec.encode_personals(
            chosen.reset, (rm_client[left], rm_keys[left] & mask),
            (rm_client[gone], rm_keys[gone] & mask),
            (client_of[spawns >> shift], spawn_slots), chunkcodec.gather_rows(words, spawn_slots))
        if chosen.budget:
            # The budget covers the whole message: the chunks were charged (estimated)
            # when chosen; the personal part and the frame headers are charged now.
            self.tokens[rows] -= np.fromiter(map(len, personals), dtype=np.int64,
                                             count=m) + _FRAME_OVERHEAD
        self.log[tick] = (rows[chosen.client] * self.stride + chosen.cells, carried, fresh)
        self.logged[rows, tick % self.ring] = tick
        self.chunks_sent += len(ks)
        # The hand-over: each client's fragments (shared bytes objects) and personal part.
        mine_frames = [frames[k] for k in ks.tolist()]
        ends = np.cumsum(np.bincount(chosen.client, minlength=m)).tolist()
        out = []
        start = 0
        for i, (end, reset) in enumerate(zip(ends, chosen.reset.tolist(), strict=True)):
            out.append(ClientPart(tuple(mine_frames[start:end]), personals[i], reset))
            start = end
        return out


def personal_frames(seqs: np.ndarray, rtts: np.ndarray, personals: list[bytes]) -> list[bytes]:
    """Every seat's ``ServerFrame{snapshot{last_input_seq, rtt_ms, personal}}`` in one pass,
    the bytes protobuf gives (fields in number order, zero scalars left out): `seqs` the
    last applied input seqs (fixed32), `rtts` float32 RTTs (ms), `personals` the parts."""
    m = len(personals)
    seq = np.asarray(seqs).astype("<u4")
    rtt = np.asarray(rtts, dtype="<f4")
    plen = np.fromiter(map(len, personals), dtype=np.int64, count=m)
    has_seq, has_rtt = seq != 0, rtt != 0
    inner = 5 * has_seq + 5 * has_rtt + 1 + chunkcodec.varint_size(plen) + plen
    size = 1 + chunkcodec.varint_size(inner) + inner
    start = np.cumsum(size) - size
    buf = np.zeros(int(size.sum()), dtype=np.uint8)
    buf[start] = 0x12  # ServerFrame.snapshot
    at = chunkcodec.put_varints(buf, start + 1, inner)
    for on, tag, values in ((has_seq, 0x1D, seq), (has_rtt, 0x25, rtt)):
        # Snapshot.last_input_seq (3, fixed32), Snapshot.rtt_ms (4, float)
        buf[at[on]] = tag
        buf[(at[on] + 1)[:, None] + np.arange(4)] = values[on].view(np.uint8).reshape(-1, 4)
        at = at + 5 * on
    buf[at] = 0x4A  # Snapshot.personal (9, bytes)
    at = chunkcodec.put_varints(buf, at + 1, plen)
    buf[_gather(at, plen)] = np.frombuffer(b"".join(personals), dtype=np.uint8)
    raw = buf.tobytes()
    return [raw[a:b] for a, b in zip(start.tolist(), (start + size).tolist(), strict=True)]


_FRAME_OVERHEAD = 40  # bytes: WebSocket header, the per-tick header and personal frames
_KEY = 1 << 32  # (baseline tick, cell) packed in one int64: tick * _KEY + cell


class _GridRing:
    """The grid and the records of each of the last `size` ticks (``CellIndex`` arrays
    and the (capacity, 8) words), as rows of (size, ...) arrays indexed by tick % size, so
    chunks of many baselines look their members and records up in one gather each. The
    records duplicate the history's states (16 bytes x capacity x size: 10 MiB for the
    10k-entity bigworld): one copy per tick instead of a loop over baselines."""

    def __init__(self, size: int, capacity: int, cells: int) -> None:
        self.size = size
        self.capacity = capacity
        self.cell_of = np.full((size, capacity), -1, dtype=np.int32)
        self.order = np.zeros((size, capacity), dtype=np.int32)
        self.starts = np.zeros((size, cells + 1), dtype=np.int64)
        self.words = np.zeros((size, capacity, 8), dtype="<u2")

    def put(self, tick: int, index: CellIndex, words: np.ndarray) -> None:
        at = tick % self.size
        self.words[at, : len(words)] = words
        n = len(index.cell_of)
        self.cell_of[at, :n] = index.cell_of
        self.cell_of[at, n:] = -1
        self.order[at, : len(index.order)] = index.order
        self.starts[at] = index.starts


def _gather(starts: np.ndarray, lens: np.ndarray) -> np.ndarray:
    """Flat indices of the slices ``[starts[i], starts[i] + lens[i])``, one after another."""
    ends = np.cumsum(lens)
    return np.repeat(starts - (ends - lens), lens) + np.arange(int(ends[-1]) if len(ends)
                                                                else 0)


@dataclass(slots=True)
class _Members:
    """The rows of a tick's encoded chunks: chunk k's are ``slots[starts[k]:starts[k+1]]``;
    ``stays`` marks the members now (not the ones that left the cell), ``delta`` the added
    members sent as op 0/1 (skipped by a client whose baseline snapshot lacks them)."""

    slots: np.ndarray
    delta: np.ndarray
    stays: np.ndarray
    starts: np.ndarray


@dataclass(slots=True)
class _Chosen:
    """Pass 1's result: the delivered rows (M), their reset flags and always-included keys
    (own entity and recent live hitters), and the chunks to send as flat arrays grouped
    by client in send order: `client` (index into rows), `cells`, `base` (0 = keyframe)."""

    rows: np.ndarray
    delivered: np.ndarray  # by seat row
    reset: np.ndarray
    always: np.ndarray
    client: np.ndarray
    cells: np.ndarray
    base: np.ndarray
    budget: bool
