"""The aiohttp glue: the node's lifetime, POST /matchmake, the fleet's room list.

`fleet_ctx` (a cleanup_ctx) opens the registry, agrees on the seat-token secret, registers
the node and starts its loop; at shutdown `drain_first` (the first on_shutdown handler)
marks the node draining in the registry before the gateway drains, and the context's
exit stops the loop and deregisters the node.
"""

from __future__ import annotations

import asyncio
import json
import logging
import secrets
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Protocol

from aiohttp import web

from server.clock import Clock
from server.fleet.guard import MAX_MATCHMAKE_BODY, MatchmakeGuard, retry_after
from server.fleet.metrics import FleetMetrics
from server.fleet.model import MatchError, RegistryUnavailable, RoomInfo, RoomState
from server.fleet.node import FleetConfig, FleetNode, new_node_id
from server.fleet.registry import LocalRegistry, Registry
from server.handshake import OriginPolicy, SeatTokens, address_key
from server.lobby import Lobby
from server.metrics import Metrics
from sim.params import Params

log = logging.getLogger("tickwire.fleet")


@dataclass(frozen=True, slots=True)
class FleetSettings:
    """How this server takes part in a fleet. Durations in seconds.

    `redis_url` None: the in-process registry (a fleet of one). `public_url`: the
    ws(s)://host:port clients reach this node at ("" = the Host of each request, which
    is right for a single server)."""

    redis_url: str | None = None
    public_url: str = ""
    node_id: str = ""
    redis_prefix: str = "tw:"
    lease_s: float = 10.0
    refresh_s: float = 2.0
    redis_timeout_s: float = 1.0
    startup_timeout_s: float = 10.0


class GatewaySettings(Protocol):
    """The part of `server.gateway.GatewayConfig` the fleet reads."""

    join_secret: bytes | None
    join_token_ttl_s: float
    max_rooms: int


class Gateway(Protocol):
    """What the fleet needs from the server it runs in (`server.gateway.Gateway`; not
    imported, so the dependency points one way)."""

    lobby: Lobby
    metrics: Metrics
    modes: dict[str, Params]
    default_mode: str
    fleet: FleetNode | None
    config: GatewaySettings
    clock: Clock
    origins: OriginPolicy
    wall_clock: Clock

    def ensure_room(self, room_id: str, mode: str, private: bool) -> object: ...


class FleetStartError(RuntimeError):
    """The node could not join its fleet at startup (the message says why)."""


class GatewayRooms:
    """`RoomHost` over the gateway's lobby."""

    def __init__(self, gateway: Gateway, unseated: Callable[[str], int]) -> None:
        self.gateway = gateway
        self.unseated = unseated

    def room_states(self) -> list[RoomState]:
        lobby = self.gateway.lobby
        default = self.gateway.default_mode
        out = []
        for room_id, room in lobby.rooms.items():
            mode, private, created_ms = lobby.meta.get(room_id, (default, False, 0))
            out.append(RoomState(room_id, mode, len(room.seats) + self.unseated(room_id),
                                 room.capacity, private, created_ms))
        return out

    def ensure_room(self, room: str, mode: str, private: bool) -> None:
        self.gateway.ensure_room(room, mode, private)


def _secret_for(settings: FleetSettings, configured: bytes | None) -> bytes:
    return configured if configured is not None else secrets.token_bytes(32)


def fleet_ctx(gateway: Gateway, settings: FleetSettings
              ) -> Callable[[web.Application], AsyncIterator[None]]:
    """The node's lifetime as an aiohttp cleanup_ctx."""

    async def ctx(app: web.Application) -> AsyncIterator[None]:
        config = gateway.config
        registry: Registry
        share = False
        secret = _secret_for(settings, config.join_secret)
        if settings.redis_url:
            from server.fleet.redis_registry import RedisRegistry
            registry = RedisRegistry(settings.redis_url, prefix=settings.redis_prefix,
                                     timeout_s=settings.redis_timeout_s)
            if config.join_secret is None:
                share = True
                secret = await _shared_secret(registry, secret, settings)
        else:
            registry = LocalRegistry()
        fleet_config = FleetConfig(
            node_id=settings.node_id or new_node_id(), public_url=settings.public_url,
            modes={name: params.max_players for name, params in gateway.modes.items()},
            max_rooms=config.max_rooms, lease_s=settings.lease_s,
            refresh_s=settings.refresh_s, token_ttl_s=config.join_token_ttl_s)
        metrics = FleetMetrics(gateway.metrics.registry)
        wall = gateway.wall_clock
        node = FleetNode(fleet_config, registry,
                         SeatTokens(secret, config.join_token_ttl_s, wall),
                         GatewayRooms(gateway, lambda room: 0), metrics,
                         kind="redis" if settings.redis_url else "local", share_secret=share,
                         wall=wall.now)
        node.host = GatewayRooms(gateway, node.unseated)
        gateway.fleet = node
        await node.start()
        log.log(node.log_level, "fleet node started", extra={"node": fleet_config.node_id,
                                               "registry": node.kind,
                                               "public_url": settings.public_url,
                                               "modes": list(fleet_config.modes)})
        try:
            yield
        finally:
            await node.stop()

    return ctx


