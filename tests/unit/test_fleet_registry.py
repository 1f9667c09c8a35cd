"""The registry's rules, written once and run against LocalRegistry and RedisRegistry (a
real redis-server from the session fixture; each test under its own key prefix).

Times are explicit unix milliseconds (a manual clock): reservations and holds expire on
the caller's clock in both implementations. Key leases run on Redis's own clock, so
lease expiry is tested here for LocalRegistry and with real processes in
tests/integration/test_fleet_functional.py.
"""

from __future__ import annotations

import asyncio
import itertools
import secrets
from collections import Counter
from collections.abc import AsyncIterator

import pytest

from server.fleet.model import (
    MatchError,
    NodeState,
    ReserveRequest,
    RoomState,
    SeatRefused,
)
from server.fleet.registry import LocalRegistry, Registry

LEASE = 10_000
TTL = 15_000
KEEP = 60_000
T0 = 1_700_000_000_000
_ids = itertools.count(1)


@pytest.fixture(params=["local", "redis"])
async def registry(request) -> AsyncIterator[Registry]:
    if request.param == "local":
        reg = LocalRegistry()
        yield reg
        return
    from server.fleet.redis_registry import RedisRegistry
    server = request.getfixturevalue("redis_server")
    reg = RedisRegistry(server.url, prefix=f"t{secrets.token_hex(4)}:")
    yield reg
    await reg.close()


def node(name: str, *, cap: int = 4, modes: dict[str, int] | None = None, max_rooms: int = 8,
         draining: bool = False) -> NodeState:
    return NodeState(name, f"ws://{name}.test:1", modes or {"arena": cap}, max_rooms, draining)


def req(mode: str = "arena", now: int = T0, **kw: object) -> ReserveRequest:
    return ReserveRequest(mode=mode, nonce=secrets.token_hex(12),
                          new_room_id=f"{mode}-{next(_ids)}", now_ms=now, token_ttl_ms=TTL,
                          lease_ms=LEASE, **kw)


async def beat(reg: Registry, n: NodeState, rooms: list[RoomState] = (), now: int = T0,
               counted: dict[str, list[str]] | None = None):
    return await reg.refresh(n, list(rooms), counted or {}, now, LEASE, KEEP)


async def test_quick_play_fills_a_room_before_creating_another_on_the_least_loaded_node(
        registry):
    await beat(registry, node("a"))
    await beat(registry, node("b"))
    first = [await registry.reserve(req(), KEEP) for _ in range(4)]
    assert len({r.room for r in first}) == 1 and first[0].created and not first[1].created
    assert first[0].node == "a"  # equal load: the first by id
    fifth = await registry.reserve(req(), KEEP)
    assert fifth.created and fifth.room != first[0].room
    assert fifth.node == "b"  # node a carries the four reserved seats
    assert fifth.url == "ws://b.test:1"


async def test_a_reserved_seat_holds_until_it_expires_then_frees(registry):
    await beat(registry, node("a", cap=2))
    one = await registry.reserve(req(), KEEP)
    await registry.reserve(req(), KEEP)
    third = await registry.reserve(req(), KEEP)
    assert third.room != one.room  # both seats of the first room are held
    rooms = [RoomState(r, "arena", 0, 2, False, T0) for r in (one.room, third.room)]
    await beat(registry, node("a", cap=2), rooms, now=T0 + TTL + 1)
    later = await registry.reserve(req(now=T0 + TTL + 1), KEEP)
    assert later.room == one.room  # the holds expired unused


async def test_a_seat_token_is_consumed_once_and_not_after_it_expires(registry):
    await beat(registry, node("a"))
    r = await registry.reserve(req(), KEEP)
    await registry.consume(r.room, r.nonce, T0 + 1, 5_000, KEEP)
    with pytest.raises(SeatRefused) as used:
        await registry.consume(r.room, r.nonce, T0 + 2, 5_000, KEEP)
    assert used.value.code == "token_used"
    late = await registry.reserve(req(), KEEP)
    with pytest.raises(SeatRefused) as expired:
        await registry.consume(late.room, late.nonce, T0 + TTL, 5_000, KEEP)
    assert expired.value.code == "token_expired"
    with pytest.raises(SeatRefused):
        await registry.consume(r.room, "00" * 12, T0, 5_000, KEEP)


async def test_a_consumed_seat_counts_until_a_refresh_counts_the_player(registry):
    await beat(registry, node("a", cap=2))
    r1 = await registry.reserve(req(), KEEP)
    r2 = await registry.reserve(req(), KEEP)
    await registry.consume(r1.room, r1.nonce, T0 + 1, 5_000, KEEP)
    room = RoomState(r1.room, "arena", 0, 2, False, T0)
    # A refresh whose player count does not include the consumed seat yet: still held.
    result = await beat(registry, node("a", cap=2), [room], now=T0 + 2)
    assert result.reserved == {r1.room: 2}
    other = await registry.reserve(req(now=T0 + 3), KEEP)
    assert other.room != r1.room
    # The player joined and the refresh says so: the hold ends, the count carries it.
    counted = RoomState(r1.room, "arena", 1, 2, False, T0)
    result = await beat(registry, node("a", cap=2), [counted], now=T0 + 4,
                        counted={r1.room: [r1.nonce]})
    assert result.reserved[r1.room] == 1  # r2's reservation
    listed = {i.room: i for i in await registry.list_rooms(T0 + 5)}
    assert (listed[r1.room].players, listed[r1.room].free) == (1, 0)
    assert r2.room == r1.room


