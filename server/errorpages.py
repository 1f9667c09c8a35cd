"""Small HTML pages for people who open the wrong URL in a browser.

Two cases, both answered by one aiohttp middleware (`error_pages`):

* ``/ws`` opened as a page (no ``Upgrade: websocket``): aiohttp would answer 400 "No
  WebSocket UPGRADE hdr". We answer 426 Upgrade Required with a page that says this is
  the game's WebSocket endpoint and links to the game at ``/``. The check runs before the
  handler, so a real upgrade is never touched.
* any 404 for a request that accepts HTML: a page that says what this server is and
  links to ``/``. Programs (``Accept: application/json``, curl's ``*/*``) keep the plain
  404, so APIs and scripts see what they always saw.

Wiring (the gateway): ``web.Application(middlewares=[error_pages])``. The page is built
once; it holds no request data (nothing is echoed back, so there is nothing to escape).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from aiohttp import web

WS_PATHS = frozenset({"/ws"})

_STYLE = ("body{margin:0;background:#0b0f17;color:#dfe7f5;font:15px/1.5 system-ui,sans-serif;"
          "display:grid;place-items:center;min-height:100vh}"
          "main{max-width:34em;padding:24px}h1{font-size:20px;margin:0 0 8px}"
          "p{color:#8893a7}a{color:#38d9ff}code{color:#dfe7f5}")


def _page(title: str, body: str) -> str:
    return (f'<!doctype html><html lang="en"><head><meta charset="utf-8">'
            f'<meta name="viewport" content="width=device-width, initial-scale=1">'
            f"<title>{title} · Tickwire</title><style>{_STYLE}</style></head>"
            f"<body><main><h1>{title}</h1>{body}"
            f'<p><a href="/">Play the Tickwire arena →</a></p></main></body></html>')


NOT_FOUND_HTML = _page(
    "Nothing here",
    "<p>This is a <b>Tickwire</b> game server: a multiplayer arena you play in the "
    "browser. The page you asked for does not exist.</p>")

WS_HTML = _page(
    "This is the game's WebSocket endpoint",
    "<p><code>/ws</code> is where the Tickwire game client connects to play; it speaks "
    "WebSocket, not web pages, so there is nothing to see here in a browser tab.</p>")


def wants_html(request: web.Request) -> bool:
    """True for a browser navigation: text/html is explicitly accepted."""
    return "text/html" in request.headers.get("Accept", "")


def is_plain_http_to_ws(request: web.Request) -> bool:
    """A GET of a WebSocket path without ``Upgrade: websocket`` (a browser tab, curl)."""
    return (request.path in WS_PATHS and request.method == "GET"
            and request.headers.get("Upgrade", "").lower() != "websocket")


def ws_endpoint_page() -> web.Response:
    """426 Upgrade Required, with the page for people and the header for programs."""
    return web.Response(status=426, text=WS_HTML, content_type="text/html",
                        headers={"Upgrade": "websocket", "Cache-Control": "no-store"})


def not_found_page() -> web.Response:
    return web.Response(status=404, text=NOT_FOUND_HTML, content_type="text/html")


Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@web.middleware
async def error_pages(request: web.Request, handler: Handler) -> web.StreamResponse:
    if is_plain_http_to_ws(request):
        return ws_endpoint_page()
    try:
        response = await handler(request)
    except web.HTTPNotFound:
        if wants_html(request):
            return not_found_page()
        raise
    if (response.status == 404 and wants_html(request) and not response.prepared
            and response.content_type != "application/json"):  # an API's 404 stays JSON
        return not_found_page()
    return response
