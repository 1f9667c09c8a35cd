"""The aiohttp application: WebSocket gateway, HTTP routes, and the room tick loops.

This is the only server module that touches sockets. Everything it decides comes from
the sans-I/O parts: `Session` (per-connection policy), `Room` (the match), `Lobby`
(rooms), `TickSchedule` (when to tick). The gateway pumps bytes between them.

Writing without stalls: a tick never awaits a client. Frames are written with
`transport.write` (which buffers, never blocks); the buffer size decides whether a client
gets this tick's snapshot (see `OutboundPolicy`), and a client stalled for too long is
closed by a separate task. Each snapshot's shared part is serialized once per baseline.

Round-trip time comes from WebSocket ping control frames the server sends itself (every
browser answers them): aiohttp's autoping is off so PONG frames reach this code, and PING
frames from clients are answered here.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import struct
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field, replace
from pathlib import Path

from aiohttp import WSMsgType, web

from proto import tickwire_pb2 as pb
from server.admin import add_admin_routes
from server.clock import Clock, MonotonicClock
from server.fleet.app import FleetSettings, drain_first, fleet_ctx, fleet_rooms
from server.fleet.app import handle_matchmake as fleet_matchmake
from server.fleet.node import FleetNode
from server.handshake import ConnectionsPerIp, OriginPolicy, Refusal, SeatClaim
from server.lobby import Lobby, LobbyFullError
from server.metrics import Metrics
from server.paramswatch import params_watch_ctx
from server.recording import RecordingConfig, recording_ctx
from server.room import (
    JoinRefused,
    Room,
    RoomFullError,
    TickResult,
    check_name,
    merge_live_params,
)
from server.session import (
    CLOSE_GOING_AWAY,
    CLOSE_INTERNAL_ERROR,
    CLOSE_POLICY,
    CLOSE_TOO_BIG,
    CLOSE_UNSUPPORTED,
    ProtocolError,
    Session,
    SessionLimits,
    check_version,
    parse_client_frame,
)
from server.tickloop import TickPlan, TickSchedule, run_ticks
from sim.params import Params

log = logging.getLogger("tickwire.gateway")

WEB_ROOT = Path(__file__).resolve().parent.parent / "client_demo" / "web"
_OP_BINARY = 0x2
_OP_PING = 0x9
_OP_CLOSE = 0x8
# aiohttp's own bound, far above ours: frames between our limit and this one are read and
# refused with a reason; beyond it aiohttp closes with 1009 itself.
_HARD_FRAME_FACTOR = 16


@dataclass(frozen=True, slots=True)
class GatewayConfig:
    params: Params
    limits: SessionLimits
    max_rooms: int = 64
    close_timeout_s: float = 2.0
    shutdown_timeout_s: float = 5.0
    web_root: Path = WEB_ROOT
    allowed_origins: tuple[str, ...] = ()  # () = the server's own origin only; "*" = any
    join_secret: bytes | None = None  # set: /ws needs a seat token from POST /matchmake
    join_token_ttl_s: float = 15.0  # a seat token's life (and how long it holds a seat)
    max_conns_per_ip: int = 256  # 0 = no cap; a load test from one host may need 0
    connects_per_ip_per_s: float = 20.0  # new sockets per address per second; 0 = no limit
    connect_burst_per_ip: float = 256.0  # a whole load-test swarm may arrive at once
    admin_token: str | None = None  # None: the /admin routes are off (404)
    params_path: Path | None = None  # set: this TOML file is watched and applied live
    recording: RecordingConfig | None = None  # set: every room is recorded for replay
    # (name, params) of each game mode; () = one mode, "arena", with `params`
    modes: tuple[tuple[str, Params], ...] = ()
    # the registry: in-process unless redis_url
    fleet: FleetSettings = field(default_factory=FleetSettings)


@dataclass(slots=True)
class Connection:
    """A joined WebSocket: the socket, its session, its seat."""

    ws: web.WebSocketResponse
    transport: asyncio.Transport
    session: Session
    room: Room | None = None
    claim: SeatClaim | None = None  # the seat token this socket came with


def ws_header(opcode: int, length: int) -> bytes:
    """The header of one unmasked, unfragmented WebSocket frame (RFC 6455 §5.2).

    Frames are built here rather than through aiohttp's writer because its send methods
    are coroutines that may wait for the peer to drain; the tick must never wait.
    """
    first = 0x80 | opcode
    if length < 126:
        return struct.pack("!BB", first, length)
    if length < 65536:
        return struct.pack("!BBH", first, 126, length)
    return struct.pack("!BBQ", first, 127, length)


def ws_frame(opcode: int, payload: bytes) -> bytes:
    """One whole server frame: header and payload."""
    return ws_header(opcode, len(payload)) + payload


class Gateway:
    """Application state: rooms, connections, metrics. Lives under `GATEWAY_KEY`."""

    def __init__(self, config: GatewayConfig, clock: Clock | None = None) -> None:
        self.config = config
        self.clock = clock or MonotonicClock()
        self.metrics = Metrics()
        self.lobby = Lobby(config.params, max_rooms=config.max_rooms)
        self.connections: dict[int, Connection] = {}
        self.sockets: dict[web.WebSocketResponse, asyncio.Transport] = {}
        self.started_at = self.clock.now()
        self.draining = False
        self.origins = OriginPolicy(list(config.allowed_origins))
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
        self._room_tasks: dict[str, tuple[asyncio.Task, asyncio.Event, TickSchedule]] = {}
        self._background: set[asyncio.Task] = set()
        self._room_drops: dict[str, tuple[int, int]] = {}
        self.params_version = 1  # bumped by every live parameter change

    # -- live parameters ---------------------------------------------------------------

    @property
    def params(self) -> Params:
        """The parameters in force; a new room starts with them."""
        return self.config.params

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
            return self.params_version, restart
        before, after = self.params.to_dotted(), effective.to_dotted()
        changed = {k: v for k, v in after.items() if before[k] != v}
        self.params_version += 1
        self.config = replace(self.config, params=effective)
        self.modes[self.default_mode] = effective
        self.lobby.params, self.lobby.params_version = effective, self.params_version
        now = self.clock.now()
        for room_id, room in self.lobby.rooms.items():
            if self.lobby.meta.get(room_id, (self.default_mode,))[0] != self.default_mode:
                continue  # live changes are for the default mode's rooms
            room.set_params(effective, now, version=self.params_version)
        log.info("parameters applied", extra={"source": source, "changed": changed,
                                              "params_version": self.params_version})
        return self.params_version, restart

    # -- rooms and their tick loops ----------------------------------------------------

    def ensure_room(self, room_id: str, mode: str, private: bool) -> Room:
        """The room with this id (of `mode`), created and ticking if it did not exist."""
        room, created = self.lobby.ensure_room(room_id, self.modes[mode], self.clock.now(),
                                               mode=mode, private=private,
                                               created_ms=int(time.time() * 1000))
        if created:
            self._ensure_loop(room)
            log.info("room created", extra={"room": room_id, "mode": mode,
                                            "private": private})
        return room

    def _reserved(self, room_id: str) -> int:
        """Seats of a room held for matchmade players (last registry refresh + consumed)."""
        fleet = self.fleet
        if fleet is None:
            return 0
        return fleet.reserved.get(room_id, 0) + fleet.unseated(room_id)

    def _ensure_loop(self, room: Room) -> None:
        if room.room_id in self._room_tasks:
            return
        schedule = TickSchedule(room.params.tick_rate, self.clock.now())
        stop = asyncio.Event()
        task = asyncio.get_running_loop().create_task(
            run_ticks(schedule, self.clock, lambda now: self._tick_room(room, schedule, now),
                      stop, on_plan=self._on_plan),
            name=f"tick-{room.room_id}",
        )
        self._room_tasks[room.room_id] = (task, stop, schedule)
        self.metrics.rooms.set(len(self._room_tasks))

    def _on_plan(self, plan: TickPlan) -> None:
        if plan.run:
            self.metrics.tick_jitter.observe(plan.jitter_s)
        if plan.skipped:
            self.metrics.ticks_skipped.inc(plan.skipped)

    def _tick_room(self, room: Room, schedule: TickSchedule, now: float) -> None:
        started = time.perf_counter()
        try:
            result = room.tick(now)
            self._deliver(result, now)
            self._count_room_drops(room)
        except Exception:
            self.metrics.tick_errors.inc()
            raise  # run_ticks logs it (once per kind) and keeps the loop going
        for player_id in result.expired:
            log.info("seat expired", extra={"player": player_id, "room": room.room_id})
        duration = time.perf_counter() - started
        self.metrics.tick_duration.observe(duration)
        if duration > schedule.period_s:
            self.metrics.tick_overruns.inc()
        if room.tick_number % (room.params.tick_rate * 10) == 0:
            self._reap_rooms(now)

    def _count_room_drops(self, room: Room) -> None:
        """Commands the room dropped (queue overflow, standing-queue trim) into /metrics."""
        seen = self._room_drops.get(room.room_id, (0, 0))
        now_counts = (room.inputs_dropped, room.inputs_trimmed)
        if now_counts != seen:
            m = self.metrics.inputs_rejected
            m.labels(reason="queue_overflow").inc(now_counts[0] - seen[0])
            m.labels(reason="queue_trimmed").inc(now_counts[1] - seen[1])
            self._room_drops[room.room_id] = now_counts

    def _reap_rooms(self, now: float) -> None:
        for room in self.lobby.reap(now, busy=lambda room_id: self._reserved(room_id) > 0):
            if self.fleet is not None:
                self.fleet.room_disposed(room.room_id)
            entry = self._room_tasks.pop(room.room_id, None)
            if entry is not None:
                entry[1].set()
            self._room_drops.pop(room.room_id, None)
            log.info("room disposed", extra={"room": room.room_id})
        self.metrics.rooms.set(len(self._room_tasks))

    async def stop_rooms(self) -> None:
        for _task, stop, _ in self._room_tasks.values():
            stop.set()
        tasks = [task for task, _, _ in self._room_tasks.values()]
        self._room_tasks.clear()
        if tasks:
            _, pending = await asyncio.wait(tasks, timeout=2.0)
            for task in pending:
                task.cancel()
            if pending:
                await asyncio.wait(pending, timeout=1.0)

    def schedule_for(self, room_id: str) -> TickSchedule | None:
        entry = self._room_tasks.get(room_id)
        return entry[2] if entry else None

    # -- sending -------------------------------------------------------------------------

    def _deliver(self, result: TickResult, now: float) -> None:
        m = self.metrics
        # Counted locally and added once per tick: each Prometheus call takes a lock.
        sent_bytes = sent = keyframes = skipped = 0
        # header + shared snapshot part, built once per baseline (the per-client part has a
        # fixed length, so the header is the same for every client that shares it)
        prefixes: dict[int, bytes] = {}
        for d in result.deliveries:
            conn = self.connections.get(d.player_id)
            if conn is None or conn.session.closing or conn.transport.is_closing():
                continue
            write = conn.transport.write
            for frame in d.frames:
                data = ws_frame(_OP_BINARY, frame)
                write(data)
                sent_bytes += len(data)
            session = conn.session
            if session.outbound.admit(conn.transport.get_write_buffer_size(), now):
                prefix = prefixes.get(id(d.snapshot_shared))
                if prefix is None:
                    length = len(d.snapshot_shared) + len(d.snapshot_personal)
                    prefix = ws_header(_OP_BINARY, length) + d.snapshot_shared
                    prefixes[id(d.snapshot_shared)] = prefix
                conn.transport.writelines((prefix, d.snapshot_personal))
                size = len(prefix) + len(d.snapshot_personal)
                sent_bytes += size
                sent += 1
                keyframes += d.keyframe
                m.snapshot_bytes.observe(size)
            else:
                skipped += 1
                if session.outbound.stalled(now):
                    self.close_soon(conn, CLOSE_POLICY, "send buffer stalled",
                                    label="stalled_reader", abort=True)
                    continue
            ping = session.pings.poll(now)
            if ping is not None:
                data = ws_frame(_OP_PING, ping)
                write(data)
                sent_bytes += len(data)
            elif session.pings.timed_out(now):
                self.close_soon(conn, CLOSE_GOING_AWAY,
                                f"no pong within {session.limits.ping_timeout_s:g} s",
                                label="ping_timeout")
            elif session.idle(now):
                self.close_soon(conn, CLOSE_POLICY,
                                f"no input for {session.limits.idle_timeout_s:g} s",
                                label="idle")
        m.bytes_sent.inc(sent_bytes)
        m.snapshots_sent.inc(sent)
        m.keyframes_sent.inc(keyframes)
        if skipped:
            m.snapshots_skipped.labels(reason="backpressure").inc(skipped)

    def close_soon(self, conn: Connection, code: int, reason: str, *, label: str,
                   abort: bool = False) -> None:
        """Close a connection from code that must not await (the tick).

        `abort`: for a reader that stopped reading. A close frame queued behind its full
        buffer would never be read, and a close handshake would wait forever: the frame is
        written for the record and the TCP connection is dropped at once.
        """
        if conn.session.closing:
            return
        conn.session.closing = True
        conn.session.close_code = code
        log.info("closing connection: %s", reason,
                 extra={"player": conn.session.player_id, "code": code, "label": label})
        if abort:
            conn.transport.write(ws_frame(_OP_CLOSE, struct.pack("!H", code)
                                          + reason.encode()[:120]))
            conn.transport.abort()
            return
        task = asyncio.get_running_loop().create_task(
            self.close(conn.ws, conn.transport, code, reason))
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def close(self, ws: web.WebSocketResponse, transport: asyncio.Transport, code: int,
                    reason: str, *, kick: bool = False) -> None:
        """Close with a code and reason (a Kick frame first if `kick`), bounded in time.

        Never waits on a peer longer than `close_timeout_s`: the Kick goes straight to the
        transport, aiohttp's close does not drain, and a peer that does not answer the close
        handshake in time has its connection aborted.
        """
        if transport.is_closing():
            return
        if kick and not ws.closed:
            frame = pb.ServerFrame(kick=pb.Kick(code=code, reason=reason)).SerializeToString()
            data = ws_frame(_OP_BINARY, frame)
            transport.write(data)
            self.metrics.bytes_sent.inc(len(data))
        # A failed or timed-out close ends in the abort below either way.
        with contextlib.suppress(Exception):
            await asyncio.wait_for(ws.close(code=code, message=reason.encode()[:120],
                                            drain=False), self.config.close_timeout_s + 0.5)
        # aiohttp closes the transport gracefully when the handshake fails, which waits
        # to send whatever is buffered: a peer that stopped reading would keep the socket.
        if not transport.is_closing() or transport.get_write_buffer_size() > 0:
            transport.abort()

    # -- the WebSocket handler -------------------------------------------------------------

    async def handle_ws(self, request: web.Request) -> web.StreamResponse:
        limits = self.config.limits
        ws = web.WebSocketResponse(
            max_msg_size=limits.max_frame_bytes * _HARD_FRAME_FACTOR,
            compress=False,  # snapshots are already compact; deflate would triple send cost
            autoping=False,  # we need the PONGs for RTT, and answer PINGs ourselves
            heartbeat=None,  # any inbound data resets it; liveness uses our own pings
            timeout=self.config.close_timeout_s,
        )
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
        # Counted before the upgrade's await, so concurrent upgrades cannot slip past the cap.
        self.per_ip.opened(peer_ip)
        try:
            await ws.prepare(request)
        except BaseException:
            self.per_ip.closed(peer_ip)
            self._release(claim)
            raise
        transport = request.transport
        if transport is None:
            self.per_ip.closed(peer_ip)
            self._release(claim)
            return ws
        sock = transport.get_extra_info("socket")
        if limits.socket_send_buffer and sock is not None:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, limits.socket_send_buffer)
        self.metrics.connections.inc()
        self.sockets[ws] = transport
        session = Session.open(limits, self.clock.now())
        conn = Connection(ws=ws, transport=transport, session=session, claim=claim)
        try:
            await self._serve(conn)
        finally:
            self._release(claim)
            self.per_ip.closed(peer_ip)
            self.sockets.pop(ws, None)
            self._detach(conn)
            code = session.close_code if session.close_code is not None else ws.close_code
            self.metrics.disconnects.labels(code=str(code)).inc()
        return ws

    def _release(self, claim: SeatClaim | None) -> None:
        if claim is not None and self.fleet is not None:
            self.fleet.released(claim)  # a no-op once the player is seated

    async def _check_seat(self, token: str | None) -> SeatClaim | Refusal | None:
        """The seat token, consumed (single use) at the node that owns the seat; None when
        there is none (the socket may then Resume, or Join only if no token is required)."""
        if not token:
            return None  # fine for a Resume; a Join without a token may be refused
        if self.fleet is None:
            return Refusal(503, "starting", "server starting")
        return await self.fleet.admit(token)

    def _check_upgrade(self, request: web.Request, peer_ip: str) -> Refusal | None:
        """Origin and per-IP cap, before the socket exists (the seat token comes next)."""
        refusal = self.origins.check(request.headers.get("Origin"), request.host,
                                     request.scheme)
        if refusal is None:
            refusal = self.per_ip.check(peer_ip, self.clock.now())
        return refusal

    async def _serve(self, conn: Connection) -> int | None:
        ws, session = conn.ws, conn.session
        limits = session.limits
        join_deadline = session.opened_at + limits.join_timeout_s
        while not ws.closed:
            # An absolute deadline: frames that are not a Join must not extend it.
            timeout = None if session.joined else max(0.0, join_deadline - self.clock.now())
            try:
                msg = await ws.receive(timeout=timeout)
            except TimeoutError:
                return await self._refuse(conn, ProtocolError(
                    CLOSE_POLICY, "join_timeout",
                    f"no Join within {limits.join_timeout_s:g} s"))
            now = self.clock.now()
            if msg.type in (WSMsgType.CLOSE, WSMsgType.CLOSING, WSMsgType.CLOSED):
                return ws.close_code
            if msg.type == WSMsgType.ERROR:
                # aiohttp already closed it (e.g. 1009 beyond the hard size bound).
                self._reject_metric("protocol_error")
                log.info("websocket error", extra={"player": session.player_id,
                                                   "error": str(msg.data)})
                return ws.close_code
            size = len(msg.data) if msg.data is not None else 0
            self.metrics.bytes_received.inc(size)
            if msg.type in (WSMsgType.BINARY, WSMsgType.TEXT):
                session.last_frame_at = now
            if not session.admit_frame(size, now):
                self._reject_metric("rate_limited")
                if session.record_drop(now):
                    return await self._refuse(conn, ProtocolError(
                        CLOSE_POLICY, "flood", "too many frames: rate limit exceeded"))
                continue
            if msg.type == WSMsgType.PONG:
                if not self._on_pong(conn, msg.data, now) and session.record_drop(now):
                    return await self._refuse(conn, ProtocolError(
                        CLOSE_POLICY, "bad_pong", "too many unsolicited or forged pongs"))
                continue
            if msg.type == WSMsgType.PING:
                data = ws_frame(0xA, msg.data)
                conn.transport.write(data)  # a pong; its size is bounded by the frame limit
                self.metrics.bytes_sent.inc(len(data))
                continue
            if msg.type == WSMsgType.TEXT:
                return await self._refuse(conn, ProtocolError(
                    CLOSE_UNSUPPORTED, "text_frame", "binary protobuf frames only"))
            if msg.type != WSMsgType.BINARY:
                continue
            if size > limits.max_frame_bytes:
                return await self._refuse(conn, ProtocolError(
                    CLOSE_TOO_BIG, "too_big",
                    f"frame too big ({size} bytes, limit {limits.max_frame_bytes})"))
            try:
                self._on_frame(conn, parse_client_frame(msg.data), now)
            except ProtocolError as err:
                return await self._refuse(conn, err)
            except Exception:
                # A bug handling this client's frame: this client goes, nobody else notices.
                log.exception("error handling a frame", extra={"player": session.player_id})
                return await self._refuse(conn, ProtocolError(
                    CLOSE_INTERNAL_ERROR, "internal_error", "internal error"), log_it=False)
        return ws.close_code

    def _reject_metric(self, label: str) -> None:
        self.metrics.frames_rejected.labels(reason=label).inc()

    async def _refuse(self, conn: Connection, err: ProtocolError, *, log_it: bool = True
                      ) -> int:
        self._reject_metric(err.label)
        if log_it:
            peer = conn.transport.get_extra_info("peername")
            log.info("refused client: %s", err.reason,
                     extra={"player": conn.session.player_id, "code": err.code,
                            "label": err.label, "peer": str(peer)})
        conn.session.closing = True
        conn.session.close_code = err.code
        await self.close(conn.ws, conn.transport, err.code, err.reason,
                         kick=err.code == CLOSE_POLICY)
        return err.code

    def _on_pong(self, conn: Connection, payload: bytes, now: float) -> bool:
        """Feed an RTT sample; False for a pong that answers no ping of ours."""
        sample = conn.session.pings.on_pong(payload, now)
        if sample is None:
            self._reject_metric("bad_pong")
            return False
        self.metrics.rtt.observe(sample)
        if conn.room is not None:
            conn.room.set_rtt(conn.session.player_id, conn.session.pings.rtt.srtt_s * 1000.0)
        return True

    def _on_frame(self, conn: Connection, frame: pb.ClientFrame, now: float) -> None:
        session = conn.session
        if session.closing:
            return  # e.g. replaced by a resumed connection: its last frames are moot
        kind = frame.WhichOneof("kind")
        if kind == "ping" and conn.room is not None:
            pong = pb.Pong(client_time=frame.ping.client_time, server_time=now,
                           server_tick=conn.room.tick_number)
            data = ws_frame(_OP_BINARY, pb.ServerFrame(pong=pong).SerializeToString())
            conn.transport.write(data)
            self.metrics.bytes_sent.inc(len(data))
            return
        if not session.joined:
            if self.draining:
                raise ProtocolError(CLOSE_GOING_AWAY, "draining", "server shutting down")
            if kind == "join":
                self._join(conn, frame.join, now)
            elif kind == "resume":
                self._resume(conn, frame.resume, now)
            else:
                raise ProtocolError(CLOSE_POLICY, "before_join",
                                    f"{kind} before Join")
            return
        if kind in ("join", "resume"):
            raise ProtocolError(CLOSE_POLICY, "already_joined", f"{kind} after joining")
        if conn.room is None:
            return
        rejected = conn.room.submit(session.player_id, frame.input)
        for reason in rejected:
            self.metrics.inputs_rejected.labels(reason=reason).inc()
            if session.record_drop(now):
                raise ProtocolError(CLOSE_POLICY, "invalid_inputs",
                                    f"too many invalid inputs (last: {reason})")

    def _join(self, conn: Connection, join: pb.Join, now: float) -> None:
        check_version(join.protocol_version)
        try:
            check_name(join.name)  # before a room might be created for this player
            claim = conn.claim
            if claim is None and self.tokens_required:
                raise ProtocolError(CLOSE_POLICY, "token_missing",
                                    "Join needs a seat token (POST /matchmake)")
            if claim is not None:
                # A matchmade seat: its room (created at the upgrade if it was new).
                room = self.ensure_room(claim.room, claim.mode, claim.private)
            else:
                room, created = self.lobby.room_with_free_seat(
                    now, reserved=self._reserved, created_ms=int(time.time() * 1000))
                if created and self.fleet is not None:
                    self.fleet.wake()  # publish the new room now
            player_id = self.lobby.next_player_id()
            seat = room.join(player_id, join.name, now)
            if claim is not None and self.fleet is not None:
                self.fleet.seated(claim)
        except JoinRefused as exc:
            raise ProtocolError(CLOSE_POLICY, "bad_join", exc.reason) from None
        except (RoomFullError, LobbyFullError):
            raise ProtocolError(CLOSE_POLICY, "server_full", "server full") from None
        self._attach(conn, room, seat.player_id)
        log.info("player joined", extra={"player": seat.player_id, "room": room.room_id,
                                         "entity": seat.entity})

    def _resume(self, conn: Connection, resume: pb.Resume, now: float) -> None:
        check_version(resume.protocol_version)
        found = self.lobby.find_by_token(bytes(resume.token))
        if found is None:
            raise ProtocolError(CLOSE_POLICY, "bad_resume",
                                "resume token unknown or expired")
        room, seat = found
        try:
            room.resume(seat, now)
        except JoinRefused as exc:
            raise ProtocolError(CLOSE_POLICY, "bad_resume", exc.reason) from None
        stale = self.connections.get(seat.player_id)
        if stale is not None and stale is not conn:
            # The old socket is still open (a half-open connection): the new one wins.
            stale.room = None
            # Often half-open: the close is bounded by close_timeout_s, then aborted.
            self.close_soon(stale, CLOSE_POLICY, "replaced by a resumed connection",
                            label="replaced")
            self.metrics.players.dec()
        self._attach(conn, room, seat.player_id)
        log.info("player resumed", extra={"player": seat.player_id, "room": room.room_id})

    def _attach(self, conn: Connection, room: Room, player_id: int) -> None:
        conn.room = room
        conn.session.player_id = player_id
        conn.session.room_id = room.room_id
        self.connections[player_id] = conn
        self.metrics.players.inc()
        self._ensure_loop(room)

    def _detach(self, conn: Connection) -> None:
        player_id = conn.session.player_id
        if not player_id or self.connections.get(player_id) is not conn:
            return
        del self.connections[player_id]
        self.metrics.players.dec()
        if conn.room is not None:
            conn.room.disconnect(player_id, self.clock.now())
            if player_id not in conn.room.seats:
                log.info("player left", extra={"player": player_id})

    # -- HTTP routes -------------------------------------------------------------------------

    async def handle_healthz(self, request: web.Request) -> web.Response:
        return web.json_response({
            "status": "draining" if self.draining else "ok",
            "registry": self.fleet.health() if self.fleet is not None else None,
            "rooms": len(self.lobby.rooms),
            "players": self.lobby.player_count,
            "connections": len(self.connections),
            "tick_rate": self.config.params.tick_rate,
            "uptime_s": round(self.clock.now() - self.started_at, 3),
            "process": process_stats(),
        })

    async def handle_rooms(self, request: web.Request) -> web.Response:
        """The fleet's public rooms; this node's carry their local detail."""
        local = {}
        for room in self.lobby.rooms.values():
            schedule = self.schedule_for(room.room_id)
            stats = schedule.stats() if schedule else {}
            local[room.room_id] = {
                "id": room.room_id,
                "players": len(room.seats),
                "connected": sum(1 for s in room.seats.values() if s.connected),
                "capacity": room.capacity,
                "tick": room.tick_number,
                "tick_rate": room.params.tick_rate,
                "tick_duration_p99_ms": round(stats.get("duration_p99_s", 0.0) * 1000, 3),
                "overruns": stats.get("overruns", 0),
                "seats": [{"player_id": s.player_id, "name": s.name, "entity": s.entity,
                           "connected": s.connected, "rtt_ms": round(s.rtt_ms, 2)}
                          for s in room.seats.values()],
            }
        return web.json_response(await fleet_rooms(self, local))

    async def handle_matchmake(self, request: web.Request) -> web.Response:
        """POST /matchmake: a seat in the fleet and the token to take it with."""
        return await fleet_matchmake(self, request)

    async def handle_metrics(self, request: web.Request) -> web.Response:
        body, content_type = self.metrics.render()
        response = web.Response(body=body)
        response.headers["Content-Type"] = content_type
        return response

    async def handle_index(self, request: web.Request) -> web.StreamResponse:
        index = self.config.web_root / "index.html"
        if not index.is_file():
            return web.Response(text="Tickwire is running; the demo client is not installed "
                                     "(run `make install`).", content_type="text/plain")
        return web.FileResponse(index)

    async def shutdown(self) -> None:
        """Drain: a last snapshot to everyone, every socket closed with 1001, rooms stopped.

        aiohttp has already stopped accepting connections when this runs.
        """
        self.draining = True
        await self.stop_rooms()  # no scheduled tick may interleave with the last one
        now = self.clock.now()
        for room in list(self.lobby.rooms.values()):
            with contextlib.suppress(Exception):
                self._deliver(room.tick(now), now)
        closing = [self.close(ws, transport, CLOSE_GOING_AWAY, "server shutting down",
                              kick=True)
                   for ws, transport in list(self.sockets.items())]
        if closing:
            await asyncio.wait([asyncio.ensure_future(c) for c in closing],
                               timeout=self.config.shutdown_timeout_s)
        await self.stop_rooms()


GATEWAY_KEY = web.AppKey("gateway", Gateway)


def build_app(config: GatewayConfig, clock: Clock | None = None) -> web.Application:
    """The aiohttp application with every route; the caller runs it."""
    app = web.Application()
    gateway = Gateway(config, clock)
    app[GATEWAY_KEY] = gateway
    app.router.add_get("/ws", gateway.handle_ws)
    app.router.add_get("/healthz", gateway.handle_healthz)
    app.router.add_get("/rooms", gateway.handle_rooms)
    app.router.add_get("/metrics", gateway.handle_metrics)
    app.router.add_post("/matchmake", gateway.handle_matchmake)
    app.router.add_get("/", gateway.handle_index)
    _add_static(app, config.web_root)
    add_admin_routes(app, gateway, config.admin_token)

    async def background(app: web.Application) -> AsyncIterator[None]:
        yield
        await gateway.stop_rooms()

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


def _add_static(app: web.Application, root: Path) -> None:
    """The demo client's files, its generated descriptor and the protobufjs build."""
    mounts = {
        "/vendor/protobufjs": root / "node_modules" / "protobufjs" / "dist",
        "/gen": root / "gen",
    }
    for prefix, path in mounts.items():
        if path.is_dir():
            app.router.add_static(prefix, path)
        else:
            log.warning("not serving %s: %s is missing (run `make install`)", prefix, path)
    if root.is_dir():
        # Top-level client files (/app.js, /style.css, ...) without a prefix.
        async def top_level(request: web.Request) -> web.StreamResponse:
            name = request.match_info["name"]
            path = root / name
            if not path.is_file():
                raise web.HTTPNotFound()
            return web.FileResponse(path)

        app.router.add_get(r"/{name:[A-Za-z0-9_-]+\.(?:js|mjs|css|html|svg|png|ico|json)}",
                           top_level)
