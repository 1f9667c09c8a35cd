"""server.bans: temporary bans on names and addresses, with time as an argument."""

from __future__ import annotations

import math

import pytest

from server.bans import MAX_BAN_S, Bans, name_key


def test_a_kick_bans_the_name_for_kick_ban_s_then_it_expires():
    bans = Bans(kick_ban_s=60.0)
    assert bans.ban(100.0, name="Bob", address=None) == 60.0
    assert bans.remaining(100.0, name="bob", address=None) == 60.0
    assert bans.remaining(130.0, name="  BOB ", address="10.0.0.1") == 30.0
    assert bans.remaining(130.0, name="alice", address="10.0.0.1") == 0.0
    assert bans.remaining(160.0, name="bob", address=None) == 0.0
    assert bans.active(160.0) == [] and len(bans) == 0


def test_an_address_ban_refuses_every_name_from_it():
    bans = Bans()
    bans.ban(0.0, name="eve", address="192.0.2.7", seconds=3600)
    assert bans.remaining(10.0, name="someone-else", address="192.0.2.7") == 3590.0
    assert bans.remaining(10.0, name="someone-else", address="192.0.2.8") == 0.0
    assert {b["kind"] for b in bans.active(10.0)} == {"name", "addr"}


def test_the_longer_ban_wins_and_a_shorter_one_does_not_shorten_it():
    bans = Bans(kick_ban_s=60.0)
    bans.ban(0.0, name="bob", address=None, seconds=600)
    bans.ban(10.0, name="bob", address=None)  # a later kick of 60 s
    assert bans.remaining(100.0, name="bob", address=None) == 500.0


@pytest.mark.parametrize("seconds", [0.0, -5.0, math.nan, math.inf * -1])
def test_no_ban_for_zero_negative_or_nan_seconds(seconds):
    bans = Bans()
    assert bans.ban(0.0, name="bob", address="1.2.3.4", seconds=seconds) == 0.0
    assert bans.remaining(0.0, name="bob", address="1.2.3.4") == 0.0


def test_a_ban_is_at_most_a_day_and_an_empty_name_bans_nothing():
    bans = Bans()
    assert bans.ban(0.0, name="bob", address=None, seconds=1e12) == MAX_BAN_S
    assert bans.ban(0.0, name="   ", address=None) == 0.0
    assert name_key(" Bob ") == "bob"


def test_lift_ends_a_ban_early():
    bans = Bans()
    bans.ban(0.0, name="bob", address="1.2.3.4")
    assert bans.lift(name="BOB")
    assert not bans.lift(name="bob")
    assert bans.remaining(1.0, name="bob", address=None) == 0.0
    assert bans.remaining(1.0, name=None, address="1.2.3.4") > 0


def test_entries_are_bounded_oldest_expiry_dropped_first():
    bans = Bans(max_entries=3)
    for i in range(5):
        bans.ban(float(i), name=f"p{i}", address=None, seconds=100)
    assert len(bans) == 3
    assert bans.remaining(10.0, name="p0", address=None) == 0.0
    assert bans.remaining(10.0, name="p4", address=None) == 94.0


def test_a_re_ban_is_not_dropped_by_its_own_stale_heap_entry():
    bans = Bans(max_entries=2)
    bans.ban(0.0, name="a", address=None, seconds=10)
    bans.ban(1.0, name="a", address=None, seconds=1000)  # re-ban: the first entry is stale
    bans.ban(2.0, name="b", address=None, seconds=50)
    bans.ban(3.0, name="c", address=None, seconds=60)  # over the cap: drop b (earliest live)
    assert bans.remaining(5.0, name="a", address=None) == 996.0
    assert bans.remaining(5.0, name="b", address=None) == 0.0
    assert bans.remaining(5.0, name="c", address=None) == 58.0
