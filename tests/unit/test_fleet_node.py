"""FleetNode over the in-process registry, with a manual wall clock and a plain room host:
the seat check at the upgrade, counting consumed seats, registry loss and recovery, drain.
"""

from __future__ import annotations

import pytest
from prometheus_client import CollectorRegistry

from server.fleet.metrics import FleetMetrics
from server.fleet.model import MatchError, RegistryUnavailable, RoomState
from server.fleet.node import FleetConfig, FleetNode
from server.fleet.registry import LocalRegistry
from server.handshake import Refusal, SeatClaim, SeatTokens
from server.metrics import parse_metrics

SECRET = b"k" * 32


class Rooms:
    """A room host: rooms as plain records (the gateway's lobby in the real server)."""

    def __init__(self) -> None:
        self.rooms: dict[str, dict] = {}
        self.unseated = lambda room: 0

    def room_states(self) -> list[RoomState]:
        return [RoomState(r, v["mode"], v["seated"] + self.unseated(r), v["capacity"],
                          v["private"], 0) for r, v in self.rooms.items()]

    def ensure_room(self, room: str, mode: str, private: bool) -> None:
        self.rooms.setdefault(room, {"mode": mode, "seated": 0, "capacity": 2,
                                     "private": private})


class Flaky:
    """The real LocalRegistry behind a switch that makes every call fail (Redis gone)."""

    def __init__(self, inner: LocalRegistry) -> None:
        self.inner = inner
        self.down = False

    def __getattr__(self, name: str):
        method = getattr(self.inner, name)

        async def call(*args, **kwargs):
            if self.down:
                raise RegistryUnavailable("redis at redis://test: ConnectionError: refused")
            return await method(*args, **kwargs)

        return call


class Clock:
    def __init__(self) -> None:
        self.t = 1_700_000_000.0

    def __call__(self) -> float:
        return self.t


def make_node(registry, name: str = "n1", clock: Clock | None = None
              ) -> tuple[FleetNode, Rooms, CollectorRegistry]:
    rooms = Rooms()
    prom = CollectorRegistry()
    node = FleetNode(FleetConfig(name, f"ws://{name}:1", {"arena": 2}, token_ttl_s=15.0),
                     registry, SeatTokens(SECRET, 15.0), rooms, FleetMetrics(prom),
                     wall=clock or Clock())
    rooms.unseated = node.unseated
    return node, rooms, prom


async def test_a_matchmade_token_is_admitted_once_on_its_node_and_counts_until_seated():
    reg = LocalRegistry()
    clock = Clock()
    node, rooms, prom = make_node(reg, clock=clock)
    assert await node.refresh_once()
    res, token = await node.matchmake({"mode": "arena"})
    claim = await node.admit(token)
    assert isinstance(claim, SeatClaim) and claim.room == res.room
    assert res.room in rooms.rooms  # created on this node at the upgrade
    again = await node.admit(token)
    assert isinstance(again, Refusal) and again.label == "token_used"
    # Consumed but not seated: the room reports it as a player, and the hold ends.
    assert rooms.room_states()[0].players == 1
    await node.refresh_once()
    assert node.reserved == {res.room: 0}
    node.seated(claim)
    rooms.rooms[res.room]["seated"] = 1
    assert rooms.room_states()[0].players == 1
    second, _ = await node.matchmake({})
    assert second.room == res.room  # one seat of two left
    third, _ = await node.matchmake({})
    assert third.room != res.room
    samples = parse_metrics(_render(prom))
    assert samples['tickwire_matchmake_total{result="created"}'] == 2
    assert samples['tickwire_matchmake_total{result="joined"}'] == 1


async def test_a_token_for_another_node_is_refused_there():
    reg = LocalRegistry()
    n1, _, _ = make_node(reg, "n1")
    n2, _, _ = make_node(reg, "n2")
    await n1.refresh_once()
    await n2.refresh_once()
    res, token = await n1.matchmake({})
    other = n2 if res.node == "n1" else n1
    refusal = await other.admit(token)
    assert isinstance(refusal, Refusal) and (refusal.status, refusal.label) == (
        403, "token_wrong_node")


async def test_a_socket_that_leaves_before_joining_frees_its_seat_at_the_next_refresh():
    node, rooms, _ = make_node(LocalRegistry())
    await node.refresh_once()
    _, token = await node.matchmake({})
    claim = await node.admit(token)
    node.released(claim)
    await node.refresh_once()
    assert rooms.room_states()[0].players == 0 and node.reserved == {claim.room: 0}


