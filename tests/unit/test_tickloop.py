"""TickSchedule and run_ticks on a ManualClock: no sleeps, no wall clock."""

from __future__ import annotations

import asyncio
import logging
from fractions import Fraction

import pytest

from server.clock import ManualClock
from server.tickloop import TickPlan, TickSchedule, run_ticks


def test_schedule_starts_with_tick_zero_due_at_start() -> None:
    s = TickSchedule(rate_hz=30, start=100.0)
    assert s.next_tick == 0
    assert s.next_deadline == 100.0
    assert s.period_s == 1 / 30
    assert s.rate_hz == 30


def test_schedule_before_deadline_runs_nothing_and_consumes_nothing() -> None:
    s = TickSchedule(rate_hz=30, start=100.0)
    plan = s.due(99.9)
    assert (plan.run, plan.skipped, plan.jitter_s) == (0, 0, 0.0)
    assert s.next_tick == 0
    assert s.next_deadline == 100.0


def test_schedule_on_time_ticks_have_zero_jitter_and_never_drift_over_10000_ticks() -> None:
    rate, start = 60, 1000.0
    s = TickSchedule(rate_hz=rate, start=start)
    clock = ManualClock(start)
    for k in range(10_000):
        # The deadline is computed from k, not accumulated: it is the float nearest to
        # start + k/rate (rounding once), checked against exact rational arithmetic.
        exact = Fraction(start) + Fraction(k, rate)
        assert abs(Fraction(s.next_deadline) - exact) <= Fraction(1, 10**9)
        assert s.next_deadline == start + k / rate
        clock.set(s.next_deadline)
        plan = s.due(clock.now())
        assert plan == TickPlan(1, 0, 0.0, k, start + (k + 1) / rate)
        s.record(clock.now(), clock.now())
    assert s.ticks_run == 10_000
    assert s.ticks_skipped == 0
    assert s.stats()["jitter_max_s"] == 0.0


def test_schedule_naive_accumulation_would_have_drifted() -> None:
    # Guard that the no-drift test above is meaningful: adding the period 10,000 times
    # does drift, so the schedule must not be doing that.
    t = 1000.0
    for _ in range(10_000):
        t += 1 / 60
    assert t != 1000.0 + 10_000 / 60


def test_schedule_late_wakeup_catches_up_missed_ticks() -> None:
    s = TickSchedule(rate_hz=10, start=0.0, max_catch_up=3)
    plan = s.due(0.25)  # ticks 0 (0.0), 1 (0.1), 2 (0.2) are due
    assert plan.run == 3
    assert plan.skipped == 0
    assert plan.first_tick == 0
    assert plan.jitter_s == pytest.approx(0.25)
    assert s.next_tick == 3
    assert s.next_deadline == pytest.approx(0.3)
    assert plan.next_deadline == s.next_deadline
    assert s.last_jitter_s == plan.jitter_s


def test_schedule_far_behind_skips_oldest_ticks_and_says_so() -> None:
    s = TickSchedule(rate_hz=10, start=0.0, max_catch_up=3)
    plan = s.due(1.05)  # ticks 0..10 are due: 11 ticks
    assert plan.run == 3
    assert plan.skipped == 8
    assert plan.first_tick == 8  # the newest three are run: 8, 9, 10
    assert plan.jitter_s == pytest.approx(1.05 - 0.8)
    assert s.ticks_skipped == 8
    assert s.next_tick == 11
    assert s.next_deadline > 1.05  # back in the future
    assert s.due(1.05).run == 0


def test_schedule_deadline_exactly_now_is_due() -> None:
    s = TickSchedule(rate_hz=20, start=0.0)
    assert s.due(0.0).run == 1
    assert s.due(s.next_deadline).run == 1
    assert s.due(s.next_deadline - 1e-9).run == 0


def test_schedule_counts_overruns() -> None:
    s = TickSchedule(rate_hz=10, start=0.0)  # period 100 ms
    s.record(0.0, 0.05)
    s.record(0.0, 0.1)  # exactly one period is not an overrun
    s.record(2.0, 2.25)
    assert s.overruns == 1
    assert s.ticks_run == 3
    assert s.last_duration_s == pytest.approx(0.25)
    stats = s.stats()
    assert stats["overruns"] == 1
    assert stats["duration_max_s"] == pytest.approx(0.25)
    assert stats["duration_p50_s"] == pytest.approx(0.1)


