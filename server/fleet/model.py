"""What the fleet registry stores and answers: nodes, rooms, reservations, refusals.

Times are unix milliseconds (`int`) from the caller's wall clock, so every node of a fleet
compares them on the same scale (keep the hosts' clocks in sync with NTP). Durations are
milliseconds too, named `*_ms`.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True, slots=True)
class RoomState:
    """One room as its node reports it on every refresh."""

    room: str
    mode: str
    players: int  # seats taken, plus consumed seat tokens whose player has not joined yet
    capacity: int
    private: bool
    created_ms: int


@dataclass(frozen=True, slots=True)
class NodeState:
    """One node as it reports itself on every refresh."""

    node: str
    url: str  # the public WebSocket base URL clients connect to, e.g. ws://host:port
    modes: dict[str, int]  # mode -> room capacity
    max_rooms: int
    draining: bool = False


@dataclass(frozen=True, slots=True)
class RefreshResult:
    """What a refresh tells the node: rooms assigned to it that it does not run yet
    ((room, mode, private) each: it creates them), and how many seats of each of its rooms
    are reserved but not yet counted in its players."""

    assigned: list[tuple[str, str, bool]] = field(default_factory=list)
    reserved: dict[str, int] = field(default_factory=dict)
    secret: bytes = b""  # the fleet's seat-token secret now (when one was asserted)


@dataclass(frozen=True, slots=True)
class ReserveRequest:
    """A matchmaking request. `room`: join that room; `create`: a new private room;
    neither: a public room of `mode` with a free seat, or a new one on the least-loaded
    node. `request_id` (may be empty) makes a retry answer the same reservation."""

    mode: str
    nonce: str  # the new reservation's name (becomes the seat token's nonce)
    new_room_id: str  # the id a room created by this request gets
    now_ms: int
    token_ttl_ms: int
    lease_ms: int
    room: str = ""
    create: bool = False
    request_id: str = ""


@dataclass(frozen=True, slots=True)
class Reservation:
    """A reserved seat: in `room` (of `mode`) on `node`, reachable at `url`, held until
    `expires_ms` unless the token named by `nonce` is consumed first."""

    room: str
    node: str
    url: str
    mode: str
    private: bool
    nonce: str
    expires_ms: int
    created: bool  # this request created the room


@dataclass(frozen=True, slots=True)
class RoomInfo:
    """A room as `GET /rooms` lists it."""

    room: str
    node: str
    mode: str
    players: int
    capacity: int
    free: int
    created_ms: int

    def to_json(self) -> dict[str, object]:
        return {"room": self.room, "node": self.node, "mode": self.mode,
                "players": self.players, "capacity": self.capacity, "free": self.free,
                "created_ms": self.created_ms}


@dataclass(frozen=True, slots=True)
class RoomView:
    """A room as the fleet view shows it (private rooms too): `free` counts reservations
    and holds as taken."""

    room: str
    mode: str
    players: int
    capacity: int
    private: bool
    created_ms: int
    free: int

    def to_json(self) -> dict[str, object]:
        return {"room": self.room, "mode": self.mode, "players": self.players,
                "capacity": self.capacity, "private": self.private,
                "created_ms": self.created_ms, "free": self.free}


@dataclass(frozen=True, slots=True)
class NodeInfo:
    """A live node as the fleet view shows it: what it reported at its last refresh
    (`refreshed_ms`, unix ms) and every room assigned to it, private ones included."""

    node: str
    url: str
    draining: bool
    load: int  # players plus live reservations and holds
    max_rooms: int
    modes: dict[str, int]  # mode -> room capacity
    refreshed_ms: int
    rooms: list[RoomView] = field(default_factory=list)

    @property
    def players(self) -> int:
        return sum(r.players for r in self.rooms)

    @property
    def capacity(self) -> int:
        return sum(r.capacity for r in self.rooms)

    def to_json(self, now_ms: int) -> dict[str, object]:
        return {"node": self.node, "url": self.url, "draining": self.draining,
                "load": self.load, "players": self.players, "capacity": self.capacity,
                "max_rooms": self.max_rooms, "modes": dict(self.modes),
                "refreshed_age_s": round(max(0, now_ms - self.refreshed_ms) / 1000, 2),
                "rooms": [r.to_json() for r in self.rooms]}


class MatchError(Exception):
    """Matchmaking refused: an HTTP status, a short machine code, and a sentence."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message

    def to_json(self) -> dict[str, object]:
        return {"error": self.code, "message": self.message}


class SeatRefused(Exception):
    """A seat token's reservation could not be consumed; `code` is the metric label."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


class RegistryUnavailable(Exception):
    """The registry (Redis) could not be reached; the message names the cause."""
