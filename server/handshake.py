"""Checks made before a WebSocket upgrade: origin, seat token, connections per IP.

Sans-I/O: each check takes the request's facts (headers, peer address, the time) and
answers with None (let it through) or a `Refusal` (HTTP status and a reason). The gateway
turns a refusal into an HTTP response, so a refused client never gets a socket.
"""

from __future__ import annotations

import base64
import copy
import hashlib
import hmac
import ipaddress
import secrets
import struct
from collections import Counter, OrderedDict
from dataclasses import dataclass
from urllib.parse import urlsplit

from server.clock import Clock, WallClock
from server.ratelimit import TokenBucket

SEAT_TOKEN_VERSION = 2
# version, expiry (unix milliseconds), nonce; then node, room and mode as length-prefixed
# UTF-8, and the private flag; then the MAC.
_TOKEN_HEAD = struct.Struct("!BQ12s")
_MAC_BYTES = 16
_MAX_FIELD = 64


@dataclass(frozen=True, slots=True)
class Refusal:
    status: int
    label: str  # the `reason` label of tickwire_handshakes_rejected_total
    reason: str  # the response body, for people


def normalize_origin(origin: str) -> str | None:
    """scheme://host[:port], lower-case, default ports dropped, for comparison.

    None for a value that looks like a URL but cannot be one (`http://[::1`,
    `http://h:abc`, `http://h:99999`): the caller refuses it as malformed rather than
    letting the parser's exception become a 500. A value with no scheme or host (`null`,
    the opaque origin) is compared verbatim.
    """
    text = origin.strip().lower()
    try:
        parts = urlsplit(text)
        port = parts.port  # raises ValueError for a non-numeric or out-of-range port
    except ValueError:
        return None
    if not parts.scheme or not parts.hostname:
        return text
    default = {"http": 80, "https": 443, "ws": 80, "wss": 443}.get(parts.scheme)
    shown = f":{port}" if port and port != default else ""
    host = f"[{parts.hostname}]" if ":" in parts.hostname else parts.hostname
    return f"{parts.scheme}://{host}{shown}"


class OriginPolicy:
    """Which browser origins may open a socket.

    Browsers always send Origin on a WebSocket upgrade, so this is what stops another web
    page from connecting with a player's browser (cross-site WebSocket hijacking). Clients
    that are not browsers send no Origin and are not affected. With no list configured,
    only the server's own origin (the demo client it serves) is allowed; "*" allows any.

    The server's own origin is `public_origin` when given (`--public-origin`), else it is
    derived from the request's Host header. The Host header is chosen by the client, so a
    page on a DNS-rebinding name (evil.example resolving to this server) passes the
    derived check; pinning the public origin closes that (see THREAT_MODEL.md).

    A malformed Origin (or, when the own origin comes from it, Host) is refused with 400
    and its own label, never an exception.
    """

    def __init__(self, allowed: list[str] | None, public_origin: str | None = None) -> None:
        self.allow_any = bool(allowed) and "*" in allowed
        self.allowed: set[str] = set()
        for entry in allowed or []:
            if entry == "*":
                continue
            normal = normalize_origin(entry)
            if normal is None:
                raise ValueError(f"not an origin: {entry!r}")
            self.allowed.add(normal)
        self.public_origin: str | None = None
        if public_origin is not None:
            self.public_origin = normalize_origin(public_origin)
            if self.public_origin is None or "://" not in self.public_origin:
                raise ValueError(f"not an origin: {public_origin!r}")

    def check(self, origin: str | None, host: str | None, scheme: str) -> Refusal | None:
        if origin is None or self.allow_any:
            return None
        wanted = normalize_origin(origin)
        if wanted is None:
            return Refusal(400, "origin_malformed", "malformed Origin header")
        if wanted in self.allowed:
            return None
        if self.public_origin is not None:
            own = self.public_origin
        elif host:
            own = normalize_origin(f"{scheme}://{host}")
            if own is None:
                return Refusal(400, "host_malformed", "malformed Host header")
        else:
            own = None
        if wanted == own:
            return None
        return Refusal(403, "origin", f"origin {origin[:100]!r} is not allowed")


