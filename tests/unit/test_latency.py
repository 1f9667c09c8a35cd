"""RttEstimator (RFC 6298) and PingTracker on explicit times."""

from __future__ import annotations

import math
import struct

import pytest
from hypothesis import given
from hypothesis import strategies as st

from server.clock import ManualClock
from server.latency import PING_PAYLOAD, PingTracker, RttEstimator


def test_rtt_estimator_before_first_sample() -> None:
    est = RttEstimator()
    assert (est.srtt_s, est.rttvar_s, est.last_s, est.samples) == (0.0, 0.0, 0.0, 0)
    assert est.rto_s == 1.0  # RFC 6298 §2.1 initial RTO
    assert est.percentile(50) is None


def test_rtt_estimator_follows_rfc6298_on_a_hand_computed_sequence() -> None:
    # Powers of two so every step is exact in binary floating point.
    est = RttEstimator(granularity_s=0.001)
    est.add_sample(0.100)  # first: srtt = R, rttvar = R/2
    assert est.srtt_s == 0.100
    assert est.rttvar_s == 0.050
    assert est.rto_s == pytest.approx(0.100 + 4 * 0.050)

    est.add_sample(0.200)
    # rttvar = 3/4*0.05 + 1/4*|0.1-0.2| = 0.0375 + 0.025 = 0.0625  (old srtt!)
    # srtt   = 7/8*0.1 + 1/8*0.2       = 0.0875 + 0.025 = 0.1125
    assert est.rttvar_s == pytest.approx(0.0625)
    assert est.srtt_s == pytest.approx(0.1125)
    assert est.rto_s == pytest.approx(0.1125 + 0.25)

    est.add_sample(0.1125)  # a sample equal to srtt only decays the variance
    assert est.rttvar_s == pytest.approx(0.046875)
    assert est.srtt_s == pytest.approx(0.1125)
    assert est.samples == 3
    assert est.last_s == 0.1125


def test_rtt_estimator_rto_granularity_and_clamp() -> None:
    est = RttEstimator(granularity_s=0.010)
    for _ in range(200):
        est.add_sample(0.050)  # constant RTT: rttvar decays towards 0
    assert est.rto_s == pytest.approx(0.060)  # srtt + G
    clamped = RttEstimator(min_rto_s=0.2)
    clamped.add_sample(0.010)
    assert clamped.rto_s == 0.2


@pytest.mark.parametrize("bad", [-0.001, float("nan"), float("inf")])
def test_rtt_estimator_rejects_bad_samples(bad: float) -> None:
    est = RttEstimator()
    with pytest.raises(ValueError):
        est.add_sample(bad)
    assert est.samples == 0


def test_rtt_estimator_percentiles_over_a_known_window() -> None:
    est = RttEstimator(window=10)
    for ms in range(1, 101):  # 1..100 ms; the window keeps 91..100
        est.add_sample(ms / 1000)
    assert est.samples == 100
    assert est.percentile(0) == 0.091
    assert est.percentile(50) == 0.095  # nearest rank: ceil(0.5*10) = 5th
    assert est.percentile(95) == 0.100
    assert est.percentile(99) == 0.100
    assert est.percentile(100) == 0.100
    with pytest.raises(ValueError):
        est.percentile(101)


# --- PingTracker --------------------------------------------------------------------


def test_ping_payload_is_id_and_send_time() -> None:
    tracker = PingTracker()
    payload = tracker.poll(12.5)
    assert payload is not None
    assert len(payload) == 16
    assert struct.unpack("!Qd", payload) == (1, 12.5)


def test_ping_pong_round_trip_gives_exactly_the_advanced_time() -> None:
    clock = ManualClock(1000.0)
    tracker = PingTracker(interval_s=1.0)
    payload = tracker.poll(clock.now())
    assert payload is not None
    clock.advance(0.125)
    assert tracker.on_pong(payload, clock.now()) == 0.125
    assert tracker.rtt.srtt_s == 0.125
    assert tracker.rtt.last_s == 0.125
    assert tracker.pongs_received == 1
    assert tracker.bad_pongs == 0
    assert not tracker.outstanding


def test_ping_cadence_is_one_outstanding_every_interval() -> None:
    tracker = PingTracker(interval_s=1.0, timeout_s=5.0)
    first = tracker.poll(0.0)
    assert first is not None
    assert tracker.poll(0.5) is None
    assert tracker.poll(3.0) is None  # still outstanding: no second ping
    assert tracker.next_ping_at is None
    tracker.on_pong(first, 0.25)
    assert tracker.next_ping_at == 1.0  # interval measured from the previous send
    assert tracker.poll(0.999) is None
    second = tracker.poll(1.0)
    assert second is not None
    assert struct.unpack("!Qd", second)[0] == 2
    assert tracker.pings_sent == 2


