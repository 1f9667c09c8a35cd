"""Which tick each seat's snapshot is encoded against: a few shared baselines per tick.

Theory of operation
-------------------
A delta is encoded once per distinct baseline per tick and shared by every seat that uses
that baseline (``codec.SnapshotHistory`` caches it). The client chooses its ack, so without
a bound N seats acking N different ticks force N encodes per tick: the cost of a tick would
depend on what the players claim, not on how many there are. The picker bounds it.

- A seat *holds* a tick it acknowledged (the client says it decoded that snapshot and keeps
  it while it is in the server's ring; proto/README.md, *Acks and baselines*). Holds are
  kept per seat in a small table, one column per ring position, each cell the tick number
  it was set for (so a cell left from an older lap of the ring never matches). A reset
  (join, resume, ack 0) forgets every hold of that seat.
- Each tick, when the connected seats' newest acks name at most ``max_deltas`` distinct
  ticks (the usual case: seats cluster by RTT), every seat gets its own ack as its
  baseline, exactly as if there were no bound.
- Otherwise the picker chooses ``max_deltas`` of those ticks greedily, each time the one
  that most reduces the seats' total baseline age (the age of a baseline is roughly what a
  delta costs in bytes; a keyframe costs more than any delta in the ring), ties going to
  the newer tick. Every seat then uses the newest chosen tick it holds, or a keyframe.

So a tick makes at most ``max_deltas`` delta encodes plus one keyframe, whatever the acks.
A seat whose ack was not chosen still decodes exactly: it gets a delta against an older
tick it acknowledged earlier, or a keyframe. The work is NumPy over seats × candidate
ticks (candidates are distinct acks inside the ring, so at most the ring size), and only
when the bound bites.
"""

from __future__ import annotations

import numpy as np

DEFAULT_MAX_DELTAS = 3


class BaselinePicker:
    """Per-seat holds and the per-tick choice of baselines. Seats are rows ``0..rows-1``
    (the room's seat rows); ``ring`` is the snapshot history's size in ticks."""

    def __init__(self, rows: int, ring: int, max_deltas: int = DEFAULT_MAX_DELTAS) -> None:
        if max_deltas < 1:
            raise ValueError("max_deltas must be at least 1")
        self.ring = ring
        self.max_deltas = max_deltas
        # held[row, t % ring] == t: that seat acknowledged tick t (and has not reset since)
        self._held = np.zeros((rows, ring), dtype=np.int64)
        self.snapped = 0  # seats given a baseline other than their own ack (the bound bit)

    def reset(self, row: int) -> None:
        """The seat's client has no usable snapshot any more (join, resume, ack 0)."""
        self._held[row] = 0

    def pick(self, tick: int, rows: np.ndarray, acks: np.ndarray) -> np.ndarray:
        """The baseline tick for each seat (0 = keyframe) of the snapshot of `tick`.

        `rows` are the connected seats' rows and `acks` their newest acknowledged ticks.
        Acks inside the ring (``tick - ring < ack < tick``) are recorded as held first.
        """
        usable = (acks > max(0, tick - self.ring)) & (acks < tick)
        held = self._held
        if usable.all():  # the usual tick: every seat acked a tick still in the ring
            held[rows, acks % self.ring] = acks
            baseline = acks
        else:
            held[rows[usable], acks[usable] % self.ring] = acks[usable]
            baseline = np.where(usable, acks, 0)
        if len(rows) <= self.max_deltas:  # no more distinct acks than seats
            return baseline
        if baseline.max() - baseline.min() < self.max_deltas:
            # The usual tick: the acks span fewer ticks than the bound (all equal, mostly),
            # so there are no more distinct ones than that either; no np.unique.
            return baseline
        candidates = np.unique(baseline[usable])
        if len(candidates) <= self.max_deltas:
            return baseline
        candidates = candidates[::-1]  # newest first: argmax breaks ties to the newer tick
        holds = held[rows][:, candidates % self.ring] == candidates  # (seats, candidates)
        keyframe_cost = self.ring + 1  # more than any delta's age
        cost = np.where(holds, tick - candidates, keyframe_cost)
        best = np.full(len(rows), keyframe_cost, dtype=cost.dtype)
        chosen: list[int] = []
        for _ in range(self.max_deltas):
            gain = np.maximum(best[:, None] - cost, 0).sum(axis=0)
            j = int(np.argmax(gain))
            if gain[j] <= 0:
                break
            chosen.append(j)
            best = np.minimum(best, cost[:, j])
        chosen.sort()  # candidates are newest first, so this orders the chosen newest first
        chosen_holds = holds[:, chosen]
        first = np.argmax(chosen_holds, axis=1)  # the newest chosen tick each seat holds
        picked = np.where(chosen_holds.any(axis=1), candidates[chosen][first], 0)
        self.snapped += int(np.count_nonzero(picked != baseline))
        return picked
