"""One node of a fleet: its registry loop, matchmaking and the seat check at the upgrade.

`FleetNode` is the only part of the server that talks to the registry. Its loop runs in
its own asyncio task: every `refresh_s` it reports this node and its rooms (`refresh`),
creates the rooms the registry assigned to it, and retires the rooms the node disposed of.
The tick never waits on it: the loop reads the rooms through `RoomHost.room_states()`, a
plain in-memory read, and the tick reads nothing the loop writes except plain dicts.

When the registry cannot be reached the node keeps playing: matchmaking and seat tokens
answer 503 naming the cause, the loop retries every `retry_s`, and the first refresh
that succeeds re-asserts every room (a Redis that restarted empty is whole again).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import re
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

from server.fleet.metrics import FleetMetrics
from server.fleet.model import (
    MatchError,
    NodeInfo,
    NodeState,
    RegistryUnavailable,
    Reservation,
    ReserveRequest,
    RoomInfo,
    RoomState,
    SeatRefused,
)
from server.fleet.registry import Registry
from server.handshake import Refusal, SeatClaim, SeatTokens

log = logging.getLogger("tickwire.fleet")

_NAME = re.compile(r"^[A-Za-z0-9_.-]{1,48}$")
_ROOM = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")  # a mode (up to 32) + "-" + 16 hex digits


class RoomHost(Protocol):
    """What a node needs from the server that runs its rooms (the gateway)."""

    def room_states(self) -> list[RoomState]:
        """Every room this process runs, with players counted as seats taken."""
        ...

    def ensure_room(self, room: str, mode: str, private: bool) -> None:
        """Create the room if this process does not run it yet."""
        ...


@dataclass(frozen=True, slots=True)
class FleetConfig:
    """A node's fleet settings. Durations in seconds."""

    node_id: str
    public_url: str  # ws(s)://host:port clients use for this node; "" = from the request
    modes: dict[str, int]  # mode name -> room capacity; the first is the default mode
    max_rooms: int = 64
    lease_s: float = 10.0
    refresh_s: float = 2.0
    retry_s: float = 0.5
    token_ttl_s: float = 15.0
    hold_s: float = 30.0  # a consumed seat counts at most this long before a refresh

    @property
    def default_mode(self) -> str:
        return next(iter(self.modes))


def new_node_id() -> str:
    return "n" + secrets.token_hex(4)


def request_key(client: str, mode: str, room: str, create: bool, request_id: str) -> str:
    """The registry's name for a client's `request_id`: scoped to the client's address and
    to what it asked for. A retry (same client, same body) finds its reservation again;
    another client guessing or reusing the id, or the same id with another body, does not
    (the id alone would hand out the first requester's seat token)."""
    scope = "\0".join((client, mode, room, "1" if create else "0", request_id))
    return hashlib.sha256(scope.encode()).hexdigest()[:32]


def new_room_id(mode: str, private: bool = False) -> str:
    """`mode-<hex>`. A private room's id is its only lock (whoever has it may matchmake
    into the room), so it gets 64 random bits, not 32: a public room's id is listed
    anyway."""
    return f"{mode}-{secrets.token_hex(8 if private else 4)}"


@dataclass
class _Pending:
    """Consumed seat tokens not yet counted by a refresh, and those not yet seated."""

    uncounted: dict[str, set[str]] = field(default_factory=dict)  # room -> nonces
    unseated: dict[str, str] = field(default_factory=dict)  # nonce -> room