async def _shared_secret(registry: Registry, candidate: bytes,
                         settings: FleetSettings) -> bytes:
    """The fleet's seat-token secret from Redis (the first node's wins); bounded wait."""
    deadline = time.monotonic() + settings.startup_timeout_s
    while True:
        try:
            return await registry.shared_secret(candidate)
        except RegistryUnavailable as exc:
            if time.monotonic() > deadline:
                raise FleetStartError(f"cannot join the fleet: {exc}") from exc
            await asyncio.sleep(0.25)


async def drain_first(gateway: Gateway) -> None:
    """Mark the node draining in the registry before the gateway drains."""
    if gateway.fleet is not None:
        await gateway.fleet.drain()


def _ws_base(request: web.Request) -> str:
    scheme = "wss" if request.scheme == "https" else "ws"
    return f"{scheme}://{request.host}"


async def handle_matchmake(gateway: Gateway, request: web.Request,
                           guard: MatchmakeGuard | None = None) -> web.Response:
    """POST /matchmake: reserve a seat; the answer says where to connect with which token.

    Refused before the registry is asked: over the caller's per-address rate (429,
    `Retry-After`), from a browser page of another origin (403, the /ws origin rule), a
    body over `MAX_MATCHMAKE_BODY` (413), a body that is not JSON or is
    nested too deeply (400). Each refusal is one log line and counted in
    `tickwire_matchmake_total{result}`."""
    node = gateway.fleet
    if node is None:
        return web.json_response({"error": "starting", "message": "server starting"},
                                 status=503)
    ip = request.remote or "unknown"
    now = gateway.clock.now()
    if guard is not None and (limited := guard.check(ip, now)) is not None:
        return _refused(node, limited[0].label, limited[0].reason, 429, limited[1])
    # Another site's page could make its visitors' browsers POST here (a text/plain body
    # needs no CORS preflight): each visitor a source of reservations and new rooms.
    # Browsers always send Origin on such a POST; the /ws rule applies (non-browser
    # clients send none and pass).
    refusal = gateway.origins.check(request.headers.get("Origin"), request.host,
                                    request.scheme)
    if refusal is not None:
        return _refused(node, refusal.label, refusal.reason, refusal.status)
    if (request.content_length or 0) > MAX_MATCHMAKE_BODY:
        return _refused(node, "too_large", f"the body is {request.content_length} bytes; "
                        f"at most {MAX_MATCHMAKE_BODY} are accepted", 413)
    try:
        raw = await request.read() if request.can_read_body else b""
    except web.HTTPRequestEntityTooLarge:
        raw = b"x" * (MAX_MATCHMAKE_BODY + 1)
    if len(raw) > MAX_MATCHMAKE_BODY:
        return _refused(node, "too_large",
                        f"the body is over {MAX_MATCHMAKE_BODY} bytes", 413)
    try:
        body = json.loads(raw) if raw else {}
    except RecursionError:  # the C scanner recurses per level: '[' * 100000
        return _refused(node, "bad_request", "body is nested too deeply", 400)
    except ValueError:  # JSONDecodeError, UnicodeDecodeError, an integer too long
        return _refused(node, "bad_request", "body is not JSON", 400)
    if (guard is not None and isinstance(body, dict) and body.get("create") is True
            and (limited := guard.check_create(ip, now)) is not None):
        return _refused(node, limited[0].label, limited[0].reason, 429, limited[1])
    try:
        res, token = await node.matchmake(body, client=address_key(ip))
    except MatchError as exc:
        log.info("matchmake refused: %s", exc.message, extra={"code": exc.code})
        return web.json_response(exc.to_json(), status=exc.status)
    base = res.url or _ws_base(request)
    return web.json_response({
        "url": f"{base}/ws?token={token}", "room": res.room, "node": res.node,
        "mode": res.mode, "private": res.private, "token": token,
        "expires_in_s": node.config.token_ttl_s})


def _refused(node: FleetNode, code: str, message: str, status: int,
             retry_s: float | None = None) -> web.Response:
    node.metrics.matchmake_total.labels(result=code).inc()
    log.info("matchmake refused: %s", message, extra={"code": code})
    headers = {"Retry-After": retry_after(retry_s)} if retry_s is not None else None
    return web.json_response({"error": code, "message": message}, status=status,
                             headers=headers)


async def fleet_listing(gateway: Gateway) -> list[RoomInfo]:
    """The fleet's public rooms from the registry; [] when it cannot be reached (the
    caller then lists this node's rooms only)."""
    node = gateway.fleet
    if node is None:
        return []
    try:
        return await node.list_rooms()
    except RegistryUnavailable:
        return []


def merge_rooms(gateway: Gateway, local: dict[str, dict], listed: list[RoomInfo]
                ) -> list[dict]:
    """The fleet's public rooms (`listed`); this node's carry their local detail (`local`:
    room id -> the detail dict); this node's public rooms the registry has not heard of
    yet (created since the last refresh) are listed too. Pure: no I/O."""
    node = gateway.fleet
    me = node.config.node_id if node is not None else ""
    out = []
    seen = set()
    for info in listed:
        entry = info.to_json()
        detail = local.get(info.room) if info.node == me else None
        if detail is not None:
            entry = {**entry, **detail}
            seen.add(info.room)
        out.append(entry)
    lobby = gateway.lobby
    for room_id, detail in local.items():
        mode, private, created_ms = lobby.meta.get(room_id, (gateway.default_mode, False, 0))
        if room_id not in seen and not private:
            out.append({"room": room_id, "node": me, "mode": mode, "created_ms": created_ms,
                        **detail})
    return out
