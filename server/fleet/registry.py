"""The registry interface, and `LocalRegistry`: the same rules inside one process.

Theory of operation
-------------------
A fleet is nodes plus a registry. Every node refreshes its *lease* every `refresh_s`
(a few seconds) and re-asserts each of its rooms under a lease of the same length; a node
or room that is not re-asserted simply expires, so a dead node's rooms disappear within
one lease and a registry that lost everything (a Redis restart) is whole again after one
refresh.

A seat is *reserved* by matchmaking, in one atomic step: choose the fullest public room of
the mode that still has a free seat on a live, non-draining node, or create a room on the
least-loaded such node, then add a reservation that expires with the seat token. A room's
free seats are `capacity - players - reservations`, where `players` is what its node last
reported. At the WebSocket upgrade the owning node *consumes* the reservation (single
use) and turns it into a *hold* that lasts until the node's next refresh has counted that
player in `players` (the refresh names the consumed nonces it counted), so a seat is never
counted zero times. A node learns of rooms created for it from its refresh's answer and
creates them; it *retires* a room it disposed of only if no reservation or hold is left.

`LocalRegistry` keeps all of this in dictionaries for a single `tickwire serve`;
`server.fleet.redis_registry.RedisRegistry` keeps it in Redis with each step a Lua script.
Both pass the same conformance tests, so a node never cares which one it has.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

from server.fleet.model import (
    MatchError,
    NodeInfo,
    NodeState,
    RefreshResult,
    Reservation,
    ReserveRequest,
    RoomInfo,
    RoomState,
    RoomView,
    SeatRefused,
)


class Registry(Protocol):
    """Where a fleet keeps its nodes, rooms and seat reservations (see module docstring).

    Every method may raise `RegistryUnavailable` when the store cannot be reached.
    """

    async def refresh(self, node: NodeState, rooms: list[RoomState],
                      counted: dict[str, list[str]], now_ms: int, lease_ms: int,
                      keep_ms: int, secret: bytes = b"") -> RefreshResult:
        """Renew the node's lease and re-assert its rooms. `counted`: room -> nonces of
        consumed seats now included in that room's `players` (their holds end). `secret`:
        re-asserted as the shared seat-token secret when not empty."""
        ...

    async def reserve(self, req: ReserveRequest, keep_ms: int) -> Reservation:
        """Reserve a seat atomically (raises `MatchError`)."""
        ...

    async def consume(self, room: str, nonce: str, now_ms: int, hold_ms: int,
                      keep_ms: int) -> None:
        """Use a reservation once (raises `SeatRefused`: unknown/used, or expired)."""
        ...

    async def retire(self, node: str, room: str, now_ms: int) -> bool:
        """Forget a room its node disposed of; False (and nothing changes) while a
        reservation or hold in it is still live."""
        ...

    async def list_rooms(self, now_ms: int) -> list[RoomInfo]:
        """The public rooms of live nodes."""
        ...

    async def list_nodes(self, now_ms: int) -> list[NodeInfo]:
        """The live nodes, each with every room assigned to it (private ones too): the
        admin's fleet view and the modes on offer."""
        ...

    async def deregister(self, node: str) -> None:
        """Remove the node and its rooms now (a clean shutdown)."""
        ...

    async def shared_secret(self, candidate: bytes) -> bytes:
        """The fleet's seat-token secret: the first node's candidate wins."""
        ...

    async def close(self) -> None: ...


@dataclass
class _Node:
    state: NodeState
    load: int
    rooms: int
    expires_ms: int
    refreshed_ms: int = 0


@dataclass
class _Room:
    node: str
    mode: str
    players: int
    capacity: int
    private: bool
    created_ms: int
    expires_ms: int
    seats: dict[str, int] = field(default_factory=dict)  # "r:"/"h:" + nonce -> expiry ms


