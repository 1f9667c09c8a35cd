"""A ring of the last second of hit-test state, for lag-compensated hitscan.

Theory of operation
-------------------
Row ``tick % depth`` holds, for every slot, what a hitscan ray needs of the world as it
was after ``tick`` ticks (the state a snapshot of that tick showed): ``pos`` (C,2)
float32, ``radius`` (C,) float32, ``collidable`` (C,) bool (a live, not-dead player or
NPC) and ``life`` (C,) uint32. Struct of arrays with a fixed capacity: nothing is
allocated per tick.

``life`` numbers the continuous stretches of one slot's existence: it goes up by one
whenever the slot's path is broken between two recorded ticks — the slot was reused
(``gen`` changed, or it was free and is now taken), a dead entity came back (respawn), or
it moved further than anything in the game can move in one tick (a teleport). A rewind
compares the life at the rewound tick with the life now; an entity whose life differs is
not a candidate for that shot (see ``sim.hitscan``): the shooter saw a previous life of
the slot, and its present one never stood where the shooter aimed.

``step`` records only while ``weapon.kind`` is hitscan (nothing else reads the ring, and a
row costs tens of microseconds); after a gap the ring starts over (``oldest`` is the start
of the unbroken run, and a row with no previous tick starts every slot's next life). It
writes the row of the tick being made twice: ``stage`` before the fire phase
(the positions the tick's shots are tested against when they rewind to "now"), then
``record`` at the end of the step (after hits and deaths), which is the row later ticks
rewind to. Both compare against the row of the previous tick, so staging changes nothing
that ``record`` will not overwrite. The ring is derived state: a replay restores it from
the checkpoint (``arrays``/``restore``) so rewinds after a checkpoint match the server.
"""

from __future__ import annotations

import numpy as np

from sim.world import FLAG_DEAD, KIND_NPC, KIND_PLAYER, World

__all__ = ["History"]

F32 = np.float32


class History:
    """The last ``depth`` recorded ticks of every slot's hit-test state (see module doc).

    Arrays (owned here): pos (D,C,2) float32 units; radius (D,C) float32 units;
    collidable (D,C) bool; life (D,C) uint32; ticks (D,) int64, the tick each row holds
    (-1 = never written)."""

    def __init__(self, capacity: int, depth: int) -> None:
        if depth < 2:
            raise ValueError("a history needs at least two rows")
        self.depth = depth
        self.pos = np.zeros((depth, capacity, 2), dtype=np.float32)
        self.radius = np.zeros((depth, capacity), dtype=np.float32)
        self.collidable = np.zeros((depth, capacity), dtype=np.bool_)
        self.life = np.zeros((depth, capacity), dtype=np.uint32)
        self.ticks = np.full(depth, -1, dtype=np.int64)
        # What the break rule compares with: the slot's gen/alive/dead at the newest row.
        self._gen = np.zeros(capacity, dtype=np.uint8)
        self._alive = np.zeros(capacity, dtype=np.bool_)
        self._dead = np.zeros(capacity, dtype=np.bool_)

    @classmethod
    def for_world(cls, world: World) -> History:
        """About one second of rows (tick_rate + 2: one second of rewind plus the row being
        made and one spare); ``weapon.max_rewind_ms`` is at most 1000."""
        return cls(world.capacity, world.params.tick_rate + 2)

    @property
    def newest(self) -> int:
        """The newest recorded tick, -1 when empty."""
        return int(self.ticks.max())

    @property
    def oldest(self) -> int:
        """The oldest tick of the unbroken run of rows ending at ``newest`` (-1 when empty):
        rows older than a gap (the ring was not recorded for a while) are never used."""
        newest = self.newest
        if newest < 0:
            return -1
        back = newest - np.arange(self.depth)
        held = (back >= 0) & (self.ticks[back % self.depth] == back)
        run = self.depth if held.all() else int(np.argmin(held))
        return newest - run + 1

    def rows(self, ticks: np.ndarray) -> np.ndarray:
        """Ring rows of ``ticks`` (int64 array); the caller keeps them within [oldest, newest]."""
        return np.asarray(ticks, dtype=np.int64) % self.depth

    def stage(self, world: World) -> None:
        """Write the row of tick ``world.tick + 1`` from the world as it is now (inside a
        step, before its shots)."""
        self._write(world, world.tick + 1, commit=False)

    def record(self, world: World) -> None:
        """Write the row of tick ``world.tick`` (after a step, or when a world is made)."""
        self._write(world, world.tick, commit=True)

    def _write(self, world: World, tick: int, *, commit: bool) -> None:
        p = world.params
        row = tick % self.depth
        prev = (tick - 1) % self.depth
        has_prev = self.ticks[prev] == tick - 1
        alive = world.alive
        dead = (world.flags & FLAG_DEAD) != 0
        is_player = world.kind == KIND_PLAYER
        collidable = (is_player | (world.kind == KIND_NPC)) & ~dead
        pos = world.pos
        if has_prev:
            broken = alive & ((world.gen != self._gen) | ~self._alive | (self._dead & ~dead))
            # A teleport: further than the fastest thing can go in one tick (players may
            # catch up inputs_per_tick steps in one tick), with room for rounding.
            reach = max(p.player_max_speed * p.inputs_per_tick, p.npc_speed) / p.tick_rate
            limit = F32(1.5 * reach + 1.0)
            d = pos - self.pos[prev]
            broken |= alive & ~broken & (d[:, 0] * d[:, 0] + d[:, 1] * d[:, 1] > limit * limit)
            life = self.life[prev] + broken.astype(np.uint32)
        else:
            # No previous row (a new world, or a gap): every slot starts a new life.
            life = self.life[prev] + np.uint32(1)
        self.pos[row] = pos
        self.radius[row] = np.where(is_player, F32(p.player_radius), F32(p.npc_radius))
        self.collidable[row] = collidable
        self.life[row] = life
        self.ticks[row] = tick
        if commit:
            self._gen[:] = world.gen
            self._alive[:] = alive
            self._dead[:] = dead

    # -- checkpoints (recording and replay) ------------------------------------------------

    def arrays(self) -> list[np.ndarray]:
        """Every array in a fixed order (the recording's checkpoint writes their bytes)."""
        return [self.pos, self.radius, self.collidable, self.life, self.ticks,
                self._gen, self._alive, self._dead]

    def copy(self) -> History:
        other = History.__new__(History)
        other.depth = self.depth
        for name in ("pos", "radius", "collidable", "life", "ticks", "_gen", "_alive", "_dead"):
            setattr(other, name, getattr(self, name).copy())
        return other

    def restore(self, arrays: list[np.ndarray]) -> None:
        """Load arrays written by ``arrays`` (same capacity and depth)."""
        mine = self.arrays()
        if len(arrays) != len(mine):
            raise ValueError("history checkpoint has the wrong number of arrays")
        for dst, src in zip(mine, arrays, strict=True):
            if dst.shape != src.shape or dst.dtype != src.dtype:
                raise ValueError("history checkpoint does not match this world")
            dst[...] = src
