"""The designer/operator HTTP API: read and change parameters live, kick a player.

Every ``/admin/...`` API route needs ``Authorization: Bearer <token>`` (compared in
constant time; 401 otherwise). With no token configured none of the admin routes exist
(404), so a server started without one exposes nothing. The page at ``/admin`` is static
and holds no secret: it asks the user for the token and sends it with each API call.

The routes act through ``ServerControl`` (server/control.py), the narrow interface the
gateway implements. Changes go through ``apply_params``, the same path the file watcher uses, so a
value is validated exactly as in the TOML file (``Params.with_changes``) and reaches every
room at its next tick.
"""

from __future__ import annotations

import hmac
import json
import logging
from typing import TYPE_CHECKING

from aiohttp import web

from server.bans import MAX_BAN_S
from sim.params import ParamsError, schema

if TYPE_CHECKING:
    from server.control import ServerControl

__all__ = ["KICK_REASON", "add_admin_routes"]

log = logging.getLogger("tickwire.admin")

KICK_REASON = "kicked by admin"
_SCHEMA_FIELDS = ("type", "min", "max", "choices", "unit", "doc", "live", "default")


def add_admin_routes(app: web.Application, server: ServerControl, token: str | None
                     ) -> None:
    """Register ``/admin`` (page), ``/admin/params`` (GET, POST),
    ``/admin/rooms/{room}/kick/{player}`` (POST, ``?ban_s=N``) and ``/admin/bans`` (GET).
    ``token`` None or empty: register nothing."""
    if not token:
        return
    expected = token.encode()

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
        return web.json_response({"version": server.params_version,
                                  "values": server.params.to_dotted(), "schema": keys})

    async def post_params(request: web.Request) -> web.Response:
        if not authorized(request):
            return unauthorized()
        try:
            changes = json.loads(await request.read())
        except (ValueError, UnicodeDecodeError) as exc:
            return web.json_response({"error": f"body is not JSON: {exc}"}, status=400)
        if not isinstance(changes, dict):
            return web.json_response(
                {"error": 'body must be a JSON object of dotted keys, e.g. '
                          '{"player.max_speed": 250}'}, status=400)
        try:
            new = server.params.with_changes(changes)
            version, restart = server.apply_params(new, source="admin api")
        except ParamsError as exc:
            log.info("admin parameter change rejected: %s", exc)
            return web.json_response({"error": str(exc)}, status=400)
        return web.json_response({"version": version, "restart_required": restart})

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
    app.router.add_post("/admin/rooms/{room}/kick/{player}", kick)
    app.router.add_get("/admin/bans", bans)
