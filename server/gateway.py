"""The aiohttp application: the thin I/O shell around the sans-I/O parts.

It accepts (origin, per-address and seat-token checks, then the upgrade), pumps each
socket's bytes into its `ConnectionProtocol` (`server.connection`), keeps the registry
of joined connections, and drains on shutdown. Everything it decides comes from the
sans-I/O parts: `ConnectionProtocol` (what a client's frames mean, every refusal),
`Session` (per-connection policy), `Room` (the match), `Lobby` (rooms), and the room
loops (`server.roomloops`: ticks and delivery). Framing is `server.framing`.

It implements `ServerControl` (`server.control`), the narrow interface through which the
admin API, the parameters watcher and the recorder act on the server.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import socket
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import replace
from pathlib import Path

from aiohttp import hdrs, web

from server.admin import KICK_REASON, add_admin_routes
from server.clock import Clock, MonotonicClock, WallClock
from server.config import GatewayConfig
from server.connection import Connection, WebSocketReads
from server.errorpages import error_pages
from server.errors import CLOSE_GOING_AWAY, CLOSE_POLICY
from server.fleet.app import drain_first, fleet_ctx
from server.fleet.node import FleetNode
from server.framing import accept_key
from server.handshake import (
    ConnectionsPerIp,
    OriginPolicy,
    Refusal,
    check_upgrade,
)
from server.liveparams import params_watch_ctx
from server.lobby import Lobby
from server.logs import log_disconnect
from server.metrics import Metrics, close_code_label
from server.protocol import ConnectionProtocol, Joined
from server.recording import recording_ctx
from server.room import Room, merge_live_params
from server.roomloops import RoomLoops
from server.routes import add_http_routes
from server.seats import NodeSeats
from server.session import Session
from server.spectate_routes import add_spectate_routes
from server.static import add_static_routes
from server.tickloop import TickSchedule
from sim.params import Params

log = logging.getLogger("tickwire.gateway")


class Gateway(NodeSeats):
    """Application state: rooms, connections, metrics. Lives under `GATEWAY_KEY`."""

    def __init__(self, config: GatewayConfig, clock: Clock | None = None,
                 wall_clock: Clock | None = None) -> None:
        """`clock`: monotonic, times everything (ticks, deadlines, rates); `wall_clock`:
        epoch seconds, for seat-token and reservation expiry (checkable across processes)."""
        self.config = config
        self.clock = clock or MonotonicClock()
        self.metrics = Metrics()
        # Commands are validated once per tick in NumPy; RoomLoops charges the rejections
        # (TickResult.input_rejections) to their senders.
        self.lobby = Lobby(config.params, max_rooms=config.max_rooms,
                           defer_input_checks=True, kick_ban_s=config.kick_ban_s)
        self.connections: dict[int, Connection] = {}  # joined, by player id
        self.sockets: set[Connection] = set()  # every upgraded socket
        self.started_at = self.clock.now()
        self.draining = False
        self.origins = OriginPolicy(list(config.allowed_origins), config.public_origin)
        self.wall_clock: Clock = wall_clock or WallClock()
        self.modes: dict[str, Params] = dict(config.modes) or {"arena": config.params}
        self.default_mode = next(iter(self.modes))
        self.lobby.default_mode = self.default_mode
        self.lobby.params = self.modes[self.default_mode]
        self.fleet: FleetNode | None = None  # set by the fleet context at startup
        # Seat tokens are required with a join secret or in a Redis fleet; otherwise a
        # socket without one joins any public room of the default mode (as before).
        self.tokens_required = config.join_secret is not None or bool(config.fleet.redis_url)
        self.per_ip = ConnectionsPerIp(config.max_conns_per_ip, config.connects_per_ip_per_s,
                                       config.connect_burst_per_ip)
        self.loops = RoomLoops(self.lobby, self.clock, self.metrics, self.connections)
        self.loops.busy = lambda room_id: self._reserved(room_id) > 0
        self.loops.on_disposed = self._room_disposed
        self._params_version = 1

    # -- ServerControl ---------------------------------------------------------------------

    @property
    def params(self) -> Params:
        return self.config.params

    @property
    def params_version(self) -> int:
        return self._params_version

    @property
    def web_root(self) -> Path:
        return self.config.web_root

    def rooms(self) -> Mapping[str, Room]:
        return self.lobby.rooms

    def set_room_hook(self, hook: Callable[[Room], None] | None) -> None:
        self.lobby.on_new_room = hook

    def apply_params(self, new: Params, *, source: str = "api") -> tuple[int, list[str]]:
        """Apply ``new`` to every room at its next tick and to rooms created later.
        Returns (params version now in force, restart-only keys that differ: they keep
        their running values). An unchanged set keeps the version. Raises ``ParamsError``
        when the live part cannot apply; nothing changes then."""
        effective, restart = merge_live_params(self.params, new)
        if restart:
            log.warning("parameters that only apply after a restart were not changed: %s",
                        ", ".join(restart), extra={"source": source, "keys": restart})
        if effective == self.params:
            return self._params_version, restart
        before, after = self.params.to_dotted(), effective.to_dotted()
        changed = {k: v for k, v in after.items() if before[k] != v}
        self._params_version += 1
        self.config = replace(self.config, params=effective)
        self.modes[self.default_mode] = effective
        self.lobby.params, self.lobby.params_version = effective, self._params_version
        now = self.clock.now()
        for room_id, room in self.lobby.rooms.items():
            if self.lobby.meta.get(room_id, (self.default_mode,))[0] != self.default_mode:
                continue  # live changes are for the default mode's rooms
            room.set_params(effective, now, version=self._params_version)
        log.info("parameters applied", extra={"source": source, "changed": changed,
                                              "params_version": self._params_version})
        return self._params_version, restart

    def kick(self, room_id: str, player_id: int, reason: str = KICK_REASON, *,
             ban_s: float | None = None) -> float | None:
        room = self.lobby.rooms.get(room_id)
        if room is None or player_id not in room.seats:
            return None
        conn = self.connections.get(player_id)
        attached = conn is not None and conn.room is room and conn.open
        # A plain kick bans the name for --kick-ban-s; `ban_s` (the Ban button) bans the
        # name and the address for that long. Not the address on every kick: players
        # behind one NAT share it.
        banned_s = self.lobby.bans.ban(
            self.clock.now(), name=room.seats[player_id].name, seconds=ban_s,
            address=conn.peer if attached and ban_s is not None and conn.peer else None)
        if attached:
            # Closing first: the tick stops sending to it; the seat goes right after, so
            # a Resume with the old token finds nothing.
            conn.close(CLOSE_POLICY, reason, label="kicked",
                       retry_after_s=math.ceil(banned_s))
        room.leave(player_id)
        log.info("player kicked by admin", extra={"player": player_id, "room": room_id,
                                                  "ban_s": banned_s})
        return banned_s

    def bans(self) -> list[dict[str, object]]:
        return self.lobby.bans.active(self.clock.now())

    def schedule_for(self, room_id: str) -> TickSchedule | None:
        return self.loops.schedule_for(room_id)

    # -- the WebSocket endpoint --------------------------------------------------------------

    async def handle_ws(self, request: web.Request) -> web.StreamResponse:
        if self.draining:
            raise web.HTTPServiceUnavailable(text="server shutting down")
        peer_ip = _peer_ip(request)
        refusal = self._check_upgrade(request, peer_ip)
        claim = None
        if refusal is None:
            claim = await self._check_seat(request.query.get("token"))
            if isinstance(claim, Refusal):
                refusal, claim = claim, None
        if refusal is not None:
            self.metrics.handshakes_rejected.labels(reason=refusal.label).inc()
            log.info("upgrade refused: %s", refusal.reason,
                     extra={"peer": peer_ip, "status": refusal.status})
            return web.Response(status=refusal.status, text=refusal.reason)
        # aiohttp validates the handshake (method, headers, version, key)...
        if not web.WebSocketResponse().can_prepare(request).ok:
            self._release(claim)
            raise web.HTTPBadRequest(text="not a WebSocket handshake")
        # ...and we answer it, so the socket's bytes come to our frame parser, not its own.
        response = web.StreamResponse(status=101, headers={
            hdrs.UPGRADE: "websocket", hdrs.CONNECTION: "upgrade",
            hdrs.SEC_WEBSOCKET_ACCEPT: accept_key(request.headers[hdrs.SEC_WEBSOCKET_KEY])})
        # Counted before the upgrade's await, so concurrent upgrades cannot slip past the cap.
        self.per_ip.opened(peer_ip)
        try:
            await response.prepare(request)
        except BaseException:
            self.per_ip.closed(peer_ip)
            self._release(claim)
            raise
        transport = request.transport
        if transport is None or transport.is_closing():
            self.per_ip.closed(peer_ip)
            self._release(claim)
            return response
        limits = self.config.limits
        sock = transport.get_extra_info("socket")
        if limits.socket_send_buffer and sock is not None:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, limits.socket_send_buffer)
        session = Session.open(limits, self.clock.now())
        protocol = ConnectionProtocol(session, self, self.metrics.counts, peer_ip)
        protocol.claim = claim
        protocol.room_for_join = lambda now: self.room_for_join(claim, now)
        conn = Connection(transport, protocol, self, self.clock, self.config.close_timeout_s,
                          peer=peer_ip)
        self.metrics.connections.inc()
        self.sockets.add(conn)
        join_timer = asyncio.get_running_loop().call_later(
            limits.join_timeout_s, conn.poll)
        request.protocol.set_parser(conn)  # the bytes read with the head, if any
        request.protocol.keep_alive(False)
        transport.set_protocol(WebSocketReads(conn, request.protocol))  # later reads
        try:
            await conn.done
        finally:
            join_timer.cancel()
            self._release(claim)
            self.per_ip.closed(peer_ip)
            self.sockets.discard(conn)
            self._detach(conn)
            code = protocol.close_code if protocol.close_code is not None \
                else protocol.peer_close_code
            # A Leave is the player's choice, though the server sends the 1000 that ends it.
            by_server = protocol.close_code is not None and protocol.close_label != "left"
            self.metrics.disconnects.labels(code=close_code_label(code)).inc()
            log_disconnect(log, player=session.player_id, room=session.room_id or None,
                           code=code, reason=protocol.close_reason or None,
                           by="server" if by_server else "client",
                           peer=transport.get_extra_info("peername"))
        return response

    def _check_upgrade(self, request: web.Request, peer_ip: str) -> Refusal | None:
        """Per-address cap and rate first, then origin: before the socket exists
        (server.handshake.check_upgrade); the seat token is checked next."""
        return check_upgrade(per_ip=self.per_ip, origins=self.origins, peer_ip=peer_ip,
                             origin=request.headers.get("Origin"), host=request.host,
                             scheme=request.scheme, now=self.clock.now())

    def on_joined(self, conn: Connection, event: Joined) -> None:
        """ConnectionHooks: register the seat's connection, replacing a stale one."""
        stale = self.connections.get(event.player_id)
        if stale is not None and stale is not conn:
            # The old socket is still open (a half-open connection): the new one wins.
            stale.protocol.detach()
            stale.close(CLOSE_POLICY, "replaced by a resumed connection", label="replaced")
            self.metrics.players.dec()
        self.connections[event.player_id] = conn
        self.metrics.players.inc()
        self.loops.ensure(event.room)
        seats = self.loops.seat_poller(event.room.room_id)
        if self.config.reads_at_tick and seats is not None:
            conn.start_tick_reads(seats)
        claim = conn.protocol.claim
        if claim is not None and self.fleet is not None and not event.resumed:
            self.fleet.seated(claim)
        log.info("player resumed" if event.resumed else "player joined",
                 extra={"player": event.player_id, "room": event.room.room_id,
                        "entity": event.entity})

    def _detach(self, conn: Connection) -> None:
        player_id = conn.session.player_id
        if not player_id or self.connections.get(player_id) is not conn:
            return
        del self.connections[player_id]
        self.metrics.players.dec()
        room = conn.room
        if room is not None:
            room.disconnect(player_id, self.clock.now())
            if player_id not in room.seats:
                log.info("player left", extra={"player": player_id})

    async def stop_rooms(self) -> None:
        await self.loops.stop()
    async def shutdown(self) -> None:
        """Drain: a last snapshot to everyone, every socket closed with 1001, rooms stopped.

        Under `tickwire serve` this runs with the listener still open (server/serving.py):
        `draining` answers new upgrades and /healthz with 503 until the listener closes.
        """
        self.draining = True
        await self.loops.stop()  # no scheduled tick may interleave with the last one
        now = self.clock.now()
        for room in list(self.lobby.rooms.values()):
            with contextlib.suppress(Exception):
                self.loops.deliver(room.tick(now), now)
        conns = list(self.sockets)
        for conn in conns:
            conn.close(CLOSE_GOING_AWAY, "server shutting down", label="draining")
            # Half-close right after our Close (FIN once it is flushed): a browser that
            # waits too long for it reports 1006. Reads go on (WebSocketReads), so the
            # peer's Close or FIN still ends the connection; a full close here would
            # answer its Close with a RST.
            if conn.transport.can_write_eof():
                conn.transport.write_eof()
        if conns:
            await asyncio.wait([conn.done for conn in conns],
                               timeout=self.config.shutdown_timeout_s)
        await self.loops.stop()


