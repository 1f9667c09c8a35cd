"""Connections owing their first request head: deadlines, caps, the fd watch."""

from __future__ import annotations

from server.connguard import FdWatch, GuardLimits, PendingConnections


def test_a_connection_expires_at_its_deadline_unless_its_head_arrived():
    pending = PendingConnections(GuardLimits(head_timeout_s=10.0, max_pending=0,
                                             max_pending_per_ip=0))
    assert pending.admit("a", "10.0.0.1", now=0.0) is None
    assert pending.admit("b", "10.0.0.1", now=1.0) is None
    assert pending.admit("c", "10.0.0.2", now=2.0) is None
    assert pending.done("b")  # its head arrived
    assert pending.expired(now=9.99) == []
    assert pending.expired(now=10.0) == ["a"]
    assert pending.expired(now=11.5) == []  # b is no longer pending
    assert pending.expired(now=12.0) == ["c"]
    assert len(pending) == 0 and not pending.per_ip
    assert not pending.done("a")  # closing after expiry is a no-op


def test_the_global_and_per_address_caps_refuse_and_free_on_done():
    pending = PendingConnections(GuardLimits(head_timeout_s=5.0, max_pending=3,
                                             max_pending_per_ip=2))
    assert pending.admit(1, "10.0.0.1", 0.0) is None
    assert pending.admit(2, "10.0.0.1", 0.0) is None
    assert pending.admit(3, "10.0.0.1", 0.0) == "pending_ip_cap"
    assert pending.admit(4, "2001:db8::1", 0.0) is None
    # the same IPv6 /64 counts as one address
    assert pending.admit(5, "2001:db8::2", 0.0) == "pending_cap"
    pending.done(1)
    assert pending.admit(6, "10.0.0.1", 0.0) is None
    assert pending.per_ip["10.0.0.1"] == 2
    assert len(pending) == 3


def test_no_cap_when_both_are_zero():
    pending = PendingConnections(GuardLimits(head_timeout_s=1.0, max_pending=0,
                                             max_pending_per_ip=0))
    assert all(pending.admit(i, "10.0.0.1", 0.0) is None for i in range(5000))


def test_the_fd_watch_reports_crossing_up_once_and_down_once():
    watch = FdWatch(limit=100)
    assert [watch.check(n) for n in (10, 79, 80, 95, 81, 70, 69, 75, 85)] == [
        None, None, "near", None, None, None, "clear", None, "near"]


def test_the_default_per_address_cap_is_a_quarter_of_the_global_one():
    from server.connguard import default_pending_per_ip

    assert default_pending_per_ip(64) == 16
    assert default_pending_per_ip(1024) == 64
    assert default_pending_per_ip(2) == 1
    assert default_pending_per_ip(0) == 64  # no global cap: the per-address one stays
