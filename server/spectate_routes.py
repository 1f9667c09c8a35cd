"""HTTP routes for spectators: the replay server of ``tickwire replay FILE --serve`` and the
live-room stream a game server can add.

Replay (``build_replay_app``): ``GET /`` is the spectator page, ``GET /replay/info`` the
recording's tick range, players and world sizes, ``GET /replay/frames?from=T&count=N``
frames of ticks T..T+N-1 (N at most ``MAX_FRAMES``). The page buffers ahead and keeps
play, pause, speed, seek and follow to itself. Frames are computed off the event loop, one
request at a time (the timeline keeps one cursor).

Live (``add_spectate_routes``): ``GET /spectate/{room}`` is ``{info, players}`` and
``GET /spectate/{room}/events`` a server-sent event stream with one frame per tick.
Spectators take no seat and send nothing; a room's frame is built and encoded once per
tick however many watch (``LiveFrames``). Open streams are capped on the server and per
address, a stream nobody reads is cut (``SpectateLimits``), private rooms are not
watchable without the admin token and names follow /rooms' rule.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from aiohttp import web
from prometheus_client import Counter

from server.handshake import ConnectionsPerIp, address_key
from server.routes import bearer_matches
from server.spectate import MAX_FRAMES, LiveFrames, ReplayTimeline, world_info
from server.static import WEB_ROOT, add_client_files

if TYPE_CHECKING:
    from server.control import ServerControl
    from server.room import Room

__all__ = ["MAX_SPECTATORS", "SPECTATORS_KEY", "LiveStreams", "SpectateLimits",
           "add_spectate_routes", "build_replay_app"]

log = logging.getLogger("tickwire.spectate")

MAX_SPECTATORS = 64  # open live streams per server


def _int_query(request: web.Request, name: str, default: int) -> int:
    text = request.query.get(name)
    if text is None:
        return default
    try:
        return int(text)
    except ValueError:
        raise web.HTTPBadRequest(text=f"{name} must be an integer, got {text!r}") from None


def _page_files(app: web.Application, web_root: Path) -> None:
    async def page(request: web.Request) -> web.StreamResponse:
        path = web_root / "replay.html"
        if not path.is_file():
            raise web.HTTPNotFound(text="the spectator page is not installed")
        return web.FileResponse(path, headers={"Cache-Control": "no-store"})

    app.router.add_get("/", page)
    add_client_files(app, web_root)

def build_replay_app(timeline: ReplayTimeline, web_root: Path = WEB_ROOT) -> web.Application:
    """The spectator app for one recording (see module docs)."""
    app = web.Application()
    lock = asyncio.Lock()

    async def info(request: web.Request) -> web.Response:
        return web.json_response(timeline.describe())

    async def frames(request: web.Request) -> web.Response:
        start = _int_query(request, "from", timeline.start_tick)
        count = _int_query(request, "count", 60)
        if count < 1:
            raise web.HTTPBadRequest(text="count must be at least 1")
        async with lock:
            out = await asyncio.to_thread(timeline.frames, start, min(count, MAX_FRAMES))
        return web.json_response({"frames": out})

    app.router.add_get("/replay/info", info)
    app.router.add_get("/replay/frames", frames)
    _page_files(app, web_root)
    return app


@dataclass(frozen=True, slots=True)
class SpectateLimits:
    """Live spectator streams: at most `max_streams` open on the server and `per_ip` from
    one address (`server.handshake.address_key`); a stream whose frame could not be
    written for `stall_s` seconds (the reader stopped reading) is cut. 0 = no cap."""

    max_streams: int = MAX_SPECTATORS
    per_ip: int = 4
    stall_s: float = 5.0


class LiveStreams:
    """Open spectator streams (counts, per address) and each watched room's frame."""

    def __init__(self, limits: SpectateLimits) -> None:
        self.limits = limits
        self.open = 0
        self.per_ip = ConnectionsPerIp(limits.per_ip)
        self.frames: dict[str, LiveFrames] = {}
        self.encoded: dict[str, tuple[int, bytes]] = {}
        self.watching: dict[str, int] = {}  # room -> open streams

    def opened(self, room_id: str, ip: str) -> None:
        self.open += 1
        self.per_ip.opened(ip)
        self.watching[room_id] = self.watching.get(room_id, 0) + 1

    def closed(self, room_id: str, ip: str) -> None:
        """A stream ended; the room's cached frame goes with its last watcher (a frame of
        a big world is hundreds of KB, and rooms come and go all day)."""
        self.open -= 1
        self.per_ip.closed(ip)
        self.watching[room_id] -= 1
        if self.watching[room_id] <= 0:
            del self.watching[room_id]
            self.frames.pop(room_id, None)
            self.encoded.pop(room_id, None)

    def refusal(self, ip: str) -> tuple[str, str] | None:
        """(label, sentence) when one more stream from `ip` is over a cap."""
        cap = self.limits.max_streams
        if cap and self.open >= cap:
            return "max_streams", f"too many spectators (limit {cap})"
        if self.per_ip.check(ip, 0.0) is not None:
            return "per_ip", (f"too many spectator streams from {address_key(ip)} "
                              f"(limit {self.limits.per_ip})")
        return None

    def event(self, room: Room) -> tuple[int, bytes]:
        """The room's current frame as one SSE event, encoded once per tick."""
        tick = room.world.tick
        cached = self.encoded.get(room.room_id)
        if cached is None or cached[0] != tick:
            frame = self.frames.setdefault(room.room_id, LiveFrames()).frame(room.world)
            data = json.dumps(frame, separators=(",", ":"))
            cached = (tick, f"event: frame\ndata: {data}\n\n".encode())
            self.encoded[room.room_id] = cached
        return cached