GATEWAY_KEY = web.AppKey("gateway", Gateway)


def build_app(config: GatewayConfig, clock: Clock | None = None,
              wall_clock: Clock | None = None) -> web.Application:
    """The aiohttp application with every route; the caller runs it."""
    app = web.Application(middlewares=[error_pages])  # HTML for /ws in a tab and for 404s
    gateway = Gateway(config, clock, wall_clock)
    app[GATEWAY_KEY] = gateway
    app.router.add_get("/ws", gateway.handle_ws)
    add_http_routes(app, gateway, admin_token=config.admin_token,
                    public_player_names=config.public_player_names)
    add_static_routes(app, config.web_root)
    add_admin_routes(app, gateway, config.admin_token, stall_s=config.admin_stall_s)
    add_spectate_routes(app, gateway, limits=config.spectate,  # watch a live room, no seat
                        is_private=gateway.room_is_private, admin_token=config.admin_token,
                        public_player_names=config.public_player_names)

    async def background(app: web.Application) -> AsyncIterator[None]:
        yield
        await gateway.loops.stop()

    async def on_shutdown(app: web.Application) -> None:
        await gateway.shutdown()

    async def fleet_drain(app: web.Application) -> None:
        await drain_first(gateway)

    app.cleanup_ctx.append(background)
    app.cleanup_ctx.append(fleet_ctx(gateway, config.fleet))
    app.on_shutdown.append(fleet_drain)  # first: no new seats come here while we drain
    app.on_shutdown.append(on_shutdown)
    if config.params_path is not None:
        app.cleanup_ctx.append(params_watch_ctx(gateway, config.params_path))
    if config.recording is not None:
        app.cleanup_ctx.append(recording_ctx(gateway, config.recording))
    return app


def _peer_ip(request: web.Request) -> str:
    peer = request.transport.get_extra_info("peername") if request.transport else None
    return str(peer[0]) if peer else "unknown"
