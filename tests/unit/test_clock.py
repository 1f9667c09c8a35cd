"""Clock conformance, run once against the real clock and once against the fake."""

from __future__ import annotations

import pytest

from server.clock import Clock, ManualClock, MonotonicClock


class _StepManualClock(ManualClock):
    """ManualClock that advances a little on every read, so the conformance test
    exercises a moving fake the same way it exercises the moving real clock."""

    def now(self) -> float:
        t = super().now()
        self.advance(0.001)
        return t


@pytest.fixture(params=["monotonic", "manual", "manual-stepping"])
def clock(request: pytest.FixtureRequest) -> Clock:
    return {
        "monotonic": MonotonicClock,
        "manual": ManualClock,
        "manual-stepping": _StepManualClock,
    }[request.param]()


def test_clock_satisfies_protocol(clock: Clock) -> None:
    assert isinstance(clock, Clock)


def test_clock_returns_float_seconds(clock: Clock) -> None:
    assert isinstance(clock.now(), float)


def test_clock_never_goes_backwards(clock: Clock) -> None:
    readings = [clock.now() for _ in range(1000)]
    assert readings == sorted(readings)


def test_manual_clock_starts_where_told_and_stays_put() -> None:
    clock = ManualClock(12.5)
    assert clock.now() == 12.5
    assert clock.now() == 12.5


def test_manual_clock_advance_and_set() -> None:
    clock = ManualClock()
    assert clock.advance(0.25) == 0.25
    clock.set(10.0)
    assert clock.now() == 10.0
    clock.set(10.0)  # setting to the same time is allowed
    assert clock.now() == 10.0


@pytest.mark.parametrize("bad", [-0.001, float("nan"), float("inf")])
def test_manual_clock_rejects_backwards_or_non_finite_advance(bad: float) -> None:
    clock = ManualClock(1.0)
    with pytest.raises(ValueError):
        clock.advance(bad)
    assert clock.now() == 1.0


@pytest.mark.parametrize("bad", [0.5, float("nan"), float("-inf"), float("inf")])
def test_manual_clock_rejects_set_backwards_or_non_finite(bad: float) -> None:
    clock = ManualClock(1.0)
    with pytest.raises(ValueError):
        clock.set(bad)
    assert clock.now() == 1.0
