"""POST /matchmake from a client: where to connect, with which seat token.

Any node of a fleet answers; the answer's `url` is the owning node's /ws with the token.
A 503 (the registry is unreachable, or every node is full) and a 429 (over this address's
matchmaking or room-creation rate) are retried with the same `request_id`, so a retry
never reserves a second seat. A `Retry-After` the server sends is honoured (the wait is
what the server asked, up to `max_wait_s`; a longer one is an error at once, since
waiting it out would look like a hang); without one the wait grows from 0.2 s to 2 s.
"""

from __future__ import annotations

import asyncio
import secrets
from urllib.parse import urlsplit, urlunsplit

import aiohttp


class MatchmakeError(Exception):
    """Matchmaking failed; `status` is the last HTTP status (0: unreachable)."""

    def __init__(self, message: str, status: int = 0) -> None:
        super().__init__(message)
        self.status = status


def matchmake_url(base: str) -> str:
    """http(s)://HOST:PORT[/...] -> http(s)://HOST:PORT/matchmake."""
    parts = urlsplit(base)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ValueError(f"{base!r} is not an http:// or https:// URL with a host")
    return urlunsplit((parts.scheme, parts.netloc, "/matchmake", "", ""))


def without_token(ws_url: str) -> str:
    """A /ws URL without its query (a seat token is single-use; a Resume needs none)."""
    parts = urlsplit(ws_url)
    return urlunsplit((parts.scheme, parts.netloc, parts.path, "", ""))


def retry_after_s(value: str | None) -> float | None:
    """A Retry-After header's delay in seconds (RFC 9110 §10.2.3), or None when absent or
    not delay-seconds (the HTTP-date form is not used by Tickwire's servers)."""
    if value is None or not value.strip().isdigit():
        return None
    return float(int(value.strip()))


async def matchmake(session: aiohttp.ClientSession, base: str, *, mode: str | None = None,
                    room: str | None = None, create: bool = False, attempts: int = 5,
                    timeout_s: float = 5.0, max_wait_s: float = 10.0) -> dict:
    """The /matchmake answer (url, room, node, token, expires_in_s); raises
    MatchmakeError after `attempts` tries (a 4xx other than 429 is not retried)."""
    body: dict[str, object] = {"request_id": secrets.token_hex(8)}
    if mode:
        body["mode"] = mode
    if room:
        body["room"] = room
    if create:
        body["create"] = True
    url = matchmake_url(base)
    last = MatchmakeError(f"{url}: no answer")
    for attempt in range(attempts):
        wait = min(2.0, 0.2 * 2 ** attempt)
        try:
            async with session.post(url, json=body,
                                    timeout=aiohttp.ClientTimeout(total=timeout_s)) as resp:
                answer = await resp.json(content_type=None)
                if resp.status == 200:
                    return answer
                last = MatchmakeError(f"{url}: {resp.status} {answer.get('message', '')}",
                                      resp.status)
                if resp.status < 500 and resp.status != 429:
                    raise last
                asked = retry_after_s(resp.headers.get("Retry-After"))
                if asked is not None:
                    if asked > max_wait_s:
                        raise MatchmakeError(f"{last} (retry after {asked:g} s)", resp.status)
                    wait = asked
        except (aiohttp.ClientError, OSError, TimeoutError, ValueError) as exc:
            last = MatchmakeError(f"{url}: {exc or type(exc).__name__}")
        if attempt + 1 < attempts:
            await asyncio.sleep(wait)
    raise last