async def test_without_the_registry_matchmaking_is_503_and_recovery_reasserts_the_rooms():
    inner = LocalRegistry()
    flaky = Flaky(inner)
    clock = Clock()
    node, _, prom = make_node(flaky, clock=clock)
    await node.refresh_once()
    res, token = await node.matchmake({})
    assert isinstance(await node.admit(token), SeatClaim)
    flaky.down = True
    inner.rooms.clear()  # a Redis that restarts comes back empty
    inner.nodes.clear()
    assert not await node.refresh_once()
    with pytest.raises(MatchError) as refused:
        await node.matchmake({})
    assert refused.value.status == 503 and refused.value.code == "registry_unavailable"
    assert "redis" in refused.value.message
    assert node.health()["reachable"] is False
    fresh, _ = SeatTokens(SECRET).issue("n1", res.room, "arena", clock())
    refusal = await node.admit(fresh)
    assert isinstance(refusal, Refusal) and refusal.status == 503
    flaky.down = False
    assert await node.refresh_once()
    assert [r.room for r in await inner.list_rooms(int(clock() * 1000))] == [res.room]
    samples = parse_metrics(_render(prom))
    assert samples["tickwire_redis_errors_total"] == 1  # one failed refresh; no call after


async def test_a_draining_node_gets_no_new_seat_and_refuses_new_sockets():
    reg = LocalRegistry()
    n1, _, _ = make_node(reg, "n1")
    n2, _, _ = make_node(reg, "n2")
    await n1.refresh_once()
    await n2.refresh_once()
    first, token = await n1.matchmake({})
    assert first.node == "n1"  # equal load: the first by id
    await n1.drain()
    seats = [(await n2.matchmake({}))[0].node for _ in range(3)]
    assert set(seats) == {"n2"}
    refusal = await n1.admit(token)
    assert isinstance(refusal, Refusal) and (refusal.status, refusal.label) == (503, "draining")


@pytest.mark.parametrize("body, message", [
    ([], "JSON object"), ({"mode": ""}, "mode"), ({"mode": "a b"}, "mode"),
    ({"room": 5}, "room"), ({"create": "yes"}, "create"), ({"extra": 1}, "unknown"),
    ({"room": "r", "create": True}, "either"), ({"request_id": "x" * 49}, "request_id"),
])
async def test_bad_matchmake_requests_are_400_with_the_field_named(body, message):
    node, _, prom = make_node(LocalRegistry())
    await node.refresh_once()
    with pytest.raises(MatchError) as bad:
        await node.matchmake(body)
    assert bad.value.status == 400 and message in bad.value.message
    assert parse_metrics(_render(prom))['tickwire_matchmake_total{result="bad_request"}'] == 1


def _render(registry: CollectorRegistry) -> str:
    from prometheus_client.exposition import generate_latest
    return generate_latest(registry).decode()


async def test_nodes_that_asserted_different_secrets_converge_on_the_registrys():
    reg = LocalRegistry()
    n1, _, _ = make_node(reg, "n1")
    n2, _, _ = make_node(reg, "n2")
    n1.share_secret = n2.share_secret = True
    n2.tokens = n2.tokens.with_secret(b"z" * 32)  # as if it had started with its own
    await n1.refresh_once()
    await n2.refresh_once()
    assert n2.tokens.secret == n1.tokens.secret == SECRET
    res, token = await n2.matchmake({})
    owner = n1 if res.node == "n1" else n2
    assert isinstance(await owner.admit(token), SeatClaim)


async def test_a_disposed_room_is_retired_and_not_created_again_by_the_same_refresh():
    # The server disposes of an empty room; the refresh that retires it must not hand
    # it back as "assigned" (the soak found rooms re-created forever, never settling).
    reg = LocalRegistry()
    node, rooms, _ = make_node(reg)
    rooms.ensure_room("r1", "arena", False)
    assert await node.refresh_once()
    del rooms.rooms["r1"]
    node.room_disposed("r1")
    assert await node.refresh_once()
    assert "r1" not in rooms.rooms
    assert await node.refresh_once()
    assert "r1" not in rooms.rooms
    assert [r for r in await reg.list_rooms(node.now_ms()) if r.room == "r1"] == []
