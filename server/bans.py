"""Temporary bans: a kicked player stays out for a while.

Sans-I/O and clock-free: every call takes ``now`` (seconds on the server's monotonic clock).
An admin's kick bans the kicked player's name (trimmed, case-folded, so "Bob " is "bob")
for ``kick_ban_s`` (``--kick-ban-s``, default 60 s); the admin page's Ban button bans the
name and the address, for as long as the admin asks (at most a day). A plain kick leaves
the address alone because many players can share one (NAT, a campus, local tests).
A Join whose name *or* address is banned is refused with 1008, label ``banned``,
``retry`` true and ``retry_after_s`` what is left of the ban (see proto/README.md
"Kick"). A Resume is never checked: a kick frees the seat, so there is nothing to resume.

Bounded: at most ``max_entries`` live bans (the oldest expiry is dropped first), and
expired entries are swept on every ban, so a flood of kicks cannot grow memory.
"""

from __future__ import annotations

import heapq
import math
from dataclasses import dataclass, field

DEFAULT_KICK_BAN_S = 60.0
MAX_BAN_S = 24 * 3600.0


def name_key(name: str) -> str:
    """The form a name is banned under: trimmed and case-folded."""
    return name.strip().casefold()


@dataclass
class Bans:
    """Names and addresses kept out until a time. ``kick_ban_s`` is what a kick costs."""

    kick_ban_s: float = DEFAULT_KICK_BAN_S
    max_entries: int = 10_000
    _until: dict[tuple[str, str], float] = field(default_factory=dict)
    _expiry: list[tuple[float, tuple[str, str]]] = field(default_factory=list)

    def ban(self, now: float, *, name: str | None, address: str | None,
            seconds: float | None = None) -> float:
        """Ban ``name`` and ``address`` (either may be None) for ``seconds`` (default
        ``kick_ban_s``, at most a day). Returns the seconds applied (0: nothing banned)."""
        secs = self.kick_ban_s if seconds is None else seconds
        if not math.isfinite(secs) or secs <= 0:
            return 0.0
        secs = min(secs, MAX_BAN_S)
        self._sweep(now)
        until = now + secs
        keys = []
        if name is not None and name_key(name):
            keys.append(("name", name_key(name)))
        if address:
            keys.append(("addr", address))
        for key in keys:
            if self._until.get(key, 0.0) < until:
                self._until[key] = until
                heapq.heappush(self._expiry, (until, key))
        while len(self._until) > self.max_entries:
            old_until, key = heapq.heappop(self._expiry)
            if self._until.get(key) == old_until:  # not a stale entry of a re-ban
                del self._until[key]
        return secs if keys else 0.0

    def remaining(self, now: float, *, name: str | None, address: str | None) -> float:
        """Seconds left of the longest ban on ``name`` or ``address``; 0.0 when free."""
        left = 0.0
        if name is not None:
            left = max(left, self._until.get(("name", name_key(name)), 0.0) - now)
        if address:
            left = max(left, self._until.get(("addr", address), 0.0) - now)
        return max(0.0, left)

    def lift(self, *, name: str | None = None, address: str | None = None) -> bool:
        """End a ban early (an admin's mistake). True if there was one."""
        found = False
        if name is not None:
            found |= self._until.pop(("name", name_key(name)), None) is not None
        if address:
            found |= self._until.pop(("addr", address), None) is not None
        return found

    def active(self, now: float) -> list[dict[str, object]]:
        """The bans in force, for the admin page: [{kind, value, seconds_left}]."""
        self._sweep(now)
        return [{"kind": kind, "value": value, "seconds_left": round(until - now, 1)}
                for (kind, value), until in sorted(self._until.items(), key=lambda kv: kv[1])]

    def __len__(self) -> int:
        return len(self._until)

    def _sweep(self, now: float) -> None:
        while self._expiry and self._expiry[0][0] <= now:
            until, key = heapq.heappop(self._expiry)
            if self._until.get(key) == until:
                del self._until[key]