def check_upgrade(*, per_ip: ConnectionsPerIp, origins: OriginPolicy, peer_ip: str,
                  origin: str | None, host: str | None, scheme: str, now: float
                  ) -> Refusal | None:
    """The checks before a WebSocket upgrade that need no registry, in order; None lets
    it through (the seat token is checked after these, see `server.fleet.node`).

    The per-address cap and connection rate come first, so every attempt is charged to
    its address whatever else is wrong with it: a malformed or foreign Origin, or a bad
    token, is no way around the per-IP limits. `now` is the server's monotonic clock (the
    rate buckets).
    """
    refusal = per_ip.check(peer_ip, now)
    if refusal is None:
        refusal = origins.check(origin, host, scheme)
    return refusal


@dataclass(frozen=True, slots=True)
class SeatClaim:
    """What a valid seat token says: a seat in `room` (of `mode`) on `node`, reserved
    until `expires_ms` (unix milliseconds). `nonce` names the reservation in the registry,
    which makes the token single-use."""

    nonce: str
    node: str
    room: str
    mode: str
    private: bool
    expires_ms: int


class SeatTokens:
    """HMAC-signed seat tokens, issued by /matchmake on any node, checked at the upgrade on
    the node that owns the seat.

    A token is base64url(version | expiry | nonce | node | room | mode | private | mac),
    where mac is HMAC-SHA256 of everything before it under the fleet's secret, truncated
    to 128 bits. The signature lets a node refuse a forged, altered, expired or
    other-node token without asking the registry; single use is the registry's job (the
    nonce's reservation is consumed atomically at the upgrade, see `server.fleet`).
    """

    def __init__(self, secret: bytes, ttl_s: float = 15.0, clock: Clock | None = None
                 ) -> None:
        """`clock`: wall time (seconds since the epoch; default `WallClock`), so a token is
        checkable by any process; tests pass a `ManualClock` and never sleep."""
        if len(secret) < 16:
            raise ValueError("the join secret must be at least 16 bytes")
        self._secret = secret
        self.ttl_s = ttl_s
        self.clock: Clock = clock or WallClock()

    @property
    def secret(self) -> bytes:
        return self._secret

    def with_secret(self, secret: bytes) -> SeatTokens:
        """The same tokens (TTL, clock) under another secret."""
        if len(secret) < 16:
            raise ValueError("the join secret must be at least 16 bytes")
        other = copy.copy(self)
        other._secret = secret
        return other

    @staticmethod
    def new_nonce() -> str:
        return secrets.token_bytes(12).hex()

    def sign(self, claim: SeatClaim) -> str:
        """The token for `claim` (deterministic: a retried request gets the same token)."""
        head = _TOKEN_HEAD.pack(SEAT_TOKEN_VERSION, claim.expires_ms, bytes.fromhex(claim.nonce))
        body = b"".join(_field(v) for v in (claim.node, claim.room, claim.mode))
        payload = head + body + bytes([claim.private])
        return base64.urlsafe_b64encode(payload + self._mac(payload)).decode().rstrip("=")

    def issue(self, node: str, room: str, mode: str, now_unix: float | None = None, *,
              private: bool = False) -> tuple[str, SeatClaim]:
        """A fresh token (and its claim) for a seat that expires `ttl_s` from `now_unix`
        (default: the clock's now)."""
        if now_unix is None:
            now_unix = self.clock.now()
        claim = SeatClaim(self.new_nonce(), node, room, mode, private,
                          int((now_unix + self.ttl_s) * 1000))
        return self.sign(claim), claim

    def check(self, token: str | None, now_unix: float | None = None, *,
              node: str | None = None) -> SeatClaim | Refusal:
        """The claim of a valid token at `now_unix` (default: the clock's now), or a
        Refusal (401; 403 for another node's seat)."""
        if now_unix is None:
            now_unix = self.clock.now()
        if not token:
            return Refusal(401, "token_missing",
                           "seat token missing (get one from POST /matchmake)")
        if len(token) > 512:
            return Refusal(401, "token_malformed", "seat token malformed")
        try:
            raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
        except (ValueError, TypeError):
            return Refusal(401, "token_malformed", "seat token malformed")
        if len(raw) < _TOKEN_HEAD.size + 4 + _MAC_BYTES:
            return Refusal(401, "token_malformed", "seat token malformed")
        payload, mac = raw[:-_MAC_BYTES], raw[-_MAC_BYTES:]
        if not hmac.compare_digest(mac, self._mac(payload)):
            return Refusal(401, "token_invalid", "seat token invalid")
        version, expiry, nonce = _TOKEN_HEAD.unpack_from(payload)
        if version != SEAT_TOKEN_VERSION:
            return Refusal(401, "token_invalid", "seat token invalid")
        try:
            fields, offset = [], _TOKEN_HEAD.size
            for _ in range(3):
                n = payload[offset]
                fields.append(payload[offset + 1: offset + 1 + n].decode())
                offset += 1 + n
            private = payload[offset] == 1
        except (IndexError, UnicodeDecodeError):
            return Refusal(401, "token_malformed", "seat token malformed")
        if now_unix * 1000 >= expiry:
            return Refusal(401, "token_expired", "seat token expired")
        claim = SeatClaim(nonce.hex(), fields[0], fields[1], fields[2], private, expiry)
        if node is not None and claim.node != node:
            return Refusal(403, "token_wrong_node",
                           f"seat token is for node {claim.node}, not this one")
        return claim

    def _mac(self, payload: bytes) -> bytes:
        return hmac.new(self._secret, payload, hashlib.sha256).digest()[:_MAC_BYTES]


