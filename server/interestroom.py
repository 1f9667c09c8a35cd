"""A room's chunked snapshots: per-client interest bookkeeping and shared chunk encodings.

Theory of operation
-------------------
With ``interest.enabled`` the room hands each tick to ``InterestRoom.deliveries`` instead
of encoding the whole world. Sans-I/O like the room: arrays and ticks in, bytes out.

Per tick, shared by everyone: the world's live slots are assigned to grid cells in one
NumPy pass (``sim.interest.Grid.assign``), and each chunk ``(cell, baseline)`` a client
needs is encoded once (``proto.chunks.encode_chunk``) and serialized once as a
``ServerFrame{snapshot{chunks: [chunk]}}`` fragment that every client sent that chunk
reuses by identity (the delivery writes the fragments with ``writelines``, no copy). So
the encoding cost grows with occupied cells x distinct baselines, not clients x entities.

Per client (``ClientChunks``), what the wire spec needs the server to know
(proto/README.md, *Chunked snapshots*):

- its interest cells with hysteresis and their send schedule under the byte budget
  (``sim.interest.ClientCells``, ``Allowance``);
- for each cell, the newest *acknowledged* tick in which it was sent that cell: the
  cell's baseline (acks arrive in order, so acking T means every earlier snapshot sent was
  applied), whose member list the client kept; the grid of each recent tick is kept here
  (``indexes``) to know those members;
- a log of what each sent snapshot carried (slots), so it knows which chunk members the
  client will skip (their slot was not carried by the baseline snapshot) and sends those
  whole in the personal part;
- its view model (kind|gen per slot the client holds) and the removals not yet
  acknowledged (``left`` / ``gone``), repeated until an ack covers them.

A reset (join, resume, ack 0, or a snapshot the delivery had to skip, so the client's view
is no longer what we think) clears all of it; the next snapshot carries the reset flag and
only keyframe chunks.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass

import numpy as np

from proto import chunks as chunkcodec
from proto import tickwire_pb2 as pb
from proto.codec import SnapshotHistory
from sim.interest import Allowance, CellIndex, ClientCells, Grid, in_sorted
from sim.params import Params

_W_KIND_GEN = 6
_EMPTY = np.zeros(0, dtype=np.int64)


@dataclass(slots=True)
class ClientPart:
    """What one client gets this tick (the room wraps it into a Delivery)."""

    chunks: tuple[bytes, ...]
    personal: bytes  # the Snapshot.personal bytes
    reset: bool


class ClientChunks:
    """One client's interest bookkeeping (see the module docstring)."""

    def __init__(self, grid: Grid, params: Params, capacity: int) -> None:
        self.cells = ClientCells(grid, params.interest_radius, params.interest_margin,
                                 params.tick_rate, params.interest_near)
        self.allowance = Allowance(0.0)
        self.capacity = capacity
        self.ncells = grid.cells
        self.centre = (0.0, 0.0)
        self.hitters: dict[int, int] = {}  # slot -> the last tick it hit this client
        self.oldest_wait = 0  # ticks the longest-waiting interest cell has waited
        self.reset()

    def reset(self) -> None:
        self.reset_pending = True
        self.reset_tick = 0  # the tick of the snapshot that carried the reset flag
        self.acked = 0
        self.cell_sent_at = np.zeros(self.ncells, dtype=np.int64)
        self.log: OrderedDict[int, tuple[np.ndarray, np.ndarray]] = OrderedDict()
        # The view model: the slots the client holds (ascending) and their kind|gen.
        self.view_slots = _EMPTY
        self.view_kg = np.zeros(0, dtype=np.uint16)
        # Removals sent and not yet acknowledged: slot, the tick first sent, gone or left.
        self.rm_slots = _EMPTY
        self.rm_tick = _EMPTY
        self.rm_gone = np.zeros(0, dtype=bool)

    def log_ticks(self) -> np.ndarray:
        return np.fromiter(self.log, dtype=np.int64, count=len(self.log))

    def ack(self, ack: int) -> None:
        """The client's newest ack (Seat.acked_tick). 0 after a nonzero ack is a reset."""
        if ack == 0:
            if self.acked:
                self.reset()
            return
        if ack <= self.acked:
            return
        newly = []  # the logged ticks in (acked, ack], newest first
        for t in reversed(self.log):
            if t <= self.acked:
                break
            if t <= ack:
                newly.append(t)
        for t in reversed(newly):  # oldest first, so a newer send wins
            self.cell_sent_at[self.log[t][0]] = t
        if len(self.rm_slots):
            keep = self.rm_tick > ack
            self.rm_slots, self.rm_tick = self.rm_slots[keep], self.rm_tick[keep]
            self.rm_gone = self.rm_gone[keep]
        self.acked = ack