def test_schedule_rolling_stats_cover_only_the_window() -> None:
    s = TickSchedule(rate_hz=10, start=0.0, window=4)
    for d in (0.5, 0.001, 0.002, 0.003, 0.004):
        s.record(0.0, d)
    stats = s.stats()
    assert stats["duration_max_s"] == 0.004  # the 0.5 s tick has left the window
    assert stats["duration_p50_s"] == 0.002
    assert stats["overruns"] == 1  # counters are not windowed


def test_schedule_set_rate_reanchors_at_next_deadline() -> None:
    s = TickSchedule(rate_hz=10, start=0.0)
    assert s.due(0.0).run == 1  # tick 0 consumed; next deadline 0.1
    s.set_rate(20, now=0.05)
    assert s.rate_hz == 20
    assert s.period_s == 1 / 20
    assert s.next_tick == 1
    assert s.next_deadline == 0.1  # the slot being waited for keeps its deadline
    assert s.deadline(2) == 0.1 + 1 / 20
    assert s.deadline(1 + 40) == 0.1 + 40 / 20  # computed from the new anchor
    plan = s.due(0.1 + 2 / 20)
    assert (plan.run, plan.first_tick) == (3, 1)


@pytest.mark.parametrize("bad", [9, 129, 0, -30])
def test_schedule_rejects_rates_outside_10_to_128_hz(bad: int) -> None:
    with pytest.raises(ValueError, match="10, 128"):
        TickSchedule(rate_hz=bad, start=0.0)
    s = TickSchedule(rate_hz=30, start=0.0)
    with pytest.raises(ValueError):
        s.set_rate(bad, now=0.0)
    assert s.rate_hz == 30


def test_schedule_rejects_non_int_rate() -> None:
    with pytest.raises(TypeError):
        TickSchedule(rate_hz=30.5, start=0.0)  # type: ignore[arg-type]


# --- run_ticks driver -------------------------------------------------------------


class FakeTime:
    """Injected sleep: advances the ManualClock instead of waiting; stops at `end`."""

    def __init__(self, clock: ManualClock, stop: asyncio.Event, end: float) -> None:
        self.clock = clock
        self.stop = stop
        self.end = end
        self.sleeps: list[float] = []

    async def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.clock.set(min(self.end, self.clock.now() + seconds))
        if self.clock.now() >= self.end:
            self.stop.set()


async def test_run_ticks_runs_exactly_n_ticks_for_n_periods() -> None:
    rate, n = 30, 300
    clock = ManualClock(50.0)
    schedule = TickSchedule(rate_hz=rate, start=clock.now())
    stop = asyncio.Event()
    fake = FakeTime(clock, stop, end=schedule.deadline(n))
    ticks: list[float] = []
    await run_ticks(schedule, clock, ticks.append, stop, sleep=fake.sleep)
    assert len(ticks) == n
    assert schedule.ticks_run == n
    assert schedule.ticks_skipped == 0
    assert schedule.overruns == 0
    assert all(s > 0 for s in fake.sleeps)
    assert ticks[-1] == pytest.approx(50.0 + (n - 1) / rate)


async def test_run_ticks_survives_a_tick_that_raises(caplog: pytest.LogCaptureFixture) -> None:
    clock = ManualClock()
    schedule = TickSchedule(rate_hz=10, start=0.0)
    stop = asyncio.Event()
    fake = FakeTime(clock, stop, end=schedule.deadline(20))
    ran: list[float] = []

    def tick(now: float) -> None:
        ran.append(now)
        if len(ran) % 2 == 0:
            raise RuntimeError("boom")
        if len(ran) == 5:
            raise KeyError("other")

    with caplog.at_level(logging.ERROR, logger="server.tickloop"):
        await run_ticks(schedule, clock, tick, stop, sleep=fake.sleep)
    assert len(ran) == 20
    assert schedule.tick_errors == 11  # 10 RuntimeErrors + 1 KeyError
    assert schedule.ticks_run == 20  # failed ticks are still recorded
    # Logged once per distinct exception type, with traceback.
    errors = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert len(errors) == 2
    assert all(r.exc_info for r in errors)


async def test_run_ticks_reports_plans_and_measures_slow_ticks() -> None:
    clock = ManualClock()
    schedule = TickSchedule(rate_hz=10, start=0.0, max_catch_up=2)
    stop = asyncio.Event()
    fake = FakeTime(clock, stop, end=10.0)
    plans: list[TickPlan] = []
    calls = 0

    def slow_tick(now: float) -> None:
        nonlocal calls
        calls += 1
        if calls == 3:
            clock.advance(0.55)  # one pathological tick: 5.5 periods

    await run_ticks(schedule, clock, slow_tick, stop, on_plan=plans.append, sleep=fake.sleep)
    assert schedule.overruns == 1
    assert schedule.last_duration_s == 0.0
    assert schedule.stats()["duration_max_s"] == pytest.approx(0.55)
    # After the slow tick at t=0.2..0.75, slots 3..7 are due: 2 run, 3 skipped.
    assert [(p.run, p.skipped) for p in plans][3] == (2, 3)
    assert schedule.ticks_skipped == 3
    assert schedule.ticks_run + schedule.ticks_skipped == 100
    assert all(p.run > 0 for p in plans)


