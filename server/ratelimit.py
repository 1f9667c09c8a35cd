"""Rate limiting for inbound client frames (sans-I/O: every call takes ``now``).

* :class:`TokenBucket` - classic token bucket. It holds up to ``burst`` tokens,
  refills at ``rate_per_s`` tokens per second of elapsed time and starts full. A frame
  costing ``cost`` tokens is accepted if that many are available. Over any interval of
  length T seconds it accepts at most ``burst + rate_per_s * T`` worth of cost.
* :class:`InboundBudget` - one connection's frame and byte allowance in integer counters
  (thousandths of a frame, bytes), refilled from the elapsed milliseconds once per read
  and spent per frame with two integer subtractions; see its docstring for how it tells
  a backlog (frames queued during a stall) from a flood.
* :class:`AbuseTracker` - turns "some frames were dropped" into "close the connection":
  a client that is rate-limited (or otherwise has frames dropped) *more than*
  ``max_drops`` times within any sliding ``window_s``-second window is abusing us, as
  opposed to an honest client that bursts once after a network hiccup.

Times are ``float`` seconds on a monotonic clock. A ``now`` earlier than a previous
call (caller bug or mixed clocks) is treated as "no time passed": it never mints tokens.
"""

from __future__ import annotations

import math
from collections import deque

__all__ = ["AbuseTracker", "InboundBudget", "TokenBucket"]


class TokenBucket:
    """Token bucket limiter.

    Args:
        rate_per_s: refill rate in tokens per second (≥ 0, finite).
        burst: capacity in tokens (> 0, finite); the bucket starts full.
        now: creation time in seconds.
    """

    def __init__(self, rate_per_s: float, burst: float, now: float) -> None:
        if not (math.isfinite(rate_per_s) and rate_per_s >= 0):
            raise ValueError(f"rate_per_s must be a finite number >= 0, got {rate_per_s!r}")
        if not (math.isfinite(burst) and burst > 0):
            raise ValueError(f"burst must be a finite number > 0, got {burst!r}")
        self.rate_per_s = float(rate_per_s)
        self.burst = float(burst)
        self._tokens = float(burst)
        self._updated = float(now)
        self.accepted = 0
        self.rejected = 0

    def _refill(self, now: float) -> None:
        elapsed = now - self._updated
        if elapsed > 0:  # also False for NaN: a bad `now` never mints tokens
            self._tokens = min(self.burst, self._tokens + elapsed * self.rate_per_s)
            self._updated = now

    def tokens(self, now: float) -> float:
        """Tokens available at ``now`` (seconds), without taking any."""
        self._refill(now)
        return self._tokens

    def take(self, now: float, cost: float = 1.0) -> bool:
        """Take ``cost`` tokens (≥ 0) at ``now`` (seconds) if available; True if accepted.

        A rejected take consumes nothing. A cost above ``burst`` can never be accepted.
        """
        if not (math.isfinite(cost) and cost >= 0):
            raise ValueError(f"cost must be a finite number >= 0, got {cost!r}")
        self._refill(now)
        if self._tokens >= cost:
            self._tokens -= cost
            self.accepted += 1
            return True
        self.rejected += 1
        return False


def _capped(credit: int, earned: int, burst: int, silence_cap: int) -> int:
    """credit + earned, capped at the burst or at what the silence earned, whichever is
    more; credit already above both (an unspent backlog) is kept, never cut."""
    total = credit + earned
    if total <= burst:
        return total
    cap = silence_cap if silence_cap > burst else burst
    if total > cap:
        total = cap
    return total if total > credit else credit