async def test_a_retried_request_gets_the_same_seat_and_never_a_second_room(registry):
    await beat(registry, node("a"))
    first = await registry.reserve(req(request_id="abc"), KEEP)
    again = await registry.reserve(req(request_id="abc"), KEEP)
    assert again == first
    rooms = await registry.list_rooms(T0)
    assert [(r.room, r.free) for r in rooms] == [(first.room, 3)]


async def test_private_rooms_are_not_listed_but_joinable_by_id_until_full(registry):
    await beat(registry, node("a", cap=2))
    created = await registry.reserve(req(create=True), KEEP)
    assert created.private and created.created
    assert await registry.list_rooms(T0) == []
    quick = await registry.reserve(req(), KEEP)
    assert quick.room != created.room  # quick play never lands in a private room
    friend = await registry.reserve(req(room=created.room), KEEP)
    assert friend.room == created.room and friend.private
    with pytest.raises(MatchError) as full:
        await registry.reserve(req(room=created.room), KEEP)
    assert (full.value.status, full.value.code) == (409, "room_full")
    with pytest.raises(MatchError) as missing:
        await registry.reserve(req(room="arena-none"), KEEP)
    assert (missing.value.status, missing.value.code) == (404, "no_such_room")


async def test_modes_are_respected_and_an_unknown_mode_is_404(registry):
    await beat(registry, node("a", modes={"arena": 4}))
    await beat(registry, node("b", modes={"duel": 2}))
    duel = await registry.reserve(req("duel"), KEEP)
    arena = await registry.reserve(req("arena"), KEEP)
    assert (duel.node, duel.mode, arena.node, arena.mode) == ("b", "duel", "a", "arena")
    with pytest.raises(MatchError) as unknown:
        await registry.reserve(req("ctf"), KEEP)
    assert (unknown.value.status, unknown.value.code) == (404, "unknown_mode")


async def test_a_draining_node_gets_no_new_seat_or_room(registry):
    await beat(registry, node("a"))
    await beat(registry, node("b"))
    r = await registry.reserve(req(), KEEP)
    assert r.node == "a"
    room = RoomState(r.room, "arena", 1, 4, False, T0)
    await beat(registry, node("a", draining=True), [room])
    nxt = await registry.reserve(req(), KEEP)
    assert nxt.node == "b" and nxt.created
    with pytest.raises(MatchError) as closing:
        await registry.reserve(req(room=r.room), KEEP)
    assert closing.value.code == "room_closing"
    await beat(registry, node("b", draining=True))
    with pytest.raises(MatchError) as full:
        await registry.reserve(req(), KEEP)
    assert (full.value.status, full.value.code) == (503, "fleet_full")


async def test_a_node_creates_the_rooms_assigned_to_it_and_retires_only_empty_ones(registry):
    await beat(registry, node("a"))
    r = await registry.reserve(req(), KEEP)
    result = await beat(registry, node("a"))
    assert result.assigned == [(r.room, "arena", False)]
    assert not await registry.retire("a", r.room, T0 + 1)  # a seat is still reserved
    assert await registry.retire("a", r.room, T0 + TTL + 1)  # it expired: gone
    assert (await beat(registry, node("a"), now=T0 + TTL + 2)).assigned == []
    assert await registry.list_rooms(T0 + TTL + 2) == []


async def test_a_node_that_is_full_of_rooms_gets_no_new_room(registry):
    await beat(registry, node("a", cap=1, max_rooms=2))
    await registry.reserve(req(), KEEP)
    await registry.reserve(req(), KEEP)
    with pytest.raises(MatchError) as full:
        await registry.reserve(req(), KEEP)
    assert full.value.code == "fleet_full"


async def test_deregister_removes_the_node_and_its_rooms(registry):
    await beat(registry, node("a"))
    r = await registry.reserve(req(), KEEP)
    await beat(registry, node("a"), [RoomState(r.room, "arena", 1, 4, False, T0)])
    assert [i.room for i in await registry.list_rooms(T0)] == [r.room]
    await registry.deregister("a")
    assert await registry.list_rooms(T0) == [] and await registry.list_nodes(T0) == []