async def test_run_ticks_yields_even_when_every_tick_overruns() -> None:
    # If every tick overruns, due() never says "sleep"; the driver must still yield
    # so other tasks (here: the one that sets stop) get to run.
    clock = ManualClock()
    schedule = TickSchedule(rate_hz=10, start=0.0)
    stop = asyncio.Event()

    async def never_sleep(seconds: float) -> None:
        raise AssertionError("the loop should never be idle in this test")

    async def stopper() -> None:
        for _ in range(5):
            await asyncio.sleep(0)
        stop.set()

    task = asyncio.create_task(stopper())
    await run_ticks(schedule, clock, lambda now: clock.advance(0.2), stop, sleep=never_sleep)
    await task
    assert schedule.ticks_run > 0
    assert schedule.overruns == schedule.ticks_run


async def test_run_ticks_default_sleep_returns_promptly_when_stopped() -> None:
    # Real clock is irrelevant here: the next deadline is an hour away and stop is
    # already set, so the default stop-event wait must not be entered at all.
    clock = ManualClock()
    schedule = TickSchedule(rate_hz=10, start=3600.0)
    stop = asyncio.Event()
    stop.set()
    await run_ticks(schedule, clock, lambda now: None, stop)
    assert schedule.ticks_run == 0


async def test_run_ticks_default_sleep_wakes_on_stop() -> None:
    clock = ManualClock()
    schedule = TickSchedule(rate_hz=10, start=3600.0)  # an hour away: only stop can wake it
    stop = asyncio.Event()
    task = asyncio.create_task(run_ticks(schedule, clock, lambda now: None, stop))
    await asyncio.sleep(0)
    stop.set()
    await asyncio.wait_for(task, timeout=5)
    assert schedule.ticks_run == 0


def test_schedule_fell_behind_warning_is_rate_limited(caplog: pytest.LogCaptureFixture) -> None:
    s = TickSchedule(rate_hz=10, start=0.0, max_catch_up=1)
    with caplog.at_level(logging.WARNING, logger="server.tickloop"):
        assert s.due(1.0).skipped == 10
        assert s.due(2.0).skipped == 9  # 1 s later: counted, not logged again
        assert s.due(20.0).skipped == 179  # > SKIP_LOG_INTERVAL_S later: logged
    assert s.ticks_skipped == 198
    assert len([r for r in caplog.records if r.levelno == logging.WARNING]) == 2


# --- run_ticks' own sleep (no injected sleep): a future and a timer per wait ----------


async def test_run_ticks_own_sleep_ends_at_once_when_stopped() -> None:
    """The next deadline is 1000 s away on the ManualClock; setting `stop` must end the
    sleep without waiting for its timer (bounded wait: 5 s)."""
    clock = ManualClock(0.0)
    schedule = TickSchedule(rate_hz=10, start=1000.0)
    stop = asyncio.Event()
    task = asyncio.ensure_future(run_ticks(schedule, clock, lambda now: None, stop))
    for _ in range(5):
        await asyncio.sleep(0)  # the loop is now asleep towards the deadline
    assert not task.done()
    stop.set()
    await asyncio.wait_for(task, timeout=5.0)
    assert schedule.ticks_run == 0


async def test_run_ticks_own_sleep_wakes_for_the_deadline() -> None:
    """The timer (a real one, rounded up to whole ms) wakes the loop, which then reads the
    clock and runs the tick that came due; twice, so a second sleep works after a first."""
    clock = ManualClock(0.0)
    schedule = TickSchedule(rate_hz=128, start=0.001)
    stop = asyncio.Event()
    ran: list[float] = []
    due = asyncio.Event()

    def tick(now: float) -> None:
        ran.append(now)
        due.set()

    task = asyncio.ensure_future(run_ticks(schedule, clock, tick, stop))
    for deadline_tick in (0, 1):
        await asyncio.sleep(0)
        clock.set(schedule.deadline(deadline_tick))  # due by the time the timer fires
        await asyncio.wait_for(due.wait(), timeout=5.0)
        due.clear()
    stop.set()
    await asyncio.wait_for(task, timeout=5.0)
    assert ran == [schedule.deadline(0), schedule.deadline(1)]
