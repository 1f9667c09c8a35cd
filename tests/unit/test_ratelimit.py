"""TokenBucket and AbuseTracker with explicit times."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from server.ratelimit import AbuseTracker, TokenBucket


def test_token_bucket_starts_full_and_allows_a_burst() -> None:
    bucket = TokenBucket(rate_per_s=10, burst=5, now=0.0)
    assert [bucket.take(0.0) for _ in range(6)] == [True] * 5 + [False]
    assert bucket.accepted == 5
    assert bucket.rejected == 1


def test_token_bucket_refills_by_elapsed_time() -> None:
    bucket = TokenBucket(rate_per_s=10, burst=5, now=0.0)
    for _ in range(5):
        assert bucket.take(0.0)
    assert not bucket.take(0.05)  # half a token
    assert bucket.take(0.1)  # one token after 100 ms
    assert not bucket.take(0.1)


def test_token_bucket_refill_is_capped_at_burst() -> None:
    bucket = TokenBucket(rate_per_s=10, burst=3, now=0.0)
    assert bucket.tokens(1000.0) == 3.0
    assert [bucket.take(1000.0) for _ in range(4)] == [True, True, True, False]


def test_token_bucket_cost_and_rejected_take_consumes_nothing() -> None:
    bucket = TokenBucket(rate_per_s=1, burst=4, now=0.0)
    assert not bucket.take(0.0, cost=5)  # more than burst: never
    assert bucket.take(0.0, cost=3)
    assert not bucket.take(0.0, cost=2)
    assert bucket.tokens(0.0) == 1.0


def test_token_bucket_time_going_backwards_mints_no_tokens() -> None:
    # Binary-exact times (1/8 s per token) so the test is about policy, not rounding.
    bucket = TokenBucket(rate_per_s=8, burst=1, now=10.0)
    assert bucket.take(10.0)
    assert not bucket.take(5.0)
    assert not bucket.take(10.0625)  # the backwards call did not move the refill origin
    assert bucket.take(10.125)


@pytest.mark.parametrize(("rate", "burst"), [(-1, 1), (1, 0), (float("nan"), 1), (1, float("inf"))])
def test_token_bucket_rejects_bad_parameters(rate: float, burst: float) -> None:
    with pytest.raises(ValueError):
        TokenBucket(rate_per_s=rate, burst=burst, now=0.0)


@given(
    rate=st.floats(0, 100),
    burst=st.floats(0.5, 50),
    gaps=st.lists(st.floats(0, 2), min_size=1, max_size=300),
    costs=st.lists(st.sampled_from([0.5, 1.0, 2.0]), min_size=300, max_size=300),
    window=st.tuples(st.integers(0, 299), st.integers(0, 299)),
)
def test_token_bucket_never_accepts_more_than_burst_plus_rate_times_interval(
    rate: float,
    burst: float,
    gaps: list[float],
    costs: list[float],
    window: tuple[int, int],
) -> None:
    bucket = TokenBucket(rate_per_s=rate, burst=burst, now=0.0)
    times, t = [], 0.0
    for gap in gaps:
        t += gap
        times.append(t)
    accepted = [bucket.take(now, cost) for now, cost in zip(times, costs, strict=False)]
    i, j = sorted(w % len(times) for w in window)
    spent = sum(c for c, ok in zip(costs[i : j + 1], accepted[i : j + 1], strict=False) if ok)
    assert spent <= burst + rate * (times[j] - times[i]) + 1e-6


def test_abuse_tracker_tolerates_max_drops_in_window() -> None:
    tracker = AbuseTracker(max_drops=3, window_s=1.0)
    assert not tracker.record_drop(0.0)
    assert not tracker.record_drop(0.1)
    assert not tracker.record_drop(0.2)
    assert tracker.record_drop(0.3)  # fourth drop within one second
    assert tracker.tripped


def test_abuse_tracker_forgets_drops_older_than_the_window() -> None:
    tracker = AbuseTracker(max_drops=2, window_s=1.0)
    # Two drops a second forever is under the limit: the window slides.
    assert not any(tracker.record_drop(k * 0.5) for k in range(100))
    assert tracker.drops == 100
    # A drop exactly window_s old no longer counts: (now - window, now].
    tracker = AbuseTracker(max_drops=1, window_s=1.0)
    assert not tracker.record_drop(0.0)
    assert not tracker.record_drop(1.0)
    assert tracker.record_drop(1.5)


def test_abuse_tracker_stays_tripped() -> None:
    tracker = AbuseTracker(max_drops=0, window_s=1.0)
    assert tracker.record_drop(0.0)
    assert tracker.record_drop(100.0)


# -- InboundBudget: integer credit, backlog versus flood --------------------------------------

from server.ratelimit import InboundBudget  # noqa: E402


def _budget(now: float = 0.0) -> InboundBudget:
    return InboundBudget(frames_per_s=120, frame_burst=60, bytes_per_s=64_000,
                         byte_burst=128_000, backlog_s=10.0, now=now)


def test_the_budget_starts_full_and_refuses_past_the_burst_without_charging():
    b = _budget()
    assert all(b.spend(10) for _ in range(60))
    assert not b.spend(10)
    assert b.frames == 0


def test_the_budget_refills_at_its_rate_in_whole_milliseconds():
    b = _budget()
    for _ in range(60):
        b.spend(1)
    b.refill(0.0999)  # 99 ms: 11.88 frames earned
    assert sum(b.spend(1) for _ in range(20)) == 11


def test_bytes_are_limited_too():
    b = _budget()
    assert b.spend(100_000) and not b.spend(28_001) and b.spend(28_000)


def test_a_silence_earns_a_backlog_beyond_the_burst_up_to_backlog_s():
    b = _budget()
    b.refill(4.0)  # 4 s of silence: 480 frames' worth, more than the burst of 60
    assert sum(b.spend(1) for _ in range(1000)) == 480
    c = _budget()
    c.refill(60.0)  # a minute of silence earns no more than backlog_s (10 s)
    assert sum(c.spend(1) for _ in range(5000)) == 1200


def test_without_a_silence_the_cap_is_the_burst():
    b = _budget()
    t = 0.0
    accepted = 0
    for _ in range(300):  # a flood: 10 frames every 33 ms for 10 s
        t += 1 / 30
        b.refill(t)
        accepted += sum(b.spend(1) for _ in range(10))
    assert accepted <= 60 + 120 * t + 1


def test_a_clock_going_backwards_earns_nothing():
    b = _budget(10.0)
    for _ in range(60):
        b.spend(1)
    b.refill(5.0)
    assert not b.spend(1)


@given(st.lists(st.tuples(st.one_of(st.floats(0.0, 0.05), st.floats(0.0, 15.0)),
                          st.integers(0, 3000), st.booleans()), max_size=60))
def test_charge_read_is_refill_then_spend(steps: list[tuple[float, int, bool]]) -> None:
    """The short path's one call and the general loop's two leave twin budgets equal
    after any reads (gaps short and long, up to past the backlog allowance; sizes; and
    refills without a frame in between)."""
    one, two = _budget(), _budget()
    now = 0.0
    for gap, wire_bytes, charge in steps:
        now += gap
        if charge:
            assert one.charge_read(now, wire_bytes) == (two.refill(now) or two.spend(wire_bytes))
        else:
            one.refill(now)
            two.refill(now)
        assert (one.frames, one.bytes_) == (two.frames, two.bytes_)
