"""Rooms of one server process: seat a joining player, find a seat by resume token.

Sans-I/O like the rooms it holds. A Join goes to the first room with a free seat, or to a
new room; a room that has been empty for a while is disposed of by `reap`.
"""

from __future__ import annotations

import itertools
import struct
from collections.abc import Callable

from server.bans import DEFAULT_KICK_BAN_S, Bans
from server.baselines import DEFAULT_MAX_DELTAS
from server.room import Room, Seat
from sim.params import Params

EMPTY_ROOM_TTL_S = 30.0


class LobbyFullError(Exception):
    """Every room is full and the server already runs its maximum number of rooms."""


class Lobby:
    def __init__(self, params: Params, *, max_rooms: int = 64,
                 defer_input_checks: bool = False,
                 max_baselines: int = DEFAULT_MAX_DELTAS,
                 kick_ban_s: float = DEFAULT_KICK_BAN_S) -> None:
        """`defer_input_checks` and `max_baselines` are passed to every new Room (see
        ``server.room.Room``): a gateway that charges ``TickResult.input_rejections`` to
        the players sets the first."""
        self.params = params  # what a new room starts with (the gateway updates it live)
        # Names and addresses an admin kicked or banned: a Join from them is refused.
        self.bans = Bans(kick_ban_s=kick_ban_s)
        self.params_version = 1
        self.max_rooms = max_rooms
        self.defer_input_checks = defer_input_checks
        self.max_baselines = max_baselines
        # Called with each new room before anyone joins it (the recorder attaches here).
        self.on_new_room: Callable[[Room], None] | None = None
        self.rooms: dict[str, Room] = {}
        self._room_ids = itertools.count(1)
        self._player_ids = itertools.count(1)
        self._empty_since: dict[str, float] = {}
        # room -> (mode, private, created unix ms); rooms made by room_with_free_seat are
        # public rooms of the default mode.
        self.meta: dict[str, tuple[str, bool, int]] = {}
        self.default_mode = "arena"

    def next_player_id(self) -> int:
        return next(self._player_ids)

    def room_with_free_seat(self, now: float, *, reserved: Callable[[str], int] | None = None,
                            created_ms: int = 0) -> tuple[Room, bool]:
        """(room, created): the first public room of the default mode with a free seat,
        else a new one. `reserved(room_id)`: seats held for matchmade players.

        Raises LobbyFullError when the server already runs `max_rooms` full rooms.
        """
        for room_id, room in self.rooms.items():
            mode, private, _ = self.meta.get(room_id, (self.default_mode, False, 0))
            if mode != self.default_mode or private:
                continue
            held = reserved(room_id) if reserved is not None else 0
            if len(room.seats) + held < room.capacity:
                return room, False
        if len(self.rooms) >= self.max_rooms:
            raise LobbyFullError("server full")
        room_id = f"r{next(self._room_ids)}"
        return self.ensure_room(room_id, self.params, now, mode=self.default_mode,
                                created_ms=created_ms)[0], True

    def ensure_room(self, room_id: str, params: Params, now: float, *, mode: str,
                    private: bool = False, created_ms: int = 0) -> tuple[Room, bool]:
        """(room, created): the room with this id, created (with `params`) if missing."""
        room = self.rooms.get(room_id)
        if room is not None:
            return room, False
        room = Room(room_id, params, now=now, params_version=self.params_version,
                    defer_input_checks=self.defer_input_checks,
                    max_baselines=self.max_baselines)
        self.rooms[room_id] = room
        self.meta[room_id] = (mode, private, created_ms)
        if self.on_new_room is not None:
            self.on_new_room(room)
        return room, True

    def find_by_token(self, token: bytes) -> tuple[Room, Seat] | None:
        """The room and seat a resume token opens, or None (wrong, expired, malformed)."""
        if len(token) < 4:
            return None
        (player_id,) = struct.unpack("!I", token[:4])
        for room in self.rooms.values():
            if player_id in room.seats:
                seat = room.find_by_token(token)
                return (room, seat) if seat is not None else None
        return None

    def reap(self, now: float, busy: Callable[[str], bool] | None = None) -> list[Room]:
        """Dispose of rooms that have had no seats for EMPTY_ROOM_TTL_S; returns them.
        `busy(room_id)`: seats are still reserved there (the room stays)."""
        gone = []
        for room_id, room in list(self.rooms.items()):
            if room.seats or (busy is not None and busy(room_id)):
                self._empty_since.pop(room_id, None)
                continue
            since = self._empty_since.setdefault(room_id, now)
            if now - since >= EMPTY_ROOM_TTL_S:
                del self.rooms[room_id]
                del self._empty_since[room_id]
                self.meta.pop(room_id, None)
                if room.recorder is not None:
                    room.recorder.close(wait=False)  # inside a tick: never wait on disk
                gone.append(room)
        return gone

    @property
    def player_count(self) -> int:
        return sum(len(room.seats) for room in self.rooms.values())