SPECTATORS_KEY = web.AppKey("spectators", LiveStreams)


def _room_players(room: Room, with_names: bool) -> list[dict[str, Any]]:
    return [{"player_id": s.player_id, "slot": s.entity, "connected": s.connected,
             **({"name": s.name} if with_names else {})} for s in room.seats.values()]


def add_spectate_routes(app: web.Application, server: ServerControl, *,
                        limits: SpectateLimits | None = None,
                        is_private: Callable[[str], bool] | None = None,
                        admin_token: str | None = None,
                        public_player_names: bool = False) -> None:
    """Add ``/spectate/{room}`` and ``/spectate/{room}/events`` to a game server's app.
    The page is ``/replay.html?room=ID`` (served with the demo client's files).

    What a spectator may see follows /rooms: player names only with the admin token
    (``Authorization: Bearer``) or `public_player_names`; a private room
    (`is_private(room_id)`) only with the admin token, else the same 404 as a room that
    does not exist (its id is a share link, not a way in for watchers). Refusals are
    counted in ``tickwire_spectators_refused_total{reason}`` and logged."""
    limits = limits or SpectateLimits()
    streams = app[SPECTATORS_KEY] = LiveStreams(limits)
    refused = Counter("tickwire_spectators_refused",
                      "Live spectator requests refused or streams cut, by reason "
                      "(max_streams, per_ip, private, stalled).", ["reason"],
                      registry=server.metrics.registry)

    def refuse(reason: str, message: str, request: web.Request) -> None:
        refused.labels(reason=reason).inc()
        log.info("spectator refused: %s", message,
                 extra={"reason": reason, "peer": request.remote})

    def room_or_404(request: web.Request) -> tuple[Room, bool]:
        """The room, and whether the request may see names."""
        room_id = request.match_info["room"]
        room = server.rooms().get(room_id)
        admin = bearer_matches(request, admin_token)
        if room is not None and is_private is not None and is_private(room_id) and not admin:
            refuse("private", f"room {room_id} is private", request)
            room = None
        if room is None:
            raise web.HTTPNotFound(text="no such room")
        return room, public_player_names or admin

    async def describe(request: web.Request) -> web.Response:
        room, names = room_or_404(request)
        return web.json_response({"room": room.room_id, "tick": room.world.tick,
                                  **world_info(room.world),
                                  "players": _room_players(room, names)})

    async def events(request: web.Request) -> web.StreamResponse:
        room, names = room_or_404(request)
        ip = request.remote or "unknown"
        over = streams.refusal(ip)
        if over is not None:
            refuse(*over, request)
            return web.json_response({"error": over[0], "message": over[1]}, status=503,
                                     headers={"Retry-After": "5"})
        streams.opened(room.room_id, ip)
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream",
                                           "Cache-Control": "no-store"})
        stall_s = limits.stall_s or None
        try:
            await resp.prepare(request)
            last_tick = -1
            names_sent = -1.0
            loop = asyncio.get_running_loop()
            while server.rooms().get(room.room_id) is room and not server.draining:
                now = loop.time()
                # A reader that stopped reading blocks the write once the socket buffers
                # are full: bounded, so it cannot hold its stream slot forever.
                async with asyncio.timeout(stall_s):
                    if now - names_sent >= 1.0:  # who is who changes rarely
                        names_sent = now
                        players = json.dumps(_room_players(room, names),
                                             separators=(",", ":"))
                        await resp.write(f"event: players\ndata: {players}\n\n".encode())
                    tick, data = streams.event(room)
                    if tick != last_tick:
                        last_tick = tick
                        await resp.write(data)
                await asyncio.sleep(room.params.dt / 2)  # never more than half a tick late
        except TimeoutError:
            refuse("stalled", f"spectator stream not read for {limits.stall_s:g} s, cut",
                   request)
            if request.transport is not None:
                request.transport.abort()
        except ConnectionResetError:
            pass  # the spectator went away
        finally:
            streams.closed(room.room_id, ip)
        return resp

    app.router.add_get("/spectate/{room}", describe)
    app.router.add_get("/spectate/{room}/events", events)
