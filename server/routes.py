"""The HTTP JSON routes: /healthz, /rooms, /metrics, /matchmake, /modes, /admin/fleet.

They read the server through `EdgeSource`, a narrow view (rooms, counts, the drain flag,
the clock), never the gateway's internals. What they cost the game loop is bounded:
the JSON of /healthz and /rooms is built at most once per tick (`JsonCache`, keyed on
what the body shows: room ticks, seat and connection counts, the drain flag), so clients
polling them in a loop cost a dictionary lookup, not a walk over every seat.

/rooms lists seats with their RTT; player names are shown only to a request carrying the
admin token (`Authorization: Bearer ...`), or to anyone when `public_player_names` is set
(`--public-player-names`). /healthz answers 503 with `"status": "draining"` from the
moment a drain starts until the listener closes, so a load balancer stops routing new
players here before the port goes away.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import json
import os
from collections.abc import Callable, Hashable, Sized
from typing import TYPE_CHECKING, Protocol

from aiohttp import web

from server.fleet.app import (
    fleet_listing,
    fleet_view,
    forward_kick,
    merge_rooms,
    offered_modes,
    with_peer_seats,
)
from server.fleet.app import handle_matchmake as fleet_matchmake
from server.fleet.guard import MatchmakeGuard, MatchmakeLimits

if TYPE_CHECKING:
    from server.clock import Clock
    from server.fleet.node import FleetNode
    from server.lobby import Lobby
    from server.metrics import Metrics
    from server.tickloop import TickSchedule
    from sim.params import Params

__all__ = ["HTTP_CACHE_KEY", "EdgeSource", "JsonCache", "add_http_routes", "bearer_matches",
           "process_stats"]


class EdgeConfig(Protocol):
    """The part of `server.config.GatewayConfig` the routes read."""

    @property
    def matchmake(self) -> MatchmakeLimits: ...


class EdgeSource(Protocol):
    """What the HTTP routes read. `Gateway` provides it; so can a test double."""

    lobby: Lobby
    metrics: Metrics
    clock: Clock
    started_at: float
    draining: bool
    connections: Sized
    fleet: FleetNode | None
    modes: dict[str, Params]  # mode name -> its parameters (GET /modes)
    default_mode: str
    config: EdgeConfig

    def schedule_for(self, room_id: str) -> TickSchedule | None: ...


class JsonCache:
    """One JSON body per key: `get(key, build)` calls `build` only when the key changed.

    The key is what the body depends on (e.g. each room's tick number): while it stays
    the same, every request gets the same bytes.
    """

    def __init__(self) -> None:
        self._bodies: dict[str, tuple[Hashable, bytes]] = {}
        self.builds = 0  # how many bodies were built (tests, and a measure of the saving)

    def get(self, name: str, key: Hashable, build: Callable[[], object]) -> bytes:
        cached = self._bodies.get(name)
        if cached is not None and cached[0] == key:
            return cached[1]
        body = json.dumps(build(), separators=(",", ":")).encode()
        self._bodies[name] = (key, body)
        self.builds += 1
        return body


HTTP_CACHE_KEY = web.AppKey("http_json_cache", JsonCache)


def bearer_matches(request: web.Request, token: str | None) -> bool:
    """Whether the request carries `Authorization: Bearer <token>` (constant-time)."""
    if not token:
        return False
    scheme, _, given = request.headers.get("Authorization", "").partition(" ")
    return scheme.lower() == "bearer" and hmac.compare_digest(given.strip().encode(),
                                                              token.encode())


def process_stats() -> dict[str, float]:
    """RSS, open file descriptors and asyncio tasks: what a soak test watches for leaks."""
    stats: dict[str, float] = {"asyncio_tasks": len(asyncio.all_tasks())}
    with contextlib.suppress(OSError):
        stats["open_fds"] = len(os.listdir("/proc/self/fd"))
    with contextlib.suppress(OSError), open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                stats["rss_mb"] = round(int(line.split()[1]) / 1024, 1)
    return stats


def _json(body: bytes, status: int = 200) -> web.Response:
    return web.Response(body=body, status=status, content_type="application/json")


def add_http_routes(app: web.Application, source: EdgeSource, *,
                    admin_token: str | None = None,
                    public_player_names: bool = False) -> JsonCache:
    """Register /healthz, /rooms, /metrics, POST /matchmake, /modes and (with an admin
    token) /admin/fleet; returns their cache."""
    cache = app[HTTP_CACHE_KEY] = JsonCache()
    modes_cache: dict[str, object] = {}

    def ticks_key() -> tuple:
        rooms = source.lobby.rooms
        return (source.draining, len(source.connections),
                tuple((r.room_id, r.tick_number, len(r.seats)) for r in rooms.values()))

    def health() -> dict[str, object]:
        return {
            "status": "draining" if source.draining else "ok",
            "registry": source.fleet.health() if source.fleet is not None else None,
            "rooms": len(source.lobby.rooms),
            "players": source.lobby.player_count,
            "connections": len(source.connections),
            "tick_rate": source.lobby.params.tick_rate,
            "uptime_s": round(source.clock.now() - source.started_at, 3),
            "process": process_stats(),
        }

    def rooms(with_names: bool) -> list[dict[str, object]]:
        out = []
        for room in source.lobby.rooms.values():
            schedule = source.schedule_for(room.room_id)
            stats = schedule.stats() if schedule else {}
            seats = []
            for s in room.seats.values():
                seat: dict[str, object] = {"player_id": s.player_id, "entity": s.entity,
                                           "connected": s.connected,
                                           "rtt_ms": round(s.rtt_ms, 2)}
                if with_names:
                    seat["name"] = s.name
                seats.append(seat)
            out.append({
                "id": room.room_id,
                "players": len(room.seats),
                "connected": sum(1 for s in room.seats.values() if s.connected),
                "capacity": room.capacity,
                "tick": room.tick_number,
                "tick_rate": room.params.tick_rate,
                "tick_duration_p99_ms": round(stats.get("duration_p99_s", 0.0) * 1000, 3),
                "overruns": stats.get("overruns", 0),
                "hitscan": room.shot_stats.summary(),
                "seats": seats,
            })
        return out

    async def handle_healthz(request: web.Request) -> web.Response:
        # Whole seconds of uptime in the key: an idle server (no room ticking) still
        # shows its uptime and process figures moving.
        key = (ticks_key(), int(source.clock.now()))
        body = cache.get("healthz", key, health)
        return _json(body, status=503 if source.draining else 200)

    async def handle_rooms(request: web.Request) -> web.Response:
        with_names = public_player_names or bearer_matches(request, admin_token)
        name = "fleet-rooms+names" if with_names else "fleet-rooms"
        # The fleet's public rooms (from the registry, itself fetched at most once per
        # refresh beat); this node's carry the detail. The answer is cached whole on both:
        # re-parsing and re-serialising it per request cost ~1.5 ms of the game loop's
        # CPU for 32 rooms, ten times a /healthz.
        listed = await fleet_listing(source)

        def build() -> list[dict]:
            local = {room["id"]: room for room in rooms(with_names)}
            return merge_rooms(source, local, listed)

        return _json(cache.get(name, (ticks_key(), tuple(listed)), build))

    async def handle_metrics(request: web.Request) -> web.Response:
        body, content_type = source.metrics.render()
        response = web.Response(body=body)
        response.headers["Content-Type"] = content_type
        return response

    guard = MatchmakeGuard(source.config.matchmake)

    async def handle_matchmake(request: web.Request) -> web.Response:
        """POST /matchmake: a seat in the fleet and its seat token (server.fleet)."""
        return await fleet_matchmake(source, request, guard)

    async def handle_modes(request: web.Request) -> web.Response:
        """GET /modes: what the start screen's mode picker offers."""
        return web.json_response(await offered_modes(source, modes_cache,
                                                         source.clock.now()))

    async def handle_admin_fleet(request: web.Request) -> web.Response:
        """GET /admin/fleet (admin token): nodes, load, and every room, private ones too."""
        if not bearer_matches(request, admin_token):
            return web.json_response({"error": "missing or wrong admin token"}, status=401,
                                     headers={"WWW-Authenticate": "Bearer"})
        local = {room["id"]: room for room in json.loads(
            cache.get("rooms+names", ticks_key(), lambda: rooms(True)))}
        if request.query.get("local") == "1":  # a peer asks for this node's rooms only
            return web.json_response(await fleet_view(source, local, local_only=True))
        view = await fleet_view(source, local)
        return web.json_response(await with_peer_seats(
            view, request.headers["Authorization"]))

    async def handle_admin_node_kick(request: web.Request) -> web.Response:
        """POST /admin/nodes/{node}/rooms/{room}/kick/{player}: a kick in another node's
        room, forwarded to that node (the admin page talks to one node only)."""
        if not bearer_matches(request, admin_token):
            return web.json_response({"error": "missing or wrong admin token"}, status=401,
                                     headers={"WWW-Authenticate": "Bearer"})
        m = request.match_info
        status, answer = await forward_kick(source, m["node"], m["room"], m["player"],
                                            request.query_string,
                                            request.headers["Authorization"])
        return web.json_response(answer, status=status)

    app.router.add_get("/healthz", handle_healthz)
    app.router.add_get("/rooms", handle_rooms)
    app.router.add_get("/metrics", handle_metrics)
    app.router.add_post("/matchmake", handle_matchmake)
    app.router.add_get("/modes", handle_modes)
    if admin_token:  # as the other admin routes: none without a token
        app.router.add_get("/admin/fleet", handle_admin_fleet)
        app.router.add_post("/admin/nodes/{node}/rooms/{room}/kick/{player}",
                            handle_admin_node_kick)
    return cache