class InterestRoom:
    """The chunked-snapshot side of a room with ``interest.enabled``."""

    def __init__(self, params: Params, capacity: int, history: SnapshotHistory) -> None:
        self.params = params
        self.grid = Grid.for_world(params.world_width, params.world_height,
                                   params.interest_cell)
        self.capacity = capacity
        self.history = history
        self.ring = history.size
        self.clients: dict[int, ClientChunks] = {}  # by seat row
        self.encodes = 0  # chunks encoded (the rest of the chunks sent were shared)
        self.chunks_sent = 0
        self.oldest_age_s = 0.0  # the oldest unsent in-interest entity's wait, last tick
        self.last_size = np.zeros(self.grid.cells, dtype=np.int64)  # bytes, for estimates
        self.indexes: dict[int, CellIndex] = {}  # the grid of each recent tick (baselines)

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

    def join(self, row: int) -> None:
        self.clients[row] = ClientChunks(self.grid, self.params, self.capacity)

    def reset(self, row: int) -> None:
        client = self.clients.get(row)
        if client is not None:
            client.reset()

    def leave(self, row: int) -> None:
        self.clients.pop(row, None)

    def skipped(self, row: int, tick: int) -> None:
        """The delivery did not send this client's snapshot of `tick`. Forgetting what
        it carried is enough: no chunk will name it as a baseline, the removals it held
        are still pending (they repeat until an ack covers a snapshot that carried them,
        and the next snapshot carries them), and the view model may only hold entities
        the client lacks, which costs at most a removal it ignores. A skipped reset is
        sent again."""
        client = self.clients.get(row)
        if client is None:
            return
        client.log.pop(tick, None)
        if tick == client.reset_tick:
            client.reset()

    def set_params(self, params: Params) -> None:
        """Live changes: only the budget is live."""
        self.params = params

    def deliveries(self, tick: int, state: np.ndarray, pos: np.ndarray, alive: np.ndarray,
                   rows: list[int], entities: list[int], acks: list[int],
                   hits: tuple[np.ndarray, np.ndarray]) -> list[ClientPart]:
        """Each connected seat's chunks and personal part for snapshot `tick`.

        `state` is the quantised world at `tick` (already pushed into the history);
        `pos`/`alive` the world's positions and live mask; `rows`, `entities` and `acks`
        the connected seats' rows, entity slots and newest acks; `hits` this tick's
        (shooter, target) slots.

        Three passes: each client chooses its cells and their baselines (sizes estimated
        from the cells' last encodings); every distinct (cell, baseline) is encoded in one
        batch; each client's personal part is built from what it was sent."""
        index = self.grid.assign(pos, alive)
        self.indexes[tick] = index
        for old in [t for t in self.indexes if t <= tick - self.ring]:
            del self.indexes[old]
        words = state.view("<u2").reshape(-1, 8)
        rate = self.params.tick_rate
        per_tick = self.params.interest_budget_kbps * 1024.0 / rate
        shooter, target = hits
        if len(target):
            by_entity = {e: r for r, e in zip(rows, entities, strict=True)}
            for s, t in zip(shooter.tolist(), target.tolist(), strict=True):
                row = by_entity.get(t)
                if row is not None and s >= 0 and row in self.clients:
                    self.clients[row].hitters[s] = tick
        counts = index.counts(np.arange(self.grid.cells))
        plans = []
        for row, entity, ack in zip(rows, entities, acks, strict=True):
            client = self.clients[row]
            client.allowance.per_tick = per_tick
            client.allowance.cap = 2.0 * per_tick
            plans.append(self._choose(client, tick, index, counts, words, pos, alive, entity,
                                      ack))
        frames, members, lookup = self._encode(plans, tick, index, words)
        out = []
        oldest = 0
        for row, plan in zip(rows, plans, strict=True):
            client = self.clients[row]
            out.append(self._finish(client, tick, plan, frames, members, lookup, words))
            oldest = max(oldest, client.oldest_wait)
        self.oldest_age_s = oldest / rate
        return out

    def _choose(self, client: ClientChunks, tick: int, index: CellIndex, counts: np.ndarray,
                words: np.ndarray, pos: np.ndarray, alive: np.ndarray, entity: int,
                ack: int) -> _Plan:
        """Pass 1 for one client: acks, interest cells, removals, and the cells to send."""
        client.ack(ack)
        reset = client.reset_pending
        if reset:
            client.reset()
            client.reset_pending = False
            client.reset_tick = tick
        if alive[entity]:
            client.centre = (float(pos[entity, 0]), float(pos[entity, 1]))
        cells = client.cells
        cells.update(client.centre)
        client.allowance.earn()
        kg = words[:, _W_KIND_GEN]

        # The interest set: live members of the interest cells, own entity, recent hitters.
        always = {entity} if alive[entity] else set()
        if client.hitters:
            horizon = tick - self.params.tick_rate
            for s, t in list(client.hitters.items()):
                if t <= horizon or not alive[s]:
                    del client.hitters[s]
                else:
                    always.add(s)
        always_arr = np.array(sorted(always), dtype=np.int64)

        # Removals: what the client's view holds that is not in the interest set now (an
        # entity whose cell is out, that died, or whose slot holds another entity).
        held = client.view_slots
        if len(held):
            cell_of = index.cell_of[held]
            stays = in_sorted(cell_of, cells.cells) | in_sorted(held, always_arr)
            same = kg[held] == client.view_kg
            stays &= same
            if not stays.all():
                leaving = held[~stays]
                client.rm_slots = np.concatenate([client.rm_slots, leaving])
                client.rm_tick = np.concatenate([client.rm_tick,
                                                 np.full(len(leaving), tick, dtype=np.int64)])
                client.rm_gone = np.concatenate([client.rm_gone, ~same[~stays]])
                client.view_slots = held[stays]
                client.view_kg = client.view_kg[stays]

        # Cells to send: near and overdue ones always, then by priority while the byte
        # allowance lasts (sizes estimated from each cell's last encoding).
        order, n_must = cells.plan(tick)
        cell_counts = counts[cells.cells]
        ids = cells.cells[order]
        est = np.where(self.last_size[ids] > 0, self.last_size[ids], 16 + 3 * cell_counts[order])
        est[cell_counts[order] == 0] = 0
        allowance = client.allowance
        if allowance.unlimited:
            take = len(order)
        else:
            # Musts go whatever the cost; then cells while tokens remain before each.
            spent = np.cumsum(est)
            before = spent - est
            ok = before < allowance.tokens
            ok[:n_must] = True
            stop = np.flatnonzero(~ok)
            take = int(stop[0]) if len(stop) else len(order)
            take = max(take, n_must)
            allowance.spend(int(spent[take - 1]) if take else 0)
        sent_idx = order[:take]
        cells.sent(tick, sent_idx)
        waiting = tick - cells.last_sent[cell_counts > 0]
        client.oldest_wait = int(waiting.max()) if len(waiting) else 0

        send = ids[:take][cell_counts[order[:take]] > 0]
        low = tick - self.ring
        base = client.cell_sent_at[send]
        usable = (base > low) & in_sorted(base, client.log_ticks())
        base = np.where(usable, base, 0)
        return _Plan(reset, always_arr, send, base)

    def _encode(self, plans: list[_Plan], tick: int, index: CellIndex, words: np.ndarray
                ) -> tuple[list[bytes], _Members, np.ndarray]:
        """Pass 2: every distinct (cell, baseline) the clients need, encoded in one batch.
        A delta chunk lists the cell's members at its baseline (the client has them) with
        an op each, then the members added since. Returns the serialized fragments, the
        chunks' rows, and the sorted (cell, baseline) keys that index them."""
        keys = [p.cells * _KEY + p.base for p in plans if len(p.cells)]
        if not keys:
            none = np.zeros(0, dtype=bool)
            return [], _Members(_EMPTY, none, none, np.zeros(1, np.int64)), _EMPTY
        uniq = np.unique(np.concatenate(keys))
        cells, bases = uniq // _KEY, uniq % _KEY
        k_n = len(cells)
        cur_parts = [index.members(c) for c in cells.tolist()]
        cur_n = np.array([len(m) for m in cur_parts], dtype=np.int64)
        cur = np.concatenate(cur_parts)
        cur_chunk = np.repeat(np.arange(k_n), cur_n)
        cur_base = bases[cur_chunk]
        prev_parts = []
        for c, b in zip(cells.tolist(), bases.tolist(), strict=True):
            prev_parts.append(self.indexes[b].members(c) if b else _EMPTY)
        prev_n = np.array([len(m) for m in prev_parts], dtype=np.int64)
        prev = np.concatenate(prev_parts) if prev_parts else _EMPTY
        prev_chunk = np.repeat(np.arange(k_n), prev_n)
        prev_in = index.cell_of[prev] == cells[prev_chunk]
        # A member now is added when it was not in the cell at the chunk's baseline.
        added = np.ones(len(cur), dtype=bool)
        for b in np.unique(bases[bases > 0]).tolist():
            at = np.flatnonzero(cur_base == b)
            added[at] = self.indexes[b].cell_of[cur[at]] != cells[cur_chunk[at]]
        add_n = np.bincount(cur_chunk[added], minlength=k_n)
        # Rows: each chunk's previous members, then its added ones.
        row_slots = np.concatenate([prev, cur[added]])
        row_chunk = np.concatenate([prev_chunk, cur_chunk[added]])
        row_added = np.concatenate([np.zeros(len(prev), dtype=bool),
                                    np.ones(int(added.sum()), dtype=bool)])
        order = np.lexsort((row_added, row_chunk))  # stable: slots stay ascending
        row_slots, row_chunk = row_slots[order], row_chunk[order]
        in_cell = np.concatenate([prev_in, np.ones(int(added.sum()), dtype=bool)])[order]
        now = words[row_slots]
        base_rows = np.zeros_like(now)
        row_base = bases[row_chunk]
        for b in np.unique(bases[bases > 0]).tolist():
            at = np.flatnonzero(row_base == b)
            old = self.history.get(b).view("<u2").reshape(-1, 8)
            base_rows[at] = old[row_slots[at]]
        kg = now[:, _W_KIND_GEN]
        same = (row_base > 0) & (kg == base_rows[:, _W_KIND_GEN]) & (kg & 0xFF != 0)
        elapsed = np.where(bases > 0, tick - bases, 0)
        batch = chunkcodec.encode_chunks(cells, elapsed, prev_n, add_n, row_slots, in_cell,
                                         same, now, base_rows,
                                         tick_rate=self.params.tick_rate,
                                         pos_scale=self.history.pos_scale)
        frames = [_fragment(c) for c in batch.chunks]
        self.last_size[cells] = [len(f) for f in frames]
        self.encodes += len(frames)
        return frames, _Members(row_slots, batch.skippable, batch.stays, batch.starts), uniq

    def _finish(self, client: ClientChunks, tick: int, plan: _Plan, frames: list[bytes],
                members: _Members, lookup: np.ndarray, words: np.ndarray) -> ClientPart:
        """Pass 3 for one client: what it will skip (sent whole in its personal part),
        its view model, the log of what this snapshot carried, and the personal part."""
        kg = words[:, _W_KIND_GEN]
        ks = np.searchsorted(lookup, plan.cells * _KEY + plan.base)
        mine = tuple(frames[k] for k in ks.tolist())
        # All members of this client's chunks at once, with each one's chunk baseline.
        first, lens = members.starts[ks], members.starts[ks + 1] - members.starts[ks]
        at = np.repeat(first - (np.cumsum(lens) - lens), lens) + np.arange(int(lens.sum()))
        stays = members.stays[at]
        slots, delta = members.slots[at][stays], members.delta[at][stays]
        lens = np.bincount(np.repeat(np.arange(len(ks)), lens)[stays], minlength=len(ks))
        skip = np.zeros(len(slots), dtype=bool)
        if delta.any():
            member_base = np.repeat(plan.base, lens)
            for b in np.unique(member_base[delta]).tolist():
                rows = np.flatnonzero((member_base == b) & delta)
                skip[rows] = ~in_sorted(slots[rows], client.log[b][1])
        from_chunks = np.sort(slots[~skip])
        spawns = slots[skip]
        always = plan.always
        extra = always[~in_sorted(always, from_chunks)]
        if len(extra):
            spawns = np.union1d(spawns, extra)
        elif len(spawns):
            spawns.sort()
        carried = np.union1d(from_chunks, spawns) if len(spawns) else from_chunks
        # Every slot still held has the world's kind|gen now (the removals took the rest).
        view = np.union1d(client.view_slots, carried)
        client.view_slots, client.view_kg = view, kg[view]
        if len(client.rm_slots):
            back = in_sorted(client.rm_slots, carried)  # came back: no removal to repeat
            if back.any():
                keep = ~back
                client.rm_slots, client.rm_tick = client.rm_slots[keep], client.rm_tick[keep]
                client.rm_gone = client.rm_gone[keep]
            order = np.argsort(client.rm_slots)
            slots, gone_flag = client.rm_slots[order], client.rm_gone[order]
            left, gone = slots[~gone_flag], slots[gone_flag]
        else:
            left = gone = _EMPTY
        personal = chunkcodec.encode_personal(reset=plan.reset, left=left, gone=gone,
                                              spawn_slots=spawns, spawn_words=words[spawns])
        # The budget covers the whole message: the chunks were charged (estimated) when
        # chosen; the personal part and the frame headers are charged now.
        client.allowance.spend(len(personal) + _FRAME_OVERHEAD)
        client.log[tick] = (plan.cells, carried)
        low = tick - self.ring
        while client.log and next(iter(client.log)) <= low:
            client.log.popitem(last=False)
        self.chunks_sent += len(mine)
        return ClientPart(mine, personal, plan.reset)


_FRAME_OVERHEAD = 40  # bytes: WebSocket header, the per-tick header and personal frames
_KEY = 1 << 32  # (cell, baseline tick) packed in one int64: cell * _KEY + tick


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
class _Plan:
    reset: bool
    always: np.ndarray  # own entity and recent hitters (live), ascending
    cells: np.ndarray  # non-empty cells to send
    base: np.ndarray  # their baselines (0 = keyframe chunk)


def _varint(n: int) -> bytes:
    out = bytearray()
    while n > 0x7F:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


def _fragment(chunk: bytes) -> bytes:
    """ServerFrame{snapshot{chunks: [chunk]}} serialized: field 2 (snapshot) holding field
    8 (chunks), both length-delimited."""
    inner = b"\x42" + _varint(len(chunk)) + chunk
    return b"\x12" + _varint(len(inner)) + inner
