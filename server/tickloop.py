"""Fixed-rate tick schedule with absolute deadlines, and the one async driver.

Theory of operation
-------------------
The schedule divides time into *slots*. Slot ``k`` is due at the absolute deadline

    deadline(k) = anchor_start + (k - anchor_tick) / rate_hz

computed from ``k`` every time, never by adding ``period`` to the previous deadline,
so rounding never accumulates: after a million ticks the deadline is still exact to
one ulp. ``set_rate`` moves the anchor to the next deadline (``anchor_tick`` = the next
slot, ``anchor_start`` = its deadline) so slot numbering stays contiguous across rate
changes.

The driver wakes up, reads the clock once and asks :meth:`TickSchedule.due` what to do.
``due`` is pure bookkeeping (sans-I/O): it looks at how many slots have a deadline
``<= now`` and answers with a :class:`TickPlan`:

* none due -> ``run=0``: sleep until ``next_deadline``;
* 1..max_catch_up due -> run them all back to back (catch-up after a late wake or a
  slow tick);
* more than ``max_catch_up`` due -> we are hopelessly behind (GC pause, suspended VM,
  a tick that took a second). Running every missed tick would only make the next ones
  late too, so the *oldest* slots are dropped (``skipped``), the newest
  ``max_catch_up`` are run, and the schedule ends up with ``next_deadline`` in the
  future. Skipping is counted and reported, never silent.

``due`` consumes the slots it returns: after the call ``next_tick``/``next_deadline``
already point past them. Slots are not simulation steps: the room keeps its own tick
counter, which advances once per *run* tick (``ticks_run``), so skipped slots slow the
game down instead of teleporting it.

Measurements:

* jitter - ``now - deadline`` of the first slot run at a wake-up (how late the loop
  woke up; ≥ 0). One jitter sample per wake-up that runs ticks; catch-up ticks in the
  same batch are not sampled again (their lateness is the previous tick's duration).
* duration - ``finished - started`` of each tick, fed by the driver through
  :meth:`TickSchedule.record`; a tick longer than one period is an *overrun*.

:func:`run_ticks` is the only place in the server that turns a deadline into a sleep.
"""

from __future__ import annotations

import asyncio
import logging
import math
from collections import deque
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass

from server.clock import Clock

__all__ = [
    "MAX_RATE_HZ",
    "MIN_RATE_HZ",
    "TickPlan",
    "TickSchedule",
    "run_ticks",
]

log = logging.getLogger(__name__)

MIN_RATE_HZ = 10
MAX_RATE_HZ = 128
#: Minimum seconds between two "fell behind" warnings.
SKIP_LOG_INTERVAL_S = 10.0


@dataclass(frozen=True, slots=True)
class TickPlan:
    """What the driver should do after one wake-up.

    Attributes:
        run: ticks to run now, back to back (0..max_catch_up).
        skipped: slots dropped because the loop fell more than ``max_catch_up`` behind.
        jitter_s: seconds between the deadline of the first tick to run and ``now``
            (≥ 0). 0.0 when ``run == 0``.
        first_tick: slot index of the first tick to run (after any skipped slots).
        next_deadline: absolute deadline in seconds of the next slot not covered by
            this plan; always ``> now`` after a plan with ``run > 0``.
    """

    run: int
    skipped: int
    jitter_s: float
    first_tick: int
    next_deadline: float


def _validate_rate(rate_hz: int) -> int:
    # bool is an int subclass; "True Hz" is always a bug.
    if isinstance(rate_hz, bool) or not isinstance(rate_hz, int):
        raise TypeError(f"tick rate must be an int in Hz, got {rate_hz!r}")
    if not MIN_RATE_HZ <= rate_hz <= MAX_RATE_HZ:
        raise ValueError(f"tick rate {rate_hz} Hz out of range [{MIN_RATE_HZ}, {MAX_RATE_HZ}] Hz")
    return rate_hz


def _percentile(sorted_values: list[float], p: float) -> float:
    """Nearest-rank percentile (returns an observed value); 0.0 for an empty list."""
    if not sorted_values:
        return 0.0
    rank = max(1, math.ceil(p / 100.0 * len(sorted_values)))
    return sorted_values[rank - 1]


def _summary(values: Iterable[float]) -> tuple[float, float, float]:
    ordered = sorted(values)
    if not ordered:
        return 0.0, 0.0, 0.0
    return _percentile(ordered, 50), _percentile(ordered, 99), ordered[-1]