class LocalRegistry:
    """The registry in one process's memory; the same rules as the Redis scripts."""

    def __init__(self) -> None:
        self.nodes: dict[str, _Node] = {}
        self.rooms: dict[str, _Room] = {}
        self.node_rooms: dict[str, set[str]] = {}
        self.requests: dict[str, tuple[Reservation, int]] = {}
        self.secret: bytes | None = None

    # -- helpers (the Lua scripts' local functions) --------------------------------------

    def _node(self, node_id: str, now_ms: int) -> _Node | None:
        node = self.nodes.get(node_id)
        if node is not None and node.expires_ms <= now_ms:
            del self.nodes[node_id]
            return None
        return node

    def _room(self, room_id: str, now_ms: int) -> _Room | None:
        room = self.rooms.get(room_id)
        if room is not None and room.expires_ms <= now_ms:
            live = {k: v for k, v in room.seats.items() if v > now_ms}
            if not live:
                del self.rooms[room_id]
                return None
            # The room's lease lapsed but seats are still reserved in it: Redis keeps the
            # seats under their own key; the room itself is gone.
            return None
        return room

    @staticmethod
    def _taken(room: _Room, now_ms: int) -> int:
        for member in [k for k, v in room.seats.items() if v <= now_ms]:
            del room.seats[member]
        return len(room.seats)

    # -- the registry -------------------------------------------------------------------

    async def refresh(self, node: NodeState, rooms: list[RoomState],
                      counted: dict[str, list[str]], now_ms: int, lease_ms: int,
                      keep_ms: int, secret: bytes = b"") -> RefreshResult:
        if secret and self.secret is None:
            self.secret = secret
        reported = set()
        reserved: dict[str, int] = {}
        load = 0
        mine = self.node_rooms.setdefault(node.node, set())
        for r in rooms:
            reported.add(r.room)
            old = self.rooms.get(r.room)
            seats = old.seats if old is not None else {}
            room = _Room(node.node, r.mode, r.players, r.capacity, r.private, r.created_ms,
                         now_ms + lease_ms, seats)
            self.rooms[r.room] = room
            for nonce in counted.get(r.room, ()):
                room.seats.pop("h:" + nonce, None)
            held = self._taken(room, now_ms)
            reserved[r.room] = held
            load += r.players + held
            mine.add(r.room)
        assigned = []
        for room_id in sorted(mine - reported):
            room = self._room(room_id, now_ms)
            if room is not None and room.node == node.node:
                assigned.append((room_id, room.mode, room.private))
            else:
                mine.discard(room_id)
        # Rooms assigned but not created yet count too: counting only the reported ones
        # let a burst of `create` requests put more than max_rooms on a node.
        self.nodes[node.node] = _Node(node, load, len(rooms) + len(assigned),
                                      now_ms + lease_ms, now_ms)
        return RefreshResult(assigned=assigned, reserved=reserved,
                             secret=self.secret or b"" if secret else b"")

    async def reserve(self, req: ReserveRequest, keep_ms: int) -> Reservation:
        now = req.now_ms
        if req.request_id:
            prev = self.requests.get(req.request_id)
            if prev is not None and prev[1] > now:
                return prev[0]
        created = False
        if req.room:
            room = self._room(req.room, now)
            node = self._node(room.node, now) if room is not None else None
            if room is None or node is None:
                raise MatchError(404, "no_such_room",
                                 f"room {req.room} does not exist (or has closed)")
            if node.state.draining:
                raise MatchError(409, "room_closing",
                                 f"room {req.room} is on a node that is shutting down")
            if room.capacity - room.players - self._taken(room, now) <= 0:
                raise MatchError(409, "room_full", f"room {req.room} is full")
            room_id, node_id = req.room, room.node
        else:
            room_id = node_id = ""
            if not req.create:
                best_free = 0
                for rid, room in sorted(self.rooms.items(), key=lambda kv: kv[1].created_ms):
                    if room.private or room.mode != req.mode or self._room(rid, now) is None:
                        continue
                    node = self._node(room.node, now)
                    if node is None or node.state.draining:
                        continue
                    free = room.capacity - room.players - self._taken(room, now)
                    if free > 0 and (not room_id or free < best_free):
                        room_id, node_id, best_free = rid, room.node, free
            if not room_id:
                node_id = self._pick_node(req.mode, now)
                node = self.nodes[node_id]
                room_id, created = req.new_room_id, True
                self.rooms[room_id] = _Room(node_id, req.mode, 0, node.state.modes[req.mode],
                                            req.create, now, now + req.lease_ms)
                self.node_rooms.setdefault(node_id, set()).add(room_id)
                node.rooms += 1
            room = self.rooms[room_id]
        node = self.nodes[node_id]
        expires = now + req.token_ttl_ms
        room.seats["r:" + req.nonce] = expires
        node.load += 1
        out = Reservation(room=room_id, node=node_id, url=node.state.url, mode=room.mode,
                          private=room.private, nonce=req.nonce, expires_ms=expires,
                          created=created)
        if req.request_id:
            self.requests[req.request_id] = (out, expires)
            for rid in [k for k, (_, e) in self.requests.items() if e <= now]:
                del self.requests[rid]
        return out

    def _pick_node(self, mode: str, now_ms: int) -> str:
        pick: _Node | None = None
        offered = False
        for node_id in sorted(self.nodes, key=lambda n: (self.nodes[n].load, n)):
            node = self._node(node_id, now_ms)
            if node is None or mode not in node.state.modes:
                continue
            offered = True
            if node.state.draining or node.rooms >= node.state.max_rooms:
                continue
            if pick is None or node.load < pick.load or (
                    node.load == pick.load and node.rooms < pick.rooms):
                pick = node
        if pick is None:
            if offered:
                raise MatchError(503, "fleet_full",
                                 f"every node offering mode {mode!r} is full or draining")
            raise MatchError(404, "unknown_mode", f"no node offers mode {mode!r}")
        return pick.state.node

    async def consume(self, room: str, nonce: str, now_ms: int, hold_ms: int,
                      keep_ms: int) -> None:
        entry = self.rooms.get(room)
        seats = entry.seats if entry is not None else {}
        expiry = seats.pop("r:" + nonce, None)
        if expiry is None:
            raise SeatRefused("token_used", "seat token already used or unknown")
        if expiry <= now_ms:
            raise SeatRefused("token_expired", "seat token expired")
        seats["h:" + nonce] = now_ms + hold_ms

    async def retire(self, node: str, room: str, now_ms: int) -> bool:
        entry = self.rooms.get(room)
        if entry is not None and entry.node != node:
            self.node_rooms.get(node, set()).discard(room)
            return True
        if entry is not None and self._taken(entry, now_ms) > 0:
            return False
        self.rooms.pop(room, None)
        self.node_rooms.get(node, set()).discard(room)
        return True

    async def list_rooms(self, now_ms: int) -> list[RoomInfo]:
        out = []
        for room_id, room in sorted(self.rooms.items(), key=lambda kv: kv[1].created_ms):
            if room.private or self._room(room_id, now_ms) is None:
                continue
            if self._node(room.node, now_ms) is None:
                continue
            free = room.capacity - room.players - self._taken(room, now_ms)
            out.append(RoomInfo(room_id, room.node, room.mode, room.players, room.capacity,
                                free, room.created_ms))
        return out

    async def list_nodes(self, now_ms: int) -> list[NodeInfo]:
        out = []
        for node_id in sorted(self.nodes, key=lambda n: (self.nodes[n].load, n)):
            node = self._node(node_id, now_ms)
            if node is None:
                continue
            views = []
            for room_id in sorted(self.node_rooms.get(node_id, ())):
                room = self._room(room_id, now_ms)
                if room is None or room.node != node_id:
                    continue
                free = room.capacity - room.players - self._taken(room, now_ms)
                views.append(RoomView(room_id, room.mode, room.players, room.capacity,
                                      room.private, room.created_ms, free))
            s = node.state
            out.append(NodeInfo(s.node, s.url, s.draining, node.load, s.max_rooms,
                                dict(s.modes), node.refreshed_ms, views))
        return out

    async def deregister(self, node: str) -> None:
        self.nodes.pop(node, None)
        for room_id in self.node_rooms.pop(node, set()):
            self.rooms.pop(room_id, None)

    async def shared_secret(self, candidate: bytes) -> bytes:
        if self.secret is None:
            self.secret = candidate
        return self.secret

    async def close(self) -> None:
        return None
