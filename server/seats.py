"""Where a Join sits on this node: rooms by id and game mode, seat tokens consumed at the
upgrade, seats held for matchmade players (server.fleet). A mixin of `Gateway`, kept here
so the gateway stays a shell; it uses the gateway's lobby, loops, clocks and fleet node."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from server.errors import CLOSE_POLICY, ProtocolError
from server.handshake import Refusal, SeatClaim

if TYPE_CHECKING:
    from server.clock import Clock
    from server.fleet.node import FleetNode
    from server.lobby import Lobby
    from server.room import Room
    from server.roomloops import RoomLoops
    from sim.params import Params

__all__ = ["NodeSeats"]

log = logging.getLogger("tickwire.gateway")


class NodeSeats:
    """Rooms and seats of one node (see the module docstring)."""

    lobby: Lobby
    loops: RoomLoops
    clock: Clock
    wall_clock: Clock
    modes: dict[str, Params]
    fleet: FleetNode | None
    tokens_required: bool

    def ensure_room(self, room_id: str, mode: str, private: bool) -> Room:
        """The room with this id (of `mode`), created and ticking if it did not exist."""
        room, created = self.lobby.ensure_room(
            room_id, self.modes[mode], self.clock.now(), mode=mode, private=private,
            created_ms=int(self.wall_clock.now() * 1000))
        if created:
            self.loops.ensure(room)
            log.info("room created", extra={"room": room_id, "mode": mode,
                                            "private": private})
        return room

    def room_is_private(self, room_id: str) -> bool:
        """Whether the room was created private (`"create": true`): not listed, not
        watchable without the admin token."""
        meta = self.lobby.meta.get(room_id)
        return meta is not None and meta[1]

    def room_for_join(self, claim: SeatClaim | None, now: float) -> Room:
        """The room a Join goes to: the seat token's room, or (no token, when none is
        required) any public room of the default mode with a seat not reserved."""
        if claim is not None:
            return self.ensure_room(claim.room, claim.mode, claim.private)
        if self.tokens_required:
            raise ProtocolError(CLOSE_POLICY, "token_missing",
                                "Join needs a seat token (POST /matchmake)")
        room, created = self.lobby.room_with_free_seat(
            now, reserved=self._reserved, created_ms=int(self.wall_clock.now() * 1000))
        if created and self.fleet is not None:
            self.fleet.wake()  # publish the new room now
        return room

    def _reserved(self, room_id: str) -> int:
        """Seats of a room held for matchmade players (last registry refresh + consumed)."""
        fleet = self.fleet
        if fleet is None:
            return 0
        return fleet.reserved.get(room_id, 0) + fleet.unseated(room_id)

    def _room_disposed(self, room_id: str) -> None:
        if self.fleet is not None:
            self.fleet.room_disposed(room_id)

    def _release(self, claim: SeatClaim | None) -> None:
        if claim is not None and self.fleet is not None:
            self.fleet.released(claim)  # a no-op once the player is seated

    async def _check_seat(self, token: str | None) -> SeatClaim | Refusal | None:
        """The seat token, consumed (single use) at the node that owns the seat; None when
        there is none (the socket may then Resume, or Join only if no token is required)."""
        if not token:
            return None
        if self.fleet is None:
            return Refusal(503, "starting", "server starting")
        return await self.fleet.admit(token)