class TickSchedule:
    """Absolute-deadline schedule for a fixed-rate loop; never reads the clock.

    Args:
        rate_hz: ticks per second, an int in [10, 128].
        start: absolute time in seconds of slot 0's deadline.
        max_catch_up: most ticks run back to back at one wake-up (≥ 1).
        window: number of recent ticks kept for the rolling stats (≥ 1).

    Counters (monotonic, owned by the schedule): ``ticks_run`` (ticks recorded),
    ``ticks_skipped`` (slots dropped), ``overruns`` (ticks longer than one period),
    ``tick_errors`` (ticks that raised; incremented by :func:`run_ticks`).
    """

    def __init__(
        self, rate_hz: int, start: float, max_catch_up: int = 3, window: int = 256
    ) -> None:
        self.rate_hz: int = _validate_rate(rate_hz)
        if not math.isfinite(start):
            raise ValueError(f"schedule start must be finite, got {start!r}")
        if max_catch_up < 1:
            raise ValueError(f"max_catch_up must be >= 1, got {max_catch_up}")
        if window < 1:
            raise ValueError(f"stats window must be >= 1, got {window}")
        self.max_catch_up: int = max_catch_up
        # Deadlines are computed from (anchor_tick, anchor_start); see module docstring.
        self._anchor_tick: int = 0
        self._anchor_start: float = float(start)
        self.next_tick: int = 0

        self.ticks_run: int = 0
        self.ticks_skipped: int = 0
        self.overruns: int = 0
        self.tick_errors: int = 0
        self.last_duration_s: float = 0.0
        self.last_jitter_s: float = 0.0
        self._durations: deque[float] = deque(maxlen=window)
        self._jitters: deque[float] = deque(maxlen=window)
        self._last_skip_log: float = -math.inf

    @property
    def period_s(self) -> float:
        """Nominal tick period in seconds (1 / rate_hz)."""
        return 1.0 / self.rate_hz

    def deadline(self, tick: int) -> float:
        """Absolute deadline in seconds of slot ``tick`` (any slot since the last re-anchor)."""
        return self._anchor_start + (tick - self._anchor_tick) / self.rate_hz

    @property
    def next_deadline(self) -> float:
        """Absolute deadline in seconds of slot ``next_tick``."""
        return self.deadline(self.next_tick)

    def _last_due(self, now: float) -> int:
        """Highest slot index whose deadline is <= now (may be next_tick - 1: none due)."""
        elapsed = now - self._anchor_start
        guess = self._anchor_tick + math.floor(elapsed * self.rate_hz)
        guess = max(guess, self.next_tick - 1)
        # The float estimate can be off by one at exact boundaries; settle it against
        # deadline() itself so "due" and "next_deadline" can never disagree.
        while self.deadline(guess + 1) <= now:
            guess += 1
        while guess >= self.next_tick and self.deadline(guess) > now:
            guess -= 1
        return guess

    def due(self, now: float) -> TickPlan:
        """Consume the slots due at ``now`` (seconds) and say how many ticks to run.

        See the module docstring for the catch-up/skip policy.
        """
        if not math.isfinite(now):
            raise ValueError(f"now must be finite, got {now!r}")
        n_due = self._last_due(now) - self.next_tick + 1
        if n_due <= 0:
            return TickPlan(0, 0, 0.0, self.next_tick, self.next_deadline)
        skipped = max(0, n_due - self.max_catch_up)
        run = n_due - skipped
        first = self.next_tick + skipped
        jitter = max(0.0, now - self.deadline(first))
        self.next_tick = first + run
        self.ticks_skipped += skipped
        self.last_jitter_s = jitter
        self._jitters.append(jitter)
        # Warn at most every SKIP_LOG_INTERVAL_S: an overloaded server skips at every
        # wake-up and must not also drown its log. The counter has the exact total.
        if skipped and now - self._last_skip_log >= SKIP_LOG_INTERVAL_S:
            self._last_skip_log = now
            log.warning(
                "tick loop fell behind: skipped %d tick(s) now, %d in total; running %d",
                skipped,
                self.ticks_skipped,
                run,
            )
        return TickPlan(run, skipped, jitter, first, self.next_deadline)

    def record(self, started: float, finished: float) -> None:
        """Record one tick that ran from ``started`` to ``finished`` (seconds)."""
        duration = max(0.0, finished - started)
        self.ticks_run += 1
        self.last_duration_s = duration
        self._durations.append(duration)
        if duration > self.period_s:
            self.overruns += 1

    def set_rate(self, rate_hz: int, now: float) -> None:
        """Change the rate; the new period starts at the current ``next_deadline``.

        The slot already being waited for keeps its deadline (the driver may be
        sleeping towards it); later slots follow the new period. If the loop is behind
        at ``now`` (seconds) the backlog is handled by the next :meth:`due` as usual,
        so nothing is dropped silently. Raises ``ValueError`` outside 10..128 Hz.
        """
        rate_hz = _validate_rate(rate_hz)
        self._anchor_start = self.next_deadline
        self._anchor_tick = self.next_tick
        self.rate_hz = rate_hz
        log.info(
            "tick rate set to %d Hz from slot %d (at t=%.6f s, requested at %.6f s)",
            rate_hz,
            self.next_tick,
            self._anchor_start,
            now,
        )

    def stats(self) -> dict[str, float]:
        """Counters plus p50/p99/max of duration and jitter (seconds) over the window.

        Percentiles are nearest-rank over the last ``window`` samples; 0.0 before any.
        """
        d50, d99, dmax = _summary(self._durations)
        j50, j99, jmax = _summary(self._jitters)
        return {
            "rate_hz": self.rate_hz,
            "period_s": self.period_s,
            "ticks_run": self.ticks_run,
            "ticks_skipped": self.ticks_skipped,
            "overruns": self.overruns,
            "tick_errors": self.tick_errors,
            "last_duration_s": self.last_duration_s,
            "last_jitter_s": self.last_jitter_s,
            "duration_p50_s": d50,
            "duration_p99_s": d99,
            "duration_max_s": dmax,
            "jitter_p50_s": j50,
            "jitter_p99_s": j99,
            "jitter_max_s": jmax,
        }