class FleetNode:
    def __init__(self, config: FleetConfig, registry: Registry, tokens: SeatTokens,
                 host: RoomHost, metrics: FleetMetrics, *, kind: str = "local",
                 share_secret: bool = False, wall: Callable[[], float] = time.time) -> None:
        self.config = config
        self.registry = registry
        self.tokens = tokens
        self.host = host
        self.metrics = metrics
        self.kind = kind  # "local" or "redis", for /healthz
        self.share_secret = share_secret  # the token secret came from the registry
        # A single server's in-process registry is not worth an info line.
        self.log_level = logging.INFO if kind == "redis" else logging.DEBUG
        self.wall = wall
        self.draining = False
        self.available = False  # the last registry call succeeded
        self.last_error = "not registered yet"
        self.reserved: dict[str, int] = {}  # room -> reservations and holds, last refresh
        self._pending = _Pending()
        self._retiring: set[str] = set()
        self._wake = asyncio.Event()
        self._stop = asyncio.Event()
        self._refreshing = asyncio.Lock()
        self._refreshes = 0  # refresh attempts so far (the room listing's freshness)
        self._listing: tuple[int, list[RoomInfo]] | None = None
        self._listing_lock = asyncio.Lock()
        self.listings = 0  # registry listing calls made for /rooms (with Redis)
        self._task: asyncio.Task | None = None

    # -- time ------------------------------------------------------------------------------

    def now_ms(self) -> int:
        return int(self.wall() * 1000)

    @property
    def lease_ms(self) -> int:
        return int(self.config.lease_s * 1000)

    @property
    def keep_ms(self) -> int:
        c = self.config
        return int((c.token_ttl_s + c.hold_s + c.lease_s) * 1000)

    # -- the loop ---------------------------------------------------------------------------

    async def start(self) -> None:
        """Register (one attempt; a failure is retried by the loop) and start the loop."""
        await self.refresh_once()
        self._task = asyncio.get_running_loop().create_task(self._run(), name="fleet")

    async def _run(self) -> None:
        while not self._stop.is_set():
            delay = self.config.refresh_s if self.available else self.config.retry_s
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), delay)
            self._wake.clear()
            if self._stop.is_set():
                return
            try:
                await self.refresh_once()
            except Exception as exc:  # the loop must outlive any bug
                # An answer nobody expected (a registry holding garbage, a bug): the
                # loop must not die with it, or the node's lease lapses and its rooms
                # vanish from the fleet while it still answers /matchmake. The message
                # (shown on /healthz) names the type only; the log has the traceback.
                error = f"registry refresh failed: unexpected {type(exc).__name__}"
                if self.last_error != error:
                    log.exception(error)
                self._failed(RegistryUnavailable(error), logged=True)

    def _failed(self, exc: RegistryUnavailable, *, logged: bool = False) -> None:
        self.metrics.redis_errors.inc()
        if not logged and (self.available or self.last_error != str(exc)):
            log.warning("registry unreachable: %s", exc)
        self.available = False
        self.last_error = str(exc)

    async def refresh_once(self) -> bool:
        """One refresh: lease, rooms, assigned rooms, retirements. False on failure.
        Refreshes never overlap: a late one must not overwrite a newer state (draining)."""
        async with self._refreshing:
            try:
                return await self._refresh()
            finally:
                self._refreshes += 1  # a cached room listing lives until the next one

    async def _refresh(self) -> bool:
        c = self.config
        rooms = self.host.room_states()
        counted = {room: sorted(nonces) for room, nonces in self._pending.uncounted.items()}
        node = NodeState(c.node_id, c.public_url, dict(c.modes), c.max_rooms, self.draining)
        secret = self.tokens.secret if self.share_secret else b""
        try:
            result = await self.registry.refresh(node, rooms, counted, self.now_ms(),
                                                 self.lease_ms, self.keep_ms, secret=secret)
            retired = set()
            for room in sorted(self._retiring):
                if await self.registry.retire(c.node_id, room, self.now_ms()):
                    retired.add(room)
                else:
                    self.host.ensure_room(room, *self._mode_of(room))
                self._retiring.discard(room)
        except RegistryUnavailable as exc:
            self._failed(exc)
            return False
        if not self.available:
            log.log(self.log_level, "registered with the registry",
                    extra={"node": c.node_id, "rooms": len(rooms)})
        self.available = True
        self.last_error = ""
        for room, nonces in counted.items():
            left = self._pending.uncounted.get(room)
            if left is not None:
                left.difference_update(nonces)
                if not left:
                    del self._pending.uncounted[room]
        self.reserved = result.reserved
        if self.share_secret and result.secret and result.secret != self.tokens.secret:
            # Another node set the secret first (e.g. after a Redis restart): one secret
            # for the fleet; tokens signed with ours are refused and matchmake again.
            log.warning("adopting the fleet's seat-token secret from the registry")
            self.tokens = self.tokens.with_secret(result.secret)
        for room, mode, private in result.assigned:
            # The refresh ran before the retirements: a room retired just now still came
            # back as assigned, and must not be created again.
            if mode in c.modes and room not in retired:
                self.host.ensure_room(room, mode, private)
        return True

    def _mode_of(self, room: str) -> tuple[str, bool]:
        # A retired room's id starts with its mode (see new_room_id); private is unknown
        # here and only matters for listing, which the next refresh corrects.
        mode = room.rsplit("-", 1)[0]
        return (mode if mode in self.config.modes else self.config.default_mode), False

    def room_disposed(self, room: str) -> None:
        """The server disposed of an empty room: retire it at the next refresh."""
        self._retiring.add(room)

    def wake(self) -> None:
        """Refresh now rather than at the next beat."""
        self._wake.set()

    async def drain(self, timeout_s: float = 2.0) -> None:
        """Mark this node draining in the registry first: no new seat or room goes to it."""
        self.draining = True
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.refresh_once(), timeout_s)
        log.log(self.log_level, "marked draining in the registry",
                extra={"node": self.config.node_id, "registered": self.available})

    async def stop(self, *, deregister: bool = True, timeout_s: float = 2.0) -> None:
        self._stop.set()
        self._wake.set()
        if self._task is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._task, timeout_s)
        if deregister and self.available:
            with contextlib.suppress(RegistryUnavailable, TimeoutError):
                await asyncio.wait_for(self.registry.deregister(self.config.node_id),
                                       timeout_s)
        await self.registry.close()

    # -- matchmaking -----------------------------------------------------------------------

    async def matchmake(self, body: object, client: str = "") -> tuple[Reservation, str]:
        """Reserve a seat for a POST /matchmake body; (reservation, seat token).
        `client`: who asks (`server.handshake.address_key` of the peer): a `request_id`
        is that client's own, so another client sending the same id never gets its
        reservation (nor its seat token). Raises MatchError (400 bad request, 404, 409,
        503)."""
        started = time.perf_counter()
        result = "error"
        try:
            req = self._parse(body, client)
            if not self.available:
                raise MatchError(503, "registry_unavailable",
                                 f"matchmaking is unavailable: {self.last_error}")
            try:
                res = await self.registry.reserve(req, self.keep_ms)
            except RegistryUnavailable as exc:
                self._failed(exc)
                self.wake()
                raise MatchError(503, "registry_unavailable",
                                 f"matchmaking is unavailable: {exc}") from None
            token = self.tokens.sign(SeatClaim(res.nonce, res.node, res.room, res.mode,
                                               res.private, res.expires_ms))
            result = "created" if res.created else "joined"
            return res, token
        except MatchError as exc:
            result = exc.code
            raise
        finally:
            self.metrics.matchmake_total.labels(result=result).inc()
            self.metrics.matchmake_seconds.observe(time.perf_counter() - started)

    def _parse(self, body: object, client: str = "") -> ReserveRequest:
        c = self.config
        if not isinstance(body, dict):
            raise MatchError(400, "bad_request", "the body must be a JSON object")
        mode = body.get("mode", c.default_mode)
        room = body.get("room", "") or ""
        create = body.get("create", False)
        request_id = body.get("request_id", "") or ""
        for name, value, pattern, most in (("mode", mode, _NAME, 48), ("room", room, _ROOM, 64),
                                           ("request_id", request_id, _NAME, 48)):
            if not isinstance(value, str) or (value and not pattern.match(value)):
                raise MatchError(400, "bad_request",
                                 f"{name} must be 1-{most} characters of A-Z a-z 0-9 _ . -")
        if not mode:
            raise MatchError(400, "bad_request", "mode must not be empty")
        if not isinstance(create, bool):
            raise MatchError(400, "bad_request", "create must be true or false")
        if create and room:
            raise MatchError(400, "bad_request", "give either room or create, not both")
        unknown = set(body) - {"mode", "room", "create", "request_id"}
        if unknown:
            raise MatchError(400, "bad_request", f"unknown fields: {', '.join(sorted(unknown))}")
        if request_id:
            request_id = request_key(client, mode, room, create, request_id)
        return ReserveRequest(mode=mode, nonce=SeatTokens.new_nonce(),
                              new_room_id=new_room_id(mode, create is True), now_ms=self.now_ms(),
                              token_ttl_ms=int(c.token_ttl_s * 1000), lease_ms=self.lease_ms,
                              room=room, create=create, request_id=request_id)

    async def list_nodes(self) -> list[NodeInfo]:
        """The live nodes with all their rooms (raises RegistryUnavailable)."""
        try:
            return await self.registry.list_nodes(self.now_ms())
        except RegistryUnavailable as exc:
            self._failed(exc)
            raise

    async def list_rooms(self) -> list[RoomInfo]:
        """The fleet's public rooms. With Redis, one registry call per refresh beat at
        most: every GET /rooms used to run the listing script (a walk over every public
        room, blocking Redis for the whole fleet), so an unauthenticated client polling
        /rooms in a loop slowed every node's matchmaking. Concurrent callers share the
        one call; the answer is as fresh as the rooms' own reports (one refresh)."""
        if self.kind == "local":  # in-process dictionaries: nothing to amplify
            return await self._list_rooms_now()
        async with self._listing_lock:
            cached = self._listing
            if cached is not None and cached[0] == self._refreshes:
                return cached[1]
            generation = self._refreshes
            rooms = await self._list_rooms_now()
            self._listing = (generation, rooms)
            self.listings += 1
            return rooms

    async def _list_rooms_now(self) -> list[RoomInfo]:
        try:
            return await self.registry.list_rooms(self.now_ms())
        except RegistryUnavailable as exc:
            self._failed(exc)
            raise

    # -- seats at the upgrade -----------------------------------------------------------------

    async def admit(self, token: str | None) -> SeatClaim | Refusal:
        """Check a seat token at the WebSocket upgrade and consume its reservation once.
        On success the room exists on this node and the claim is pending until `seated`
        or `released`."""
        claim = self.tokens.check(token, self.wall(), node=self.config.node_id)
        if isinstance(claim, Refusal):
            return claim
        if self.draining:
            return Refusal(503, "draining", "node shutting down: matchmake again")
        if not self.available:
            return Refusal(503, "registry_unavailable",
                           f"seat tokens cannot be checked: {self.last_error}")
        try:
            await self.registry.consume(claim.room, claim.nonce, self.now_ms(),
                                        int(self.config.hold_s * 1000), self.keep_ms)
        except SeatRefused as exc:
            return Refusal(401, exc.code, exc.message)
        except RegistryUnavailable as exc:
            self._failed(exc)
            return Refusal(503, "registry_unavailable",
                           f"seat tokens cannot be checked: {exc}")
        if claim.mode not in self.config.modes:
            return Refusal(409, "unknown_mode", f"this node does not run mode {claim.mode!r}")
        self.host.ensure_room(claim.room, claim.mode, claim.private)
        self._pending.uncounted.setdefault(claim.room, set()).add(claim.nonce)
        self._pending.unseated[claim.nonce] = claim.room
        return claim

    def seated(self, claim: SeatClaim) -> None:
        """The claim's player joined its room (it now counts among the room's seats)."""
        self._pending.unseated.pop(claim.nonce, None)

    def released(self, claim: SeatClaim) -> None:
        """The claim's socket closed before joining: its seat is free again."""
        self._pending.unseated.pop(claim.nonce, None)

    def unseated(self, room: str) -> int:
        """Consumed seats of `room` whose player has not joined yet (they count as taken)."""
        return sum(1 for r in self._pending.unseated.values() if r == room)

    def health(self) -> dict[str, object]:
        return {"kind": self.kind, "node": self.config.node_id,
                "reachable": self.available, "error": self.last_error,
                "draining": self.draining}
