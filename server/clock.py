"""Clocks: the one interface through which the server learns the time.

Everything in ``server/`` except the real clock and the tick driver takes ``now``
as an argument. Whoever owns the loop reads a :class:`Clock` once and passes the
value down; tests use :class:`ManualClock` and never sleep.

All times are ``float`` seconds on a monotonic scale with an arbitrary origin:
they are only meaningful as differences and must never be compared with wall time.
"""

from __future__ import annotations

import math
import time
from typing import Protocol, runtime_checkable

__all__ = ["Clock", "ManualClock", "MonotonicClock", "WallClock"]


@runtime_checkable
class Clock(Protocol):
    """A source of monotonic time in seconds (never goes backwards)."""

    def now(self) -> float:
        """Current time in seconds on a monotonic scale with an arbitrary origin."""
        ...


class MonotonicClock:
    """The real clock: :func:`time.monotonic` (unaffected by wall-clock changes)."""

    # The C function itself, not a method wrapping it: no Python frame on the hot paths
    # that read the clock (every socket read). Called as ``clock.now()`` like the others.
    now = staticmethod(time.monotonic)


class WallClock:
    """Seconds since the Unix epoch (:func:`time.time`), for the one thing that must be
    comparable across processes and machines: the expiry written into a join token.
    Never used to time anything (it can jump)."""

    def now(self) -> float:
        """Current wall-clock time in seconds since the epoch."""
        return time.time()


class ManualClock:
    """A clock that only moves when told to; for tests and offline runners.

    It refuses to go backwards so that it obeys the same contract as
    :class:`MonotonicClock` (code under test may rely on that).
    """

    def __init__(self, start: float = 0.0) -> None:
        if not math.isfinite(start):
            raise ValueError(f"ManualClock start must be finite, got {start!r}")
        self._now = float(start)

    def now(self) -> float:
        """Current manual time in seconds."""
        return self._now

    def advance(self, seconds: float) -> float:
        """Move forward by ``seconds`` (≥ 0, finite) and return the new time."""
        if not math.isfinite(seconds) or seconds < 0:
            raise ValueError(
                f"ManualClock can only advance by a finite amount >= 0, got {seconds!r}"
            )
        self._now += seconds
        return self._now

    def set(self, t: float) -> None:
        """Jump to absolute time ``t`` seconds (must be ≥ the current time, finite).

        Setting is exact, unlike ``advance(t - now())`` which may round by one ulp;
        tests that need to land exactly on a deadline use this.
        """
        if not math.isfinite(t) or t < self._now:
            raise ValueError(
                f"ManualClock cannot go backwards or to a non-finite time: "
                f"now={self._now!r}, requested {t!r}"
            )
        self._now = float(t)