def _field(value: str) -> bytes:
    data = value.encode()
    if len(data) > _MAX_FIELD:
        raise ValueError(f"token field too long: {value!r}")
    return bytes([len(data)]) + data


def address_key(ip: str) -> str:
    """What one client's address counts as: the address itself for IPv4, its /64 for
    IPv6 (a single host usually holds a whole /64, so per-address limits would not bite)."""
    try:
        addr = ipaddress.ip_address(ip)
    except ValueError:
        return ip
    if isinstance(addr, ipaddress.IPv6Address):
        if addr.ipv4_mapped is not None:
            return str(addr.ipv4_mapped)
        return str(ipaddress.ip_network(f"{addr}/64", strict=False))
    return str(addr)


class ConnectionsPerIp:
    """Open WebSockets per client address, and how fast an address may open new ones.

    The cap stops one host from holding every seat at once; the rate stops it from
    churning seats (a dropped player's seat is kept for the resume grace period, so
    connect-and-drop in a loop would otherwise fill rooms with ghosts). Addresses are
    keyed by `address_key`. The rate buckets are an LRU of at most `max_tracked`
    addresses: O(1) per check, bounded memory; an address evicted after being idle
    simply starts again with a full bucket.
    """

    def __init__(self, cap: int, rate_per_s: float = 0.0, burst: float = 0.0,
                 max_tracked: int = 65536) -> None:
        self.cap = cap
        self.rate_per_s = rate_per_s
        self.burst = burst
        self.max_tracked = max_tracked
        self.open: Counter[str] = Counter()
        self._buckets: OrderedDict[str, TokenBucket] = OrderedDict()

    def check(self, ip: str, now: float) -> Refusal | None:
        key = address_key(ip)
        if self.cap and self.open[key] >= self.cap:
            return Refusal(429, "ip_cap", f"too many connections from {key} "
                                          f"(limit {self.cap})")
        if self.rate_per_s > 0:
            bucket = self._buckets.get(key)
            if bucket is None:
                bucket = self._buckets[key] = TokenBucket(self.rate_per_s, self.burst, now)
                if len(self._buckets) > self.max_tracked:
                    self._buckets.popitem(last=False)
            else:
                self._buckets.move_to_end(key)
            if not bucket.take(now):
                return Refusal(429, "ip_rate", f"too many new connections from {key} "
                                               f"(limit {self.rate_per_s:g}/s)")
        return None

    def opened(self, ip: str) -> None:
        self.open[address_key(ip)] += 1

    def closed(self, ip: str) -> None:
        key = address_key(ip)
        self.open[key] -= 1
        if self.open[key] <= 0:
            del self.open[key]
