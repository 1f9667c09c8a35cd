"""The aiohttp glue: the node's lifetime, POST /matchmake, the fleet's room list, the
modes on offer (GET /modes) and the admin's fleet view (GET /admin/fleet).

`fleet_ctx` (a cleanup_ctx) opens the registry, agrees on the seat-token secret, registers
the node and starts its loop; at shutdown `drain_first` (the first on_shutdown handler)
marks the node draining in the registry before the gateway drains, and the context's
exit stops the loop and deregisters the node.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import secrets
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any, Protocol
from urllib.parse import quote, urlsplit, urlunsplit

import aiohttp
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


MODES_CACHE_S = 1.0  # GET /modes asks Redis at most this often (it is public)


async def offered_modes(gateway: Gateway, cache: dict[str, object], now: float
                        ) -> dict[str, object]:
    """GET /modes: the modes a player can matchmake into, default first, each with its
    room capacity. A fleet offers what its live, non-draining nodes offer; a single
    server (or a node that cannot reach Redis) what it runs itself. `cache` (one per
    app) keeps the answer for MODES_CACHE_S of `now` (monotonic seconds), so a flood of
    requests costs Redis nothing."""
    if cache and now - float(cache["at"]) < MODES_CACHE_S:  # type: ignore[arg-type]
        return cache["body"]  # type: ignore[return-value]
    body = await _offered_modes(gateway)
    cache.update(at=now, body=body)
    return body


async def _offered_modes(gateway: Gateway) -> dict[str, object]:
    node = gateway.fleet
    modes: dict[str, int] = {}
    if node is not None and node.kind == "redis":
        with contextlib.suppress(RegistryUnavailable):
            for info in await node.list_nodes():
                if not info.draining:
                    for mode, capacity in info.modes.items():
                        modes.setdefault(mode, capacity)
    if not modes:
        modes = {name: params.max_players for name, params in gateway.modes.items()}
    default = gateway.default_mode if gateway.default_mode in modes else min(modes)
    order = [default, *sorted(m for m in modes if m != default)]
    return {"default": default,
            "modes": [{"mode": m, "capacity": modes[m]} for m in order]}


def admin_url(ws_url: str) -> str:
    """ws(s)://host[:port][/prefix] -> http(s)://host[:port][/prefix]/admin."""
    parts = urlsplit(ws_url)
    scheme = {"ws": "http", "wss": "https"}.get(parts.scheme)
    if scheme is None or not parts.netloc:
        return ""
    return urlunsplit((scheme, parts.netloc, parts.path.rstrip("/") + "/admin", "", ""))


async def fleet_view(gateway: Gateway, local: dict[str, dict], *,
                     local_only: bool = False) -> dict[str, object]:
    """GET /admin/fleet: every live node (load, rooms, age of its last refresh) with all
    its rooms, private ones included; this node's rooms carry their local detail
    (`local`: room id -> the detail dict, with seats), so the admin can kick there.
    Without the registry: this node alone, and the error. `local_only`: this node alone,
    without asking the registry (what a peer asks for, see `with_peer_seats`)."""
    node = gateway.fleet
    if node is None:
        return {"node": "", "registry": None, "error": "server starting", "nodes": []}
    now = node.now_ms()
    error = ""
    infos = []
    if not local_only:
        try:
            infos = await node.list_nodes()
        except RegistryUnavailable as exc:
            error = str(exc)
    me = node.config.node_id
    lobby = gateway.lobby
    nodes = []
    for info in infos:
        entry = info.to_json(now)
        entry["self"] = info.node == me
        entry["admin_url"] = admin_url(info.url)
        nodes.append(entry)
    mine = next((n for n in nodes if n["self"]), None)
    if mine is None:  # not registered (yet, or Redis is gone): what this process runs
        mine = {"node": me, "url": node.config.public_url, "draining": node.draining,
                "load": None, "players": None, "capacity": None,
                "max_rooms": node.config.max_rooms, "modes": dict(node.config.modes),
                "refreshed_age_s": None, "rooms": [], "self": True,
                "admin_url": admin_url(node.config.public_url)}
        nodes.insert(0, mine)
    rooms = {r["room"]: r for r in mine["rooms"]}
    for room_id, detail in local.items():
        mode, private, created_ms = lobby.meta.get(room_id, (gateway.default_mode, False, 0))
        base = rooms.get(room_id) or {"room": room_id, "mode": mode, "private": private,
                                      "created_ms": created_ms}
        rooms[room_id] = {**base, **detail}
    mine["rooms"] = sorted(rooms.values(), key=lambda r: (r.get("created_ms", 0), r["room"]))
    # This node's figures from its own rooms (fresher than its last refresh).
    mine["players"] = sum(int(r.get("players", 0)) for r in mine["rooms"])
    mine["capacity"] = sum(int(r.get("capacity", 0)) for r in mine["rooms"])
    return {"node": me, "registry": node.health(), "error": error, "nodes": nodes}


