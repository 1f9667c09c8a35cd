"""What one client address may ask of POST /matchmake, before any registry call.

Sans-I/O (time is an argument). Matchmaking is unauthenticated, and each answer costs the
fleet something that outlives the request: a reserved seat for the token's life, and for
`create` a whole room ticking on a node until it has been empty for a while. Without a
bound, one host's loop of `{"create": true}` fills every node's `max_rooms` in a second
(and then `fleet_full` for everyone), and a loop of plain requests holds every free seat.

Two token buckets per address (`server.handshake.address_key`: IPv6 per /64):

- every request: `rate_per_s` with a burst of `burst` (defaults as for new WebSockets:
  20/s after 256, so one host's load-test swarm still gets its seats);
- requests that create a room: `creates_per_min` with a burst of `create_burst`.

A refusal is a `Refusal` (429, its label, a sentence); the route turns it into JSON with
`Retry-After`. The buckets live in an LRU of at most `max_tracked` addresses.
"""

from __future__ import annotations

import math
from collections import OrderedDict
from dataclasses import dataclass

from aiohttp import web

from server.handshake import Refusal, address_key
from server.ratelimit import TokenBucket

__all__ = ["MATCHMAKE_GUARD_KEY", "MAX_MATCHMAKE_BODY", "MatchmakeGuard", "MatchmakeLimits"]

MAX_MATCHMAKE_BODY = 4096  # bytes; a request is four short fields (~150 bytes)


@dataclass(frozen=True, slots=True)
class MatchmakeLimits:
    """Per-address limits of POST /matchmake; a rate of 0 turns that bucket off."""

    rate_per_s: float = 20.0
    burst: float = 256.0
    creates_per_min: float = 6.0
    create_burst: float = 4.0


class _Buckets:
    def __init__(self, rate_per_s: float, burst: float, max_tracked: int) -> None:
        self.rate_per_s = rate_per_s
        self.burst = max(1.0, burst)
        self.max_tracked = max_tracked
        self._by_key: OrderedDict[str, TokenBucket] = OrderedDict()

    def take(self, key: str, now: float) -> float:
        """0.0 when accepted, else the seconds until a token is back."""
        bucket = self._by_key.get(key)
        if bucket is None:
            bucket = self._by_key[key] = TokenBucket(self.rate_per_s, self.burst, now)
            if len(self._by_key) > self.max_tracked:
                self._by_key.popitem(last=False)
        else:
            self._by_key.move_to_end(key)
        if bucket.take(now):
            return 0.0
        return max(0.0, 1.0 - bucket.tokens(now)) / self.rate_per_s


class MatchmakeGuard:
    """The per-address buckets of /matchmake (see the module docstring)."""

    def __init__(self, limits: MatchmakeLimits, max_tracked: int = 65536) -> None:
        self.limits = limits
        self._all = (_Buckets(limits.rate_per_s, limits.burst, max_tracked)
                     if limits.rate_per_s > 0 else None)
        self._creates = (_Buckets(limits.creates_per_min / 60.0, limits.create_burst,
                                  max_tracked) if limits.creates_per_min > 0 else None)

    def check(self, ip: str, now: float) -> tuple[Refusal, float] | None:
        """Charge one request from `ip` at `now` (seconds); (refusal, retry after s) when
        over the rate."""
        return _charge(self._all, ip, now, "rate_limited",
                       "too many matchmaking requests from {key} "
                       f"(limit {self.limits.rate_per_s:g}/s)")

    def check_create(self, ip: str, now: float) -> tuple[Refusal, float] | None:
        """Charge one room creation (`"create": true`) from `ip` at `now`."""
        return _charge(self._creates, ip, now, "create_rate_limited",
                       "too many new rooms from {key} "
                       f"(limit {self.limits.creates_per_min:g} per minute)")


def _charge(buckets: _Buckets | None, ip: str, now: float, label: str,
            reason: str) -> tuple[Refusal, float] | None:
    if buckets is None:
        return None
    key = address_key(ip)
    wait = buckets.take(key, now)
    return (Refusal(429, label, reason.format(key=key)), wait) if wait else None


def retry_after(wait_s: float) -> str:
    """A Retry-After header value: whole seconds, at least 1."""
    return str(max(1, math.ceil(wait_s)))


MATCHMAKE_GUARD_KEY = web.AppKey("matchmake_guard", MatchmakeGuard)
