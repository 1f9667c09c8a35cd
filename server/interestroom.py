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
  applied);
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
from sim.interest import Allowance, CellIndex, ClientCells, Grid
from sim.params import Params

_W_KIND_GEN = 6
_EMPTY = np.zeros(0, dtype=np.int64)


@dataclass(slots=True)
class _Chunk:
    frame: bytes  # the serialized ServerFrame fragment
    slots: np.ndarray  # members, ascending
    delta: np.ndarray  # member is op 0/1 (the client needs its slot in the baseline)


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
                                 params.tick_rate)
        self.allowance = Allowance(0.0)
        self.capacity = capacity
        self.ncells = grid.cells
        self.centre = (0.0, 0.0)
        self.hitters: dict[int, int] = {}  # slot -> the last tick it hit this client
        self.oldest_wait = 0  # ticks the longest-waiting interest cell has waited
        self.reset()

    def reset(self) -> None:
        self.reset_pending = True
        self.acked = 0
        self.cell_sent_at = np.zeros(self.ncells, dtype=np.int64)
        self.log: OrderedDict[int, tuple[np.ndarray, np.ndarray]] = OrderedDict()
        self.view_kg = np.zeros(self.capacity, dtype=np.uint16)
        self.rm_tick = np.zeros(self.capacity, dtype=np.int64)
        self.rm_gone = np.zeros(self.capacity, dtype=bool)
        self.rm_any = False

    def ack(self, ack: int) -> None:
        """The client's newest ack (Seat.acked_tick). 0 after a nonzero ack is a reset."""
        if ack == 0:
            if self.acked:
                self.reset()
            return
        if ack <= self.acked:
            return
        for t, (cells, _carried) in self.log.items():
            if self.acked < t <= ack:
                self.cell_sent_at[cells] = t
        if self.rm_any:
            done = (self.rm_tick > 0) & (self.rm_tick <= ack)
            self.rm_tick[done] = 0
            self.rm_any = bool(self.rm_tick.any())
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

    def info(self) -> pb.InterestInfo:
        p = self.params
        return pb.InterestInfo(cell=p.interest_cell, columns=self.grid.columns,
                               rows=self.grid.rows, radius=p.interest_radius,
                               margin=p.interest_margin,
                               budget_bytes_per_s=p.interest_budget_kbps * 1024.0)

    def join(self, row: int) -> None:
        self.clients[row] = ClientChunks(self.grid, self.params, self.capacity)

    def reset(self, row: int) -> None:
        client = self.clients.get(row)
        if client is not None:
            client.reset()

    def leave(self, row: int) -> None:
        self.clients.pop(row, None)

    def skipped(self, row: int) -> None:
        """The delivery did not send this client's snapshot: its view is not what we
        logged, so start it over (the next snapshot resets it)."""
        self.reset(row)

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
        (shooter, target) slots."""
        index = self.grid.assign(pos, alive)
        words = state.view("<u2").reshape(-1, 8)
        kg = words[:, _W_KIND_GEN]
        cache: dict[tuple[int, int], _Chunk] = {}
        rate = self.params.tick_rate
        per_tick = self.params.interest_budget_kbps * 1024.0 / rate
        shooter, target = hits
        if len(target):
            by_entity = {e: r for r, e in zip(rows, entities, strict=True)}
            for s, t in zip(shooter.tolist(), target.tolist(), strict=True):
                row = by_entity.get(t)
                if row is not None and s >= 0 and row in self.clients:
                    self.clients[row].hitters[s] = tick
        out = []
        oldest = 0
        for row, entity, ack in zip(rows, entities, acks, strict=True):
            client = self.clients[row]
            client.allowance.per_tick = per_tick
            client.allowance.cap = 2.0 * per_tick
            part = self._client_tick(client, tick, index, words, kg, pos, alive, entity,
                                     ack, cache)
            oldest = max(oldest, client.oldest_wait)
            out.append(part)
        self.oldest_age_s = oldest / rate
        return out

    def _chunk(self, cache: dict[tuple[int, int], _Chunk], cell: int, base: int, tick: int,
               index: CellIndex, words: np.ndarray) -> _Chunk:
        entry = cache.get((cell, base))
        if entry is not None:
            return entry
        slots = index.members(cell)
        cur = words[slots]
        if base:
            old = self.history.get(base).view("<u2").reshape(-1, 8)[slots]
            kg = cur[:, _W_KIND_GEN]
            delta = old[:, _W_KIND_GEN] == kg
        else:
            old = None
            delta = np.zeros(len(slots), dtype=bool)
        chunk = chunkcodec.encode_chunk(cell, slots, cur, old,
                                        elapsed_ticks=tick - base if base else 0,
                                        tick_rate=self.params.tick_rate,
                                        pos_scale=self.history.pos_scale)
        frame = pb.ServerFrame(snapshot=pb.Snapshot(chunks=[chunk])).SerializeToString()
        entry = _Chunk(frame, slots, delta)
        cache[(cell, base)] = entry
        self.encodes += 1
        return entry

    def _client_tick(self, client: ClientChunks, tick: int, index: CellIndex,
                     words: np.ndarray, kg: np.ndarray, pos: np.ndarray, alive: np.ndarray,
                     entity: int, ack: int, cache: dict[tuple[int, int], _Chunk]
                     ) -> ClientPart:
        client.ack(ack)
        reset = client.reset_pending
        if reset:
            client.reset()
            client.reset_pending = False
        if alive[entity]:
            client.centre = (float(pos[entity, 0]), float(pos[entity, 1]))
        cells = client.cells
        cells.update(client.centre)
        client.allowance.earn()

        # The interest set: members of the interest cells, own entity, recent hitters.
        in_set = np.zeros(self.capacity, dtype=bool)
        starts = index.starts
        for c in cells.cells.tolist():
            in_set[index.order[starts[c] : starts[c + 1]]] = True
        always = [entity] if alive[entity] else []
        horizon = tick - self.params.tick_rate
        for s, t in list(client.hitters.items()):
            if t <= horizon or not alive[s]:
                del client.hitters[s]
            else:
                always.append(s)
        always_arr = np.unique(np.array(always, dtype=np.int64))
        in_set[always_arr] = True

        # Removals: what the client's view holds that is not in the interest set now.
        held = client.view_kg != 0
        leaving = held & ~(in_set & (kg == client.view_kg))
        if leaving.any():
            gone = leaving & (kg != client.view_kg)
            client.rm_tick[leaving] = tick
            client.rm_gone[leaving] = gone[leaving]
            client.view_kg[leaving] = 0
            client.rm_any = True

        # Cells to send: near and overdue ones always, then by priority while the byte
        # allowance lasts.
        order, n_must = cells.plan(tick)
        allowance = client.allowance
        counts = index.counts(cells.cells)
        sent: list[int] = []
        frames: list[bytes] = []
        carried_parts: list[np.ndarray] = []
        skipped_parts: list[np.ndarray] = []
        sent_cells: list[int] = []
        low = tick - self.ring
        for k, i in enumerate(order.tolist()):
            if k >= n_must and not allowance.left:
                break
            sent.append(i)
            if counts[i] == 0:
                continue
            cell = int(cells.cells[i])
            base = int(client.cell_sent_at[cell])
            logged = client.log.get(base) if base > low else None
            if logged is None or self.history.get(base) is None:
                base = 0
            entry = self._chunk(cache, cell, base, tick, index, words)
            frames.append(entry.frame)
            allowance.spend(len(entry.frame))
            sent_cells.append(cell)
            if base:
                had = logged[1]
                pos_in = np.searchsorted(had, entry.slots)
                pos_in = np.minimum(pos_in, max(len(had) - 1, 0))
                found = had[pos_in] == entry.slots if len(had) else np.zeros(
                    len(entry.slots), dtype=bool)
                skip = entry.delta & ~found
                if skip.any():
                    skipped_parts.append(entry.slots[skip])
                    carried_parts.append(entry.slots[~skip])
                    continue
            carried_parts.append(entry.slots)
        sent_idx = np.array(sent, dtype=np.int64)
        cells.sent(tick, sent_idx)
        waiting = tick - cells.last_sent[counts > 0]
        client.oldest_wait = int(waiting.max()) if len(waiting) else 0

        from_chunks = np.concatenate(carried_parts) if carried_parts else _EMPTY
        spawns = np.concatenate(skipped_parts) if skipped_parts else _EMPTY
        extra = always_arr[~np.isin(always_arr, from_chunks)]
        spawns = np.union1d(spawns, extra)
        carried = np.union1d(from_chunks, spawns)
        client.view_kg[carried] = kg[carried]
        if client.rm_any:
            client.rm_tick[carried] = 0
            pending = client.rm_tick > 0
            left = np.flatnonzero(pending & ~client.rm_gone)
            gone = np.flatnonzero(pending & client.rm_gone)
            client.rm_any = bool(len(left) or len(gone))
        else:
            left = gone = _EMPTY
        personal = chunkcodec.encode_personal(reset=reset, left=left, gone=gone,
                                              spawn_slots=spawns, spawn_words=words[spawns])
        client.log[tick] = (np.array(sent_cells, dtype=np.int64), carried)
        while client.log and next(iter(client.log)) <= low:
            client.log.popitem(last=False)
        self.chunks_sent += len(frames)
        return ClientPart(tuple(frames), personal, reset)
