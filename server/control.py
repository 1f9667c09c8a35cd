"""The narrow interface through which the admin API, the parameters watcher and the
recorder act on a running server, instead of reaching into the gateway.

The gateway implements `ServerControl`; the modules that use it import only this file
(and only for type checking), so the dependency points one way: gateway -> admin,
paramswatch, recording -> control.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from server.metrics import Metrics
    from server.room import Room
    from sim.params import Params

__all__ = ["ServerControl"]


class ServerControl(Protocol):
    """What operators' tools may do to a running server."""

    @property
    def params(self) -> Params:
        """The parameters in force; a new room starts with them."""
        ...

    @property
    def params_version(self) -> int:
        """Bumped by every live parameter change."""
        ...

    @property
    def metrics(self) -> Metrics:
        """The server's metrics (tools count their own failures there)."""
        ...

    @property
    def web_root(self) -> Path:
        """Where the served client files (and the admin page) live."""
        ...

    def apply_params(self, new: Params, *, source: str = "api") -> tuple[int, list[str]]:
        """Apply live; (version now in force, restart-only keys that differ)."""
        ...

    def rooms(self) -> Mapping[str, Room]:
        """Open rooms by id (read-only use)."""
        ...

    def kick(self, room_id: str, player_id: int, reason: str, *,
             ban_s: float | None = None) -> float | None:
        """Close the player's socket with 1008 (Kick label "kicked", retry after the ban),
        free the seat now and ban the name for the server's kick ban (`ban_s`: the name
        and the address for that long). Returns the seconds banned; None when there is
        no such room or seat."""
        ...

    def bans(self) -> list[dict[str, object]]:
        """The bans in force (names, addresses, seconds left)."""
        ...

    def set_room_hook(self, hook: Callable[[Room], None] | None) -> None:
        """Call `hook(room)` for every new room before anyone joins it (the recorder)."""
        ...