def test_ping_times_out_after_timeout_s_and_not_before() -> None:
    tracker = PingTracker(interval_s=1.0, timeout_s=5.0)
    assert not tracker.timed_out(100.0)  # nothing sent yet
    tracker.poll(10.0)
    assert not tracker.timed_out(10.0)
    assert not tracker.timed_out(15.0)  # exactly timeout_s: not yet
    assert tracker.timed_out(15.001)


def test_timeout_at_is_the_outstanding_pings_deadline_and_inf_otherwise() -> None:
    """The delivery loop compares `timeout_at` instead of calling `timed_out` per seat."""
    tracker = PingTracker(interval_s=1.0, timeout_s=5.0)
    assert tracker.timeout_at == math.inf
    payload = tracker.poll(10.0)
    assert payload is not None and tracker.timeout_at == 15.0
    tracker.on_pong(b"forged", 11.0)  # a bad pong leaves the ping outstanding
    assert tracker.timeout_at == 15.0
    tracker.on_pong(payload, 11.0)
    assert tracker.timeout_at == math.inf and not tracker.timed_out(1e9)


def test_pong_clears_timeout() -> None:
    tracker = PingTracker(interval_s=1.0, timeout_s=5.0)
    payload = tracker.poll(0.0)
    assert payload is not None
    tracker.on_pong(payload, 4.0)
    assert not tracker.timed_out(100.0)


def test_forged_and_stale_pongs_are_counted_and_ignored() -> None:
    tracker = PingTracker()
    assert tracker.on_pong(PING_PAYLOAD.pack(1, 0.0), 1.0) is None  # nothing outstanding
    payload = tracker.poll(10.0)
    assert payload is not None
    bad = [
        b"",
        payload[:-1],
        payload + b"\x00",
        PING_PAYLOAD.pack(2, 10.0),  # unknown id
        PING_PAYLOAD.pack(1, 9.0),  # forged earlier send time: would inflate RTT
        PING_PAYLOAD.pack(1, 10.5),  # send time in the future
        PING_PAYLOAD.pack(1, float("nan")),
    ]
    for b in bad:
        assert tracker.on_pong(b, 10.2) is None
    assert tracker.on_pong(payload, 9.0) is None  # now earlier than the send: caller bug
    assert tracker.bad_pongs == 1 + len(bad) + 1
    assert tracker.rtt.samples == 0
    assert tracker.on_pong(payload, 10.25) == 0.25
    assert tracker.on_pong(payload, 10.5) is None  # duplicate: stale
    assert tracker.rtt.samples == 1


_packed = st.builds(
    PING_PAYLOAD.pack,
    st.integers(0, 2**64 - 1),
    st.floats(allow_nan=True, allow_infinity=True),
)


@given(
    garbage=st.lists(st.one_of(st.binary(max_size=40), _packed), max_size=20),
    when=st.floats(0, 1e6),
)
def test_any_pong_bytes_never_raise_or_corrupt_the_estimator(
    garbage: list[bytes], when: float
) -> None:
    tracker = PingTracker()
    genuine = tracker.poll(when)
    assert genuine is not None
    for b in garbage:
        if b == genuine:
            continue
        assert tracker.on_pong(b, when + 0.05) is None
    assert tracker.rtt.samples == 0
    assert tracker.outstanding
    rtt = tracker.on_pong(genuine, when + 0.05)
    assert rtt is not None
    assert rtt == pytest.approx(0.05, abs=1e-6)
    assert tracker.rtt.srtt_s == rtt


@given(steps=st.lists(st.tuples(st.sampled_from(["poll", "pong", "forged"]),
                                st.floats(0.0, 3.0)), max_size=30))
def test_due_at_always_equals_next_ping_at(steps: list[tuple[str, float]]) -> None:
    """The plain `due_at` the delivery loop compares is `next_ping_at` (inf while a ping
    is outstanding), whatever sequence of polls and pongs, genuine or forged, happened."""
    tracker = PingTracker(interval_s=1.0, timeout_s=5.0)
    now, payload = 0.0, None
    assert tracker.due_at == tracker.next_ping_at == -float("inf")
    for action, dt in steps:
        now += dt
        if action == "poll":
            due = tracker.due_at
            sent = tracker.poll(now)
            assert (sent is not None) == (now >= due)  # sends exactly when due
            payload = sent or payload
        elif action == "pong" and payload is not None:
            tracker.on_pong(payload, now)
        else:
            tracker.on_pong(b"forged!!", now)
        expected = tracker.next_ping_at
        assert tracker.due_at == (float("inf") if expected is None else expected)
