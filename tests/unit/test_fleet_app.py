"""The fleet's aiohttp glue without a socket: GET /modes' answer and its cache (a manual
clock), and the admin page's link to another node."""

from __future__ import annotations

from dataclasses import dataclass, field

from server.fleet.app import MODES_CACHE_S, admin_url, offered_modes


@dataclass
class Capacity:
    max_players: int


@dataclass
class OneServer:
    """The part of a gateway GET /modes reads, for a server without Redis."""

    modes: dict[str, Capacity] = field(default_factory=dict)
    default_mode: str = "arena"
    fleet: None = None


async def test_modes_list_the_default_first_then_by_name_with_capacities():
    server = OneServer({"zone": Capacity(16), "arena": Capacity(32), "duel": Capacity(2)})
    assert await offered_modes(server, {}, now=0.0) == {
        "default": "arena",
        "modes": [{"mode": "arena", "capacity": 32}, {"mode": "duel", "capacity": 2},
                  {"mode": "zone", "capacity": 16}]}


async def test_modes_are_built_at_most_once_per_cache_period():
    server = OneServer({"arena": Capacity(32)})
    cache: dict[str, object] = {}
    first = await offered_modes(server, cache, now=100.0)
    server.modes["duel"] = Capacity(2)  # a change is seen only when the copy is old
    assert await offered_modes(server, cache, now=100.0 + MODES_CACHE_S / 2) == first
    later = await offered_modes(server, cache, now=100.0 + MODES_CACHE_S)
    assert [m["mode"] for m in later["modes"]] == ["arena", "duel"]


def test_admin_links_follow_the_public_url():
    assert admin_url("ws://10.0.0.7:8080") == "http://10.0.0.7:8080/admin"
    assert admin_url("wss://play.example.com/n1") == "https://play.example.com/n1/admin"
    assert admin_url("wss://play.example.com/n1/") == "https://play.example.com/n1/admin"
    assert admin_url("") == "" and admin_url("http://x") == ""


async def test_peer_seats_are_merged_and_a_silent_peer_is_named():
    """`with_peer_seats` against real aiohttp servers on 127.0.0.1: one answers its rooms
    with seats, one answers 500, and one port has nobody listening."""
    from aiohttp import web
    from aiohttp.test_utils import TestServer

    from server.fleet.app import with_peer_seats
    from server.nodeproc import free_port

    seen_auth = []

    async def fleet(request: web.Request) -> web.Response:
        seen_auth.append((request.headers.get("Authorization"), request.query.get("local")))
        return web.json_response({"nodes": [{"self": True, "rooms": [
            {"room": "r1", "players": 1, "seats": [{"player_id": 4, "name": "ann"}]}]}]})

    async def broken(request: web.Request) -> web.Response:
        return web.json_response({"error": "no"}, status=500)

    good_app, bad_app = web.Application(), web.Application()
    good_app.router.add_get("/admin/fleet", fleet)
    bad_app.router.add_get("/admin/fleet", broken)
    async with TestServer(good_app, host="127.0.0.1") as good, \
            TestServer(bad_app, host="127.0.0.1") as bad:
        def node(name: str, port: int) -> dict:
            return {"node": name, "self": False, "players": 0,
                    "admin_url": f"http://127.0.0.1:{port}/admin",
                    "rooms": [{"room": "r1", "players": 0}]}

        view = {"nodes": [{"node": "me", "self": True, "rooms": []}, node("good", good.port),
                          node("bad", bad.port), node("gone", free_port())]}
        out = await with_peer_seats(view, "Bearer t0ken")
    by = {n["node"]: n for n in out["nodes"]}
    assert by["good"]["rooms"][0]["seats"] == [{"player_id": 4, "name": "ann"}]
    assert by["good"]["players"] == 1 and "seats_error" not in by["good"]
    assert seen_auth == [("Bearer t0ken", "1")]
    assert by["bad"]["seats_error"] == "that node answered 500"
    assert by["gone"]["seats_error"].startswith("unreachable")
    assert "seats" not in by["bad"]["rooms"][0] and "seats" not in by["gone"]["rooms"][0]