class InboundBudget:
    """Frames and bytes a connection may send: integer credit refilled per millisecond.

    Credit is kept in thousandths of a frame (``frames``) and in bytes (``bytes_``).
    `refill(now)` runs once per socket read; `spend(wire_bytes)` once per wire frame.
    Normally credit is capped at the burst (``frame_burst``, ``byte_burst``).

    Backlog versus flood: after a silence (no read from this peer) of ``g`` seconds, the
    cap for that refill is raised to what ``g`` seconds earn, up to ``backlog_s``. A client
    stalled by the network, or a server paused by GC, VM steal or SIGSTOP, delivers in one
    read what it sent during the silence, at most the honest rate times ``g``: that fits.
    A flood is never silent, so it always meets the ordinary burst cap; and over any
    interval a client still gets at most ``burst + rate * T`` (plus one backlog allowance
    after a silence it really kept).
    """

    __slots__ = ("_ms", "backlog_ms", "byte_burst", "bytes_", "bytes_per_ms_x1000",
                 "frame_burst", "frames", "frames_per_ms_x1000")

    def __init__(self, frames_per_s: float, frame_burst: float, bytes_per_s: float,
                 byte_burst: float, backlog_s: float, now: float) -> None:
        for name, value in (("frames_per_s", frames_per_s), ("frame_burst", frame_burst),
                            ("bytes_per_s", bytes_per_s), ("byte_burst", byte_burst),
                            ("backlog_s", backlog_s)):
            if not (math.isfinite(value) and value >= 0):
                raise ValueError(f"{name} must be a finite number >= 0, got {value!r}")
        # Per millisecond, in thousandths (frames) and thousandths of a byte: integers.
        self.frames_per_ms_x1000 = round(frames_per_s)  # 1/1000 frame per ms
        self.bytes_per_ms_x1000 = round(bytes_per_s)
        self.frame_burst = round(frame_burst * 1000)
        self.byte_burst = round(byte_burst * 1000)
        self.backlog_ms = round(backlog_s * 1000)
        self.frames = self.frame_burst
        self.bytes_ = self.byte_burst
        self._ms = int(now * 1000)

    def refill(self, now: float) -> None:
        """Earn credit for the milliseconds since the last refill (once per read)."""
        ms = int(now * 1000)
        elapsed = ms - self._ms
        if elapsed <= 0:  # also for a clock read twice in one ms: nothing earned
            return
        self._ms = ms
        silence = elapsed if elapsed < self.backlog_ms else self.backlog_ms
        self.frames = _capped(self.frames, elapsed * self.frames_per_ms_x1000,
                              self.frame_burst, silence * self.frames_per_ms_x1000)
        self.bytes_ = _capped(self.bytes_, elapsed * self.bytes_per_ms_x1000,
                              self.byte_burst, silence * self.bytes_per_ms_x1000)

    def charge_read(self, now: float, wire_bytes: int) -> bool:
        """`refill(now)` then `spend(wire_bytes)`: a read that is exactly one frame (the
        receive path's short path, once per input), in one call with `_capped` inlined;
        a hypothesis test holds it equal to the two calls."""
        ms = int(now * 1000)
        elapsed = ms - self._ms
        frames, bytes_ = self.frames, self.bytes_
        if elapsed > 0:
            self._ms = ms
            silence = elapsed if elapsed < self.backlog_ms else self.backlog_ms
            rate = self.frames_per_ms_x1000
            total, burst = frames + elapsed * rate, self.frame_burst
            if total > burst:
                cap = silence * rate
                if cap < burst:
                    cap = burst
                if total > cap:
                    total = cap
                if total < frames:
                    total = frames
            frames = total
            rate = self.bytes_per_ms_x1000
            total, burst = bytes_ + elapsed * rate, self.byte_burst
            if total > burst:
                cap = silence * rate
                if cap < burst:
                    cap = burst
                if total > cap:
                    total = cap
                if total < bytes_:
                    total = bytes_
            bytes_ = total
        cost_b = wire_bytes * 1000
        if frames >= 1000 and bytes_ >= cost_b:
            self.frames, self.bytes_ = frames - 1000, bytes_ - cost_b
            return True
        self.frames, self.bytes_ = frames, bytes_
        return False

    def spend(self, wire_bytes: int) -> bool:
        """Charge one frame of ``wire_bytes``; False (nothing charged) when over budget."""
        cost_b = wire_bytes * 1000
        if self.frames >= 1000 and self.bytes_ >= cost_b:
            self.frames -= 1000
            self.bytes_ -= cost_b
            return True
        return False


class AbuseTracker:
    """Sliding-window drop counter: close a client dropped > ``max_drops`` times in ``window_s``.

    Memory is bounded: only the last ``max_drops + 1`` drop times are kept. Once it has
    tripped it stays tripped (``tripped``), so the caller may close at leisure.

    Args:
        max_drops: drops tolerated within one window (≥ 0).
        window_s: window length in seconds (> 0).
    """

    def __init__(self, max_drops: int, window_s: float) -> None:
        if max_drops < 0:
            raise ValueError(f"max_drops must be >= 0, got {max_drops}")
        if not (math.isfinite(window_s) and window_s > 0):
            raise ValueError(f"window_s must be > 0 seconds, got {window_s!r}")
        self.max_drops = max_drops
        self.window_s = float(window_s)
        self.drops = 0
        self.tripped = False
        self._times: deque[float] = deque(maxlen=max_drops + 1)

    def record_drop(self, now: float) -> bool:
        """Record one dropped frame at ``now`` (seconds); True if the client should be closed.

        A drop counts within the window if it happened in ``(now - window_s, now]``.
        """
        self.drops += 1
        self._times.append(now)
        while self._times and self._times[0] <= now - self.window_s:
            self._times.popleft()
        if len(self._times) > self.max_drops:
            self.tripped = True
        return self.tripped
