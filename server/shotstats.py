"""Counts of a room's hitscan shots: rewind depth histogram, clamped shares, hits.

The room adds each tick's shots (arrays, no per-shot Python work beyond the bucket count);
``/rooms`` shows ``summary()`` and the gateway moves what is new since its last look into
Prometheus with ``export`` (a histogram of rewind depth and counters of shots, clamps and
hits). Sans-I/O: nothing here reads a clock or touches a socket.
"""

from __future__ import annotations

from typing import Protocol

import numpy as np

__all__ = ["BUCKETS_MS", "ShotStats"]

# Upper bounds (ms) of the rewind depth histogram, as Prometheus `le` buckets; +Inf last.
BUCKETS_MS: tuple[float, ...] = (0.0, 25.0, 50.0, 100.0, 150.0, 200.0, 250.0, 300.0, 500.0,
                                 1000.0)


class _Histogram(Protocol):
    def observe(self, amount: float) -> None: ...


class _Counter(Protocol):
    def inc(self, amount: float = 1) -> None: ...


class ShotStats:
    """Totals since the room was created, plus what ``export`` has not moved yet."""

    def __init__(self) -> None:
        self.shots = 0
        self.hits = 0
        self.clamped = 0  # deeper than allowed, by either limit
        self.clamped_by_estimate = 0  # of which: the room's RTT-based limit was the tighter
        self.depth_sum_ms = 0.0
        self.buckets = np.zeros(len(BUCKETS_MS) + 1, dtype=np.int64)  # last: above the top
        self._unexported: list[np.ndarray] = []
        self._exported = (0, 0, 0)

    def add(self, rewind_ms: np.ndarray, clamped: np.ndarray, by_estimate: np.ndarray,
            hit: np.ndarray) -> None:
        """One tick's shots: rewind depth (ms), clamped, clamped by the room's own limit,
        hit (arrays of one row per shot)."""
        self.shots += int(rewind_ms.size)
        self.hits += int(np.count_nonzero(hit))
        self.clamped += int(np.count_nonzero(clamped))
        self.clamped_by_estimate += int(np.count_nonzero(by_estimate))
        self.depth_sum_ms += float(rewind_ms.sum())
        # Rounded to a microsecond: a depth at the cap (7.5 ticks = 250 ms) lands in the
        # cap's bucket despite the float division.
        idx = np.searchsorted(np.asarray(BUCKETS_MS), np.round(rewind_ms, 3), side="left")
        self.buckets += np.bincount(idx, minlength=self.buckets.size)
        self._unexported.append(np.asarray(rewind_ms, dtype=np.float64))
        if len(self._unexported) > 4096:  # nobody exports (tests, tools): stay bounded
            del self._unexported[:2048]

    def summary(self) -> dict[str, object]:
        """For /rooms: counts, shares and the depth histogram (cumulative, like `le`)."""
        n = self.shots
        cumulative = np.cumsum(self.buckets).tolist()
        labels = [f"{b:g}" for b in BUCKETS_MS] + ["+Inf"]
        return {
            "shots": n,
            "hits": self.hits,
            "clamped": self.clamped,
            "clamped_share": round(self.clamped / n, 4) if n else 0.0,
            "clamped_by_estimate": self.clamped_by_estimate,
            "rewind_mean_ms": round(self.depth_sum_ms / n, 2) if n else 0.0,
            "rewind_ms_le": dict(zip(labels, cumulative, strict=True)),
        }

    def export(self, depth: _Histogram, shots: _Counter, clamped: _Counter,
               hits: _Counter) -> None:
        """Move what is new since the last call into Prometheus metrics (``depth`` in
        seconds)."""
        for batch in self._unexported:
            for ms in np.round(batch, 3).tolist():
                depth.observe(ms / 1000.0)
        self._unexported.clear()
        now = (self.shots, self.clamped, self.hits)
        seen = self._exported
        if now != seen:
            shots.inc(now[0] - seen[0])
            clamped.inc(now[1] - seen[1])
            hits.inc(now[2] - seen[2])
            self._exported = now
