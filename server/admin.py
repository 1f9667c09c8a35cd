"""The designer/operator HTTP API: read and change parameters live, follow them, kick a
player.

Every ``/admin/...`` API route needs ``Authorization: Bearer <token>`` (compared in
constant time; 401 otherwise). With no token configured none of the admin routes exist
(404), so a server started without one exposes nothing. The page at ``/admin`` is static
and holds no secret: it asks the user for the token and sends it with each API call.

The routes act through ``ServerControl`` (server/control.py), the narrow interface the
gateway implements. Changes go through ``LiveParams.change`` (``server.liveparams``): with
a parameters file the change is written into the file and applied by reading the file
back, the path a saved file takes; without one it applies in memory and the answer says
it is not persisted. ``GET /admin/events`` is a server-sent event stream of the running
version, each change and each file error. (The fleet view, ``GET /admin/fleet``, is in
``server/routes.py``, beside ``/rooms`` whose room detail it shares, behind the same token.)
A bad body (not JSON, too large, nested too
deep, a key spelled twice, an empty or out-of-range value) is a 400 that names the
problem, one log line and ``tickwire_params_updates_total{source="admin",result="rejected"}``.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import logging
from typing import TYPE_CHECKING, Any

from aiohttp import web
from prometheus_client import Counter

from server.bans import MAX_BAN_S
from server.liveparams import live_params_for
from sim.params import ParamsError, normalize_changes, schema

if TYPE_CHECKING:
    from server.control import ServerControl

__all__ = ["KICK_REASON", "MAX_BODY_BYTES", "add_admin_routes", "parse_changes"]

log = logging.getLogger("tickwire.admin")

KICK_REASON = "kicked by admin"
_SCHEMA_FIELDS = ("type", "min", "max", "choices", "unit", "doc", "live", "default")
MAX_BODY_BYTES = 64 * 1024  # every parameter at once is about 1.5 KiB of JSON
EVENT_KEEPALIVE_S = 15.0  # an SSE comment this often keeps proxies from closing the stream
# A page that stops reading (a laptop asleep, a stuck proxy) blocks the stream's write once
# the socket buffers are full; past this the stream is cut, so it holds no task forever.
EVENT_STALL_S = 10.0


class BodyTooLarge(ParamsError):
    """The request body is over ``MAX_BODY_BYTES``."""


def _reject_constant(name: str) -> float:
    raise ParamsError(f"{name} is not a JSON number; send a finite number")


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            raise ParamsError(f"{key} is given twice in one JSON object; give it once")
        out[key] = value
    return out


def parse_changes(body: bytes) -> dict[str, object]:
    """The body of ``POST /admin/params`` as ``{dotted_key: value}``, keys checked; values
    are checked later, with the whole set. Raises ``ParamsError`` with a message for the
    sender: too large, not UTF-8 JSON, nested too deep, NaN/Infinity, not an object, an
    unknown key, or one key given twice (in one object, or as a dotted key and a table)."""
    if len(body) > MAX_BODY_BYTES:
        raise BodyTooLarge(f"body is {len(body)} bytes; at most {MAX_BODY_BYTES} are accepted")
    try:
        changes = json.loads(body, object_pairs_hook=_unique_keys,
                             parse_constant=_reject_constant)
    except RecursionError:
        # The C scanner recurses once per level: 100k '[' exhaust the stack. A parameters
        # object has two levels at most.
        raise ParamsError("body is nested too deeply; send one JSON object of dotted keys, "
                          'e.g. {"player.max_speed": 250}') from None
    except ParamsError:
        raise
    except ValueError as exc:  # JSONDecodeError, UnicodeDecodeError, int too long
        raise ParamsError(f"body is not JSON: {exc}") from None
    if not isinstance(changes, dict):
        raise ParamsError('body must be a JSON object of dotted keys, e.g. '
                          '{"player.max_speed": 250}')
    return normalize_changes(changes)


def add_admin_routes(app: web.Application, server: ServerControl, token: str | None,
                     *, stall_s: float = EVENT_STALL_S) -> None:
    """Register ``/admin`` (page), ``/admin/params`` (GET, POST), ``/admin/events`` (GET,
    server-sent events; a stream whose write blocks for `stall_s` is cut, counted in
    ``tickwire_admin_streams_cut_total`` and logged), ``/admin/rooms/{room}/kick/{player}``
    (POST, ``?ban_s=N``) and ``/admin/bans`` (GET). ``token`` None or empty: register no
    route."""
    # Made even without a token: the file watcher shares it.
    live = live_params_for(app, server)
    if not token:
        return
    expected = token.encode()
    cut = Counter("tickwire_admin_streams_cut",
                  "Admin event streams cut because the page stopped reading.",
                  registry=server.metrics.registry)

    async def close_feed(app: web.Application) -> None:
        live.feed.close()  # open event streams end, so shutdown does not wait on them

    def authorized(request: web.Request) -> bool:
        header = request.headers.get("Authorization", "")
        scheme, _, given = header.partition(" ")
        # compare_digest on bytes: no early exit that would leak the token's prefix.
        return scheme.lower() == "bearer" and hmac.compare_digest(given.strip().encode(),
                                                                  expected)

    def unauthorized() -> web.Response:
        return web.json_response({"error": "missing or wrong admin token"}, status=401,
                                 headers={"WWW-Authenticate": "Bearer"})

    async def page(request: web.Request) -> web.StreamResponse:
        path = server.web_root / "admin.html"
        if not path.is_file():
            raise web.HTTPNotFound(text="the admin page is not installed")
        return web.FileResponse(path, headers={"Cache-Control": "no-store"})

    async def get_params(request: web.Request) -> web.Response:
        if not authorized(request):
            return unauthorized()
        keys = {key: {k: meta[k] for k in _SCHEMA_FIELDS}
                for key, meta in schema().items()}
        return web.json_response({**live.state(), "schema": keys})

    async def post_params(request: web.Request) -> web.Response:
        if not authorized(request):
            return unauthorized()
        if (request.content_length or 0) > MAX_BODY_BYTES:
            return rejected(f"body is {request.content_length} bytes; at most "
                            f"{MAX_BODY_BYTES} are accepted", status=413)
        try:
            body = await request.read()
        except web.HTTPRequestEntityTooLarge:
            return rejected(f"body is too large; at most {MAX_BODY_BYTES} bytes are accepted",
                            status=413)
        try:
            result = await live.change(parse_changes(body))
        except BodyTooLarge as exc:
            return rejected(str(exc), status=413)
        except ParamsError as exc:
            return rejected(str(exc))
        return web.json_response(result)

    def rejected(error: str, status: int = 400) -> web.Response:
        log.info("admin parameter change rejected: %s", error)
        server.metrics.params_updates.labels(source="admin", result="rejected").inc()
        return web.json_response({"error": error}, status=status)

    async def events(request: web.Request) -> web.StreamResponse:
        """Server-sent events: ``state`` first, then one event per change or file error,
        each with the whole state; a comment line every EVENT_KEEPALIVE_S seconds."""
        if not authorized(request):
            return unauthorized()
        queue = live.feed.subscribe()
        if queue is None:
            return web.json_response({"error": "too many event streams open"}, status=503)
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream",
                                           "Cache-Control": "no-store",
                                           "X-Accel-Buffering": "no"})
        async def send(data: bytes) -> None:
            try:
                async with asyncio.timeout(stall_s):
                    await resp.write(data)
            except TimeoutError:
                cut.inc()
                log.warning("admin event stream not read for %g s, cut", stall_s,
                            extra={"peer": request.remote})
                if request.transport is not None:
                    request.transport.abort()
                raise ConnectionResetError from None

        try:
            await resp.prepare(request)
            await send(_sse("state", {"event": "state", "state": live.state()}))
            while True:
                try:
                    event = await asyncio.wait_for(queue.get(), EVENT_KEEPALIVE_S)
                except TimeoutError:
                    await send(b": keepalive\n\n")
                    continue
                if event is None:  # the server stops, or this reader fell behind
                    break
                await send(_sse(event["event"], event))
        except ConnectionResetError:
            pass  # the page went away, or stopped reading and was cut
        finally:
            live.feed.unsubscribe(queue)
        return resp

    async def kick(request: web.Request) -> web.Response:
        """Kick a player; their name is then refused for ``--kick-ban-s``. ``?ban_s=N``
        (the admin page's Ban button) bans the name *and* the address for N seconds. A
        plain kick leaves the address alone: players behind one NAT (or every local
        test client) share it."""
        if not authorized(request):
            return unauthorized()
        room_id = request.match_info["room"]
        try:
            player_id = int(request.match_info["player"])
        except ValueError:
            player_id = -1
        try:
            ban_s = float(request.query["ban_s"]) if "ban_s" in request.query else None
        except ValueError:
            ban_s = -1.0
        if ban_s is not None and not (0.0 <= ban_s <= MAX_BAN_S):
            return web.json_response(
                {"error": f"ban_s must be a number of seconds in [0, {MAX_BAN_S:.0f}]"},
                status=400)
        banned_s = server.kick(room_id, player_id, KICK_REASON, ban_s=ban_s)
        if banned_s is None:
            return web.json_response({"error": "no such room or player"}, status=404)
        return web.json_response({"kicked": player_id, "room": room_id,
                                  "banned_s": banned_s})

    async def bans(request: web.Request) -> web.Response:
        if not authorized(request):
            return unauthorized()
        return web.json_response({"bans": server.bans()})

    app.router.add_get("/admin", page)
    app.router.add_get("/admin/params", get_params)
    app.router.add_post("/admin/params", post_params)
    app.router.add_get("/admin/events", events)
    app.on_shutdown.append(close_feed)
    app.router.add_post("/admin/rooms/{room}/kick/{player}", kick)
    app.router.add_get("/admin/bans", bans)


def _sse(event: str, data: dict[str, Any]) -> bytes:
    """One server-sent event; JSON has no raw newlines, so one data line is enough."""
    return f"event: {event}\ndata: {json.dumps(data, separators=(',', ':'))}\n\n".encode()