PEER_TIMEOUT_S = 1.5  # the admin's view waits this long at most for another node


def _peer_base(admin_url: str) -> str:
    return admin_url.removesuffix("/admin")


async def with_peer_seats(view: dict[str, Any], authorization: str) -> dict[str, Any]:
    """The other nodes' rooms get their seats (and tick health) from those nodes'
    `GET /admin/fleet?local=1`, asked at their public address with the admin's own
    token (so every node must have the same --admin-token), all at once and bounded by
    PEER_TIMEOUT_S. A node that does not answer keeps its rooms without seats and says
    why in `seats_error`."""
    others = [n for n in view["nodes"] if not n.get("self") and n.get("admin_url")]
    if not others:
        return view

    async def ask(http: aiohttp.ClientSession, n: dict[str, Any]) -> dict[str, Any] | str:
        try:
            async with http.get(_peer_base(n["admin_url"]) + "/admin/fleet?local=1",
                                headers={"Authorization": authorization}) as resp:
                if resp.status != 200:
                    return f"that node answered {resp.status}"
                answer = await resp.json(content_type=None)
        except (aiohttp.ClientError, OSError, TimeoutError, ValueError) as exc:
            return f"unreachable: {type(exc).__name__}"
        nodes = answer.get("nodes") if isinstance(answer, dict) else None
        mine = next((x for x in nodes or [] if isinstance(x, dict) and x.get("self")), None)
        if mine is None or not isinstance(mine.get("rooms"), list):
            return "that node's answer has no rooms"
        return mine

    timeout = aiohttp.ClientTimeout(total=PEER_TIMEOUT_S)
    async with aiohttp.ClientSession(timeout=timeout) as http:
        answers = await asyncio.gather(*(ask(http, n) for n in others))
    for n, answer in zip(others, answers, strict=True):
        if isinstance(answer, str):
            n["seats_error"] = answer
            continue
        detail = {r["room"]: r for r in answer["rooms"]
                  if isinstance(r, dict) and isinstance(r.get("seats"), list)}
        n["rooms"] = [{**r, **detail.get(r["room"], {})} for r in n["rooms"]]
        n["players"] = sum(int(r.get("players", 0)) for r in n["rooms"])
    return view


async def forward_kick(gateway: Gateway, node_id: str, room: str, player: str,
                       query: str, authorization: str) -> tuple[int, dict[str, Any]]:
    """POST /admin/nodes/{node}/rooms/{room}/kick/{player}: the kick, done by the node
    that runs the room (at its public address, with the admin's token)."""
    node = gateway.fleet
    if node is None:
        return 503, {"error": "server starting"}
    try:
        infos = await node.list_nodes()
    except RegistryUnavailable as exc:
        return 503, {"error": f"registry unreachable: {exc}"}
    info = next((i for i in infos if i.node == node_id), None)
    base = _peer_base(admin_url(info.url)) if info is not None else ""
    if not base:
        return 404, {"error": f"no live node {node_id}"}
    url = f"{base}/admin/rooms/{quote(room, safe='')}/kick/{quote(player, safe='')}"
    if query:
        url += "?" + query
    try:
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(
                total=PEER_TIMEOUT_S * 2)) as http, \
                http.post(url, headers={"Authorization": authorization}) as resp:
            answer = await resp.json(content_type=None)
            return resp.status, answer if isinstance(answer, dict) else {"error": "bad answer"}
    except (aiohttp.ClientError, OSError, TimeoutError, ValueError) as exc:
        return 502, {"error": f"node {node_id} unreachable: {type(exc).__name__}"}
