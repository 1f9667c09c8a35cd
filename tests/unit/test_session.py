"""Session: one connection's policy state (frame parsing, limits, outbound policy)."""

from __future__ import annotations

import pytest

from proto import PROTOCOL_VERSION
from proto import tickwire_pb2 as pb
from server.errors import ProtocolError
from server.session import (
    OutboundPolicy,
    Session,
    SessionLimits,
    check_version,
    parse_client_frame,
)


def test_a_client_frame_parses_and_empty_or_garbage_bytes_are_refused():
    frame = parse_client_frame(pb.ClientFrame(ping=pb.Ping(client_time=1.5))
                               .SerializeToString())
    assert frame.ping.client_time == 1.5
    with pytest.raises(ProtocolError) as empty:
        parse_client_frame(b"")
    assert (empty.value.code, empty.value.label) == (1008, "empty_frame")
    with pytest.raises(ProtocolError) as garbage:
        parse_client_frame(b"\xff\xfe\xfd")
    assert (garbage.value.code, garbage.value.label) == (1007, "invalid_protobuf")


def test_only_our_protocol_version_is_accepted():
    check_version(PROTOCOL_VERSION)
    with pytest.raises(ProtocolError) as err:
        check_version(PROTOCOL_VERSION + 1)
    assert err.value.label == "bad_version" and str(PROTOCOL_VERSION + 1) in err.value.reason


def test_the_frame_budget_follows_the_tick_rate_with_4x_headroom():
    assert SessionLimits.for_tick_rate(30).frames_per_s == 120
    assert SessionLimits.for_tick_rate(5).frames_per_s == 40  # a floor for slow rooms
    assert SessionLimits.for_tick_rate(30, frame_burst=7).frame_burst == 7


def test_a_session_is_idle_after_the_idle_timeout_without_a_data_frame():
    session = Session.open(SessionLimits(idle_timeout_s=30.0), now=10.0)
    assert not session.idle(40.0) and session.idle(40.01)
    session.last_frame_at = 39.0
    assert not session.idle(60.0)


def test_frame_limits_come_from_the_session_limits():
    limits = SessionLimits(max_frame_bytes=100, max_fragment_bytes=50, max_fragments=3)
    fl = Session.open(limits, 0.0).frame_limits
    assert (fl.max_message_bytes, fl.max_fragment_bytes, fl.max_fragments) == (100, 50, 3)


def test_drops_close_only_past_the_window_limit():
    session = Session.open(SessionLimits(max_drops=2, drop_window_s=1.0), 0.0)
    assert not session.record_drop(0.0) and not session.record_drop(0.5)
    assert session.record_drop(0.9)


def test_outbound_skips_over_the_high_water_mark_and_stalls_after_the_timeout():
    policy = OutboundPolicy(high_water=100, stall_timeout_s=5.0)
    assert policy.admit(100, 0.0)
    assert not policy.admit(101, 1.0) and not policy.stalled(5.9)
    assert policy.stalled(6.0) and policy.skipped == 1
    assert policy.admit(0, 6.1) and not policy.stalled(20.0)
