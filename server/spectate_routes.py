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
tick however many watch (``LiveFrames``), and the number of open streams is capped.
"""

from __future__ import annotations

import asyncio
import json
import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

from aiohttp import web

from server.spectate import MAX_FRAMES, LiveFrames, ReplayTimeline, world_info
from server.static import WEB_ROOT, add_client_files

if TYPE_CHECKING:
    from server.control import ServerControl
    from server.room import Room

__all__ = ["MAX_SPECTATORS", "add_spectate_routes", "build_replay_app"]

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


class _LiveStreams:
    def __init__(self) -> None:
        self.open = 0
        self.frames: dict[str, LiveFrames] = {}
        self.encoded: dict[str, tuple[int, bytes]] = {}

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


def _room_players(room: Room) -> list[dict[str, Any]]:
    return [{"player_id": s.player_id, "slot": s.entity, "name": s.name,
             "connected": s.connected} for s in room.seats.values()]


def add_spectate_routes(app: web.Application, server: ServerControl) -> None:
    """Add ``/spectate/{room}`` and ``/spectate/{room}/events`` to a game server's app.
    The page is ``/replay.html?room=ID`` (served with the demo client's files)."""
    streams = _LiveStreams()

    def room_or_404(request: web.Request) -> Room:
        room = server.rooms().get(request.match_info["room"])
        if room is None:
            raise web.HTTPNotFound(text="no such room")
        return room

    async def describe(request: web.Request) -> web.Response:
        room = room_or_404(request)
        return web.json_response({"room": room.room_id, "tick": room.world.tick,
                                  **world_info(room.world), "players": _room_players(room)})

    async def events(request: web.Request) -> web.StreamResponse:
        room = room_or_404(request)
        if streams.open >= MAX_SPECTATORS:
            return web.json_response({"error": "too many spectators"}, status=503)
        streams.open += 1
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream",
                                           "Cache-Control": "no-store"})
        try:
            await resp.prepare(request)
            last_tick = -1
            names_sent = -1.0
            loop = asyncio.get_running_loop()
            while server.rooms().get(room.room_id) is room and not server.draining:
                now = loop.time()
                if now - names_sent >= 1.0:  # who is who changes rarely: once a second
                    names_sent = now
                    players = json.dumps(_room_players(room), separators=(",", ":"))
                    await resp.write(f"event: players\ndata: {players}\n\n".encode())
                tick, data = streams.event(room)
                if tick != last_tick:
                    last_tick = tick
                    await resp.write(data)
                await asyncio.sleep(room.params.dt / 2)  # never more than half a tick late
        except ConnectionResetError:
            pass  # the spectator went away
        finally:
            streams.open -= 1
        return resp

    app.router.add_get("/spectate/{room}", describe)
    app.router.add_get("/spectate/{room}/events", events)