async def run_ticks(
    schedule: TickSchedule,
    clock: Clock,
    tick: Callable[[float], None],
    stop: asyncio.Event,
    on_plan: Callable[[TickPlan], None] | None = None,
    sleep: Callable[[float], Awaitable[None]] | None = None,
    on_recorded: Callable[[], None] | None = None,
) -> None:
    """Drive ``schedule`` until ``stop`` is set: the only deadline-to-sleep conversion.

    Each wake-up reads ``clock`` once, asks ``schedule.due`` for a plan, calls
    ``on_plan(plan)`` if the plan runs or skips anything, then calls ``tick(t)``
    ``plan.run`` times, where ``t`` is the clock reading (seconds) when that tick
    starts. Every tick's duration is recorded, even when it raises.

    A tick that raises ``Exception`` does not stop the loop (one bad tick must not stop
    the world): it is counted in ``schedule.tick_errors`` and logged with traceback
    the first time each exception type is seen (later ones of the same type are only
    counted, so a tick that fails 60 times a second cannot flood the log).
    ``BaseException`` (cancellation, KeyboardInterrupt) propagates.

    Args:
        on_recorded: called after each tick's duration is recorded in ``schedule`` (the
            schedule's counters are the only tick counters; the caller exports them).
        sleep: ``await sleep(seconds)`` waits up to that long; it may return early when
            ``stop`` is set. Default: wait on ``stop`` with a timeout. Tests inject a
            fake that advances a ManualClock instead of waiting.
    """

    stopped: asyncio.Task | None = None  # one task waiting on `stop`, for the whole run
    waiter: asyncio.Future | None = None  # the sleep in progress, if any
    loop = asyncio.get_running_loop()

    def wake(*_: object) -> None:
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    async def wait_for_stop(seconds: float) -> None:
        # The timer is the normal way out: it means the deadline has arrived; `stop` ends the
        # sleep early through the one task that waits on it for the whole run. A plain
        # future and one timer per sleep: asyncio.wait would build sets, a waiter and done
        # callbacks each tick (or wait_for a task per sleep: several event-loop rounds).
        # The timeout is rounded up to whole milliseconds: uvloop's timers count whole
        # milliseconds and round a shorter wait down to zero, so a wake-up a fraction of a
        # millisecond before the deadline would spin through the event loop until it passed
        # (about 0.2 ms of CPU per tick). A tick starts at most about 1 ms late instead.
        nonlocal stopped, waiter
        if stopped is None:
            stopped = asyncio.ensure_future(stop.wait())
            stopped.add_done_callback(wake)
        if stopped.done():
            return
        waiter = loop.create_future()
        timer = loop.call_later(math.ceil(seconds * 1000.0) / 1000.0, wake)
        try:
            await waiter
        finally:
            timer.cancel()
            waiter = None

    do_sleep = sleep if sleep is not None else wait_for_stop
    reported: set[type[BaseException]] = set()
    try:
        while not stop.is_set():
            plan = schedule.due(clock.now())
            if on_plan is not None and (plan.run or plan.skipped):
                on_plan(plan)
            if plan.run == 0:
                await do_sleep(max(0.0, schedule.next_deadline - clock.now()))
                continue
            for _ in range(plan.run):
                if stop.is_set():
                    break  # a stopped room must not finish its catch-up batch
                started = clock.now()
                try:
                    tick(started)
                except Exception as exc:
                    schedule.tick_errors += 1
                    if type(exc) not in reported:
                        reported.add(type(exc))
                        log.exception(
                            "tick raised %s; the loop continues (further %s errors are "
                            "counted in tick_errors, not logged)",
                            type(exc).__name__,
                            type(exc).__name__,
                        )
                finally:
                    schedule.record(started, clock.now())
                if on_recorded is not None:
                    on_recorded()
            # Yield after a batch that leaves the next tick already due: if every tick
            # overruns, due() never returns run == 0, and without this the loop would starve
            # I/O and never see `stop`. Otherwise the sleep until the next deadline yields.
            if clock.now() >= schedule.next_deadline:
                await asyncio.sleep(0)
    finally:
        if stopped is not None and not stopped.done():
            stopped.cancel()