async def test_the_fleet_view_lists_live_nodes_with_every_room_private_ones_too(registry):
    await beat(registry, node("a", modes={"arena": 4, "duel": 2}))
    await beat(registry, node("b", draining=True), now=T0 + 500)
    public = await registry.reserve(req(), KEEP)
    private = await registry.reserve(req("duel", create=True), KEEP)
    await beat(registry, node("a", modes={"arena": 4, "duel": 2}),
               [RoomState(public.room, "arena", 2, 4, False, T0),
                RoomState(private.room, "duel", 0, 2, True, T0)], now=T0 + 1000)
    nodes = {n.node: n for n in await registry.list_nodes(T0 + 1500)}
    assert set(nodes) == {"a", "b"}
    a, b = nodes["a"], nodes["b"]
    assert (a.url, a.draining, a.modes, a.max_rooms) == ("ws://a.test:1", False,
                                                         {"arena": 4, "duel": 2}, 8)
    assert a.refreshed_ms == T0 + 1000 and b.refreshed_ms == T0 + 500 and b.draining
    rooms = {r.room: r for r in a.rooms}
    assert set(rooms) == {public.room, private.room} and b.rooms == []
    # Players as reported; the two reservations (one each) are not free.
    assert (rooms[public.room].players, rooms[public.room].free) == (2, 1)
    assert rooms[private.room].private and rooms[private.room].free == 1
    assert (a.players, a.capacity) == (2, 6)
    view = a.to_json(T0 + 3000)
    assert view["refreshed_age_s"] == 2.0 and len(view["rooms"]) == 2
    if isinstance(registry, LocalRegistry):  # (Redis expires keys on its own clock)
        # A node whose lease ran out is not in the view.
        assert {n.node for n in await registry.list_nodes(T0 + 500 + LEASE)} == {"a"}


async def test_the_first_nodes_secret_is_the_fleets(registry):
    assert await registry.shared_secret(b"x" * 32) == b"x" * 32
    assert await registry.shared_secret(b"y" * 32) == b"x" * 32


async def test_concurrent_reservations_never_overfill_a_room_nor_duplicate_one(registry):
    """The Lua script's invariant: 100 concurrent requests (each sent twice, as a retry
    would) against 2 nodes of capacity 8: every room holds at most 8, one request id
    gives one reservation."""
    await beat(registry, node("a", cap=8, max_rooms=32))
    await beat(registry, node("b", cap=8, max_rooms=32))
    requests = [req(request_id=f"req-{i}") for i in range(100)]
    answers = await asyncio.gather(*(registry.reserve(r, KEEP) for r in requests + requests))
    by_request = {}
    for r, a in zip(requests + requests, answers, strict=True):
        assert by_request.setdefault(r.request_id, a) == a
    per_room = Counter(a.room for a in by_request.values())
    assert max(per_room.values()) <= 8
    assert len(per_room) == 13  # ceil(100 / 8): full rooms, no spare ones
    assert {a.node for a in by_request.values()} == {"a", "b"}
    listed = await registry.list_rooms(T0)
    assert sum(8 - r.free for r in listed) == 100 and min(r.free for r in listed) >= 0


async def test_local_leases_expire_with_the_clock():
    reg = LocalRegistry()
    await beat(reg, node("a"))
    r = await reg.reserve(req(), KEEP)
    await beat(reg, node("a"), [RoomState(r.room, "arena", 1, 4, False, T0)])
    assert [i.room for i in await reg.list_rooms(T0 + LEASE - 1)] == [r.room]
    assert await reg.list_rooms(T0 + LEASE) == []  # the node stopped refreshing
    with pytest.raises(MatchError) as gone:
        await reg.reserve(req(now=T0 + LEASE), KEEP)
    assert gone.value.code == "unknown_mode"  # no live node offers it


async def test_a_refresh_answers_the_fleets_secret_the_first_one_asserted(registry):
    first = await registry.refresh(node("a"), [], {}, T0, LEASE, KEEP, secret=b"x" * 32)
    second = await registry.refresh(node("b"), [], {}, T0, LEASE, KEEP, secret=b"y" * 32)
    assert first.secret == second.secret == b"x" * 32
    assert (await registry.refresh(node("c"), [], {}, T0, LEASE, KEEP)).secret == b""


async def test_rooms_assigned_but_not_created_yet_count_towards_max_rooms(registry):
    # A refresh that reported only the rooms the node had created let `create` bursts
    # put more than max_rooms on it (the probe saw 13 rooms on a node of 8).
    n = node("a", max_rooms=3)
    await beat(registry, n)
    made = [await registry.reserve(req(create=True), KEEP) for _ in range(3)]
    with pytest.raises(MatchError) as full:
        await registry.reserve(req(create=True), KEEP)
    assert full.value.code == "fleet_full"
    result = await beat(registry, n)  # the node has not created them yet
    assert sorted(room for room, _, _ in result.assigned) == sorted(m.room for m in made)
    with pytest.raises(MatchError) as still:
        await registry.reserve(req(create=True), KEEP)
    assert still.value.code == "fleet_full"
