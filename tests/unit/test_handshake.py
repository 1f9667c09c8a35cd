"""Pre-upgrade checks: origins, join tokens, connections per address."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from server.handshake import (
    ConnectionsPerIp,
    OriginPolicy,
    Refusal,
    SeatClaim,
    SeatTokens,
    address_key,
    check_upgrade,
    normalize_origin,
)


def test_ipv6_addresses_count_per_slash_64_and_mapped_ipv4_as_ipv4():
    assert address_key("2001:db8::1") == address_key("2001:db8::ffff:1") == "2001:db8::/64"
    assert address_key("2001:db8:0:1::1") != address_key("2001:db8::1")
    assert address_key("::ffff:10.0.0.1") == "10.0.0.1"
    assert address_key("127.0.0.1") == "127.0.0.1"
    assert address_key("not an address") == "not an address"


def test_one_ipv6_host_cannot_escape_the_cap_by_changing_its_interface_id():
    ips = ConnectionsPerIp(cap=2)
    for host in ("2001:db8::1", "2001:db8::2"):
        assert ips.check(host, now=0.0) is None
        ips.opened(host)
    refusal = ips.check("2001:db8::3", now=0.0)
    assert refusal is not None and refusal.status == 429 and refusal.label == "ip_cap"
    ips.closed("2001:db8::1")
    assert ips.check("2001:db8::3", now=0.0) is None


def test_new_connections_per_address_are_rate_limited_and_refill_with_time():
    ips = ConnectionsPerIp(cap=0, rate_per_s=2.0, burst=3.0)
    assert [ips.check("10.0.0.1", now=0.0) is None for _ in range(4)] == [True] * 3 + [False]
    assert ips.check("10.0.0.2", now=0.0) is None  # another address has its own bucket
    assert ips.check("10.0.0.1", now=0.5) is None  # one token back after 0.5 s at 2/s


def test_rate_buckets_are_a_bounded_lru():
    ips = ConnectionsPerIp(cap=0, rate_per_s=1.0, burst=1.0, max_tracked=100)
    for i in range(1000):
        ips.check(f"10.0.{i // 256}.{i % 256}", now=0.0)
    assert len(ips._buckets) == 100


@pytest.mark.parametrize(("origin", "ok"), [
    (None, True), ("http://game.example", True), ("https://other.example", False),
    ("http://127.0.0.1:8080", True), ("HTTP://127.0.0.1:8080", True), ("null", False)])
def test_origins_on_the_list_or_the_servers_own_pass(origin, ok):
    policy = OriginPolicy(["http://game.example:80"])
    assert (policy.check(origin, "127.0.0.1:8080", "http") is None) is ok


def test_seat_tokens_verify_until_they_expire_and_not_after_tampering():
    tokens = SeatTokens(b"s" * 32, ttl_s=10.0)
    token, claim = tokens.issue("n1", "arena-1", "arena", now_unix=1000.0)
    assert tokens.check(token, now_unix=1005.0) == claim
    assert claim == SeatClaim(claim.nonce, "n1", "arena-1", "arena", False, 1_010_000)
    assert tokens.check(token, now_unix=1010.0).label == "token_expired"
    # A character in the middle (the last one may only carry padding bits).
    mid = len(token) // 2
    flipped = token[:mid] + ("A" if token[mid] != "A" else "B") + token[mid + 1:]
    assert tokens.check(flipped, now_unix=1005.0).label in ("token_invalid", "token_malformed")
    assert SeatTokens(b"t" * 32).check(token, now_unix=1005.0).label == "token_invalid"
    assert tokens.check(None, now_unix=0.0).label == "token_missing"
    assert tokens.check("!!", now_unix=0.0).label == "token_malformed"
    assert tokens.check("A" * 600, now_unix=0.0).label == "token_malformed"
    with pytest.raises(ValueError):
        SeatTokens(b"short")


def test_a_seat_token_is_refused_by_another_node_and_signing_is_deterministic():
    tokens = SeatTokens(b"s" * 32, ttl_s=15.0)
    token, claim = tokens.issue("n1", "duel-7", "duel", now_unix=0.0, private=True)
    assert tokens.sign(claim) == token  # a retried request gets the same token
    assert tokens.check(token, 1.0, node="n1") == claim and claim.private
    refusal = tokens.check(token, 1.0, node="n2")
    assert isinstance(refusal, Refusal)
    assert (refusal.status, refusal.label) == (403, "token_wrong_node")


@pytest.mark.parametrize(("origin", "host", "label"), [
    ("http://127.0.0.1:abc", "127.0.0.1:8080", "origin_malformed"),
    ("http://[::1", "127.0.0.1:8080", "origin_malformed"),
    ("http://a:99999", "127.0.0.1:8080", "origin_malformed"),
    ("http://127.0.0.1:8080", "a:b", "host_malformed"),
    ("http://127.0.0.1:8080", "[::1", "host_malformed"),
    ("http://127.0.0.1:8080", "h:70000", "host_malformed"),
])
def test_a_malformed_origin_or_host_is_a_400_refusal_never_an_exception(origin, host, label):
    refusal = OriginPolicy([]).check(origin, host, "http")
    assert refusal is not None and refusal.status == 400 and refusal.label == label


def test_ipv6_origins_compare_with_brackets_and_default_ports_dropped():
    assert normalize_origin("HTTP://[::1]:80") == "http://[::1]"
    assert normalize_origin("https://[2001:db8::1]:8443") == "https://[2001:db8::1]:8443"
    assert normalize_origin("null") == "null"
    assert normalize_origin("http://[::1") is None
    assert OriginPolicy([]).check("http://[::1]:8080", "[::1]:8080", "http") is None


def test_a_pinned_public_origin_replaces_the_host_header():
    policy = OriginPolicy([], public_origin="https://game.example")
    assert policy.check("https://game.example:443", "evil.example", "http") is None
    refusal = policy.check("http://evil.example", "evil.example", "http")
    assert refusal is not None and refusal.label == "origin"
    # A malformed Host does not matter once the origin is pinned.
    assert policy.check("https://game.example", "a:b", "http") is None
    with pytest.raises(ValueError):
        OriginPolicy([], public_origin="not a url")
    with pytest.raises(ValueError):
        OriginPolicy(["http://[::1"])


def test_check_upgrade_charges_the_address_before_looking_at_the_origin():
    per_ip = ConnectionsPerIp(cap=0, rate_per_s=1.0, burst=2.0)
    origins = OriginPolicy([])

    def attempt(origin: str | None, now: float) -> str | None:
        refusal = check_upgrade(per_ip=per_ip, origins=origins, peer_ip="10.0.0.1",
                                origin=origin, host="h:1", scheme="http", now=now)
        return refusal.label if refusal else None

    assert attempt("http://[::1", 0.0) == "origin_malformed"
    assert attempt("http://evil.example", 0.0) == "origin"
    assert attempt(None, 0.0) == "ip_rate"  # the bad attempts spent the bucket
    assert attempt(None, 1.0) is None


@given(origin=st.one_of(st.text(max_size=60),
                        st.builds(lambda h, p: f"http://{h}:{p}", st.text(max_size=20),
                                  st.text(max_size=8))),
       host=st.one_of(st.none(), st.text(max_size=40)))
def test_any_origin_or_host_text_is_accepted_or_refused_never_raises(origin, host):
    refusal = OriginPolicy([]).check(origin, host, "http")
    assert refusal is None or (refusal.status in (400, 403) and refusal.label in (
        "origin", "origin_malformed", "host_malformed"))
