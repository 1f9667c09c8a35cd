"""The world: a structure of arrays with a fixed number of entity slots.

Theory of operation
-------------------
One entity is one index ("slot") into arrays of length ``C = params.capacity`` that the
``World`` owns; ``sim.step.step`` mutates them in place. ``alive`` says a slot is in use and
``kind`` what occupies it. A killed player or NPC keeps its slot (``alive`` stays True) with
``FLAG_DEAD`` set, hp 0 and zero velocity until ``respawn_tick``. Freed slots are reset to
zeros (owner -1) so that a free slot never carries stale data into a snapshot or a hash.

Allocation always takes the lowest free slots, and every allocation bumps ``gen`` (uint8,
wrapping), so ``(slot, gen)`` names one occupant: a client seeing a new ``gen`` in a slot
knows it is a different entity.

All randomness comes from ``rng``, a PCG64 generator seeded from ``params.seed``: the same
seed, parameters and input stream give bit-identical arrays at every tick.

Coordinates: world units, float32, x in [0, world_width], y in [0, world_height]. Players
keep their centre in [radius, size - radius]. NPCs are points for the wall rule (they bounce
at 0 and size exactly as the arena scenario specifies).
"""

from __future__ import annotations

import hashlib
from typing import TYPE_CHECKING

import numpy as np

from sim.params import Params, ParamsError, restart_keys_changed

if TYPE_CHECKING:
    from sim.history import History

__all__ = [
    "ARRAYS",
    "FLAG_DEAD",
    "FLAG_FIRED",
    "KIND_EMPTY",
    "KIND_NPC",
    "KIND_PLAYER",
    "KIND_PROJECTILE",
    "World",
    "WorldFullError",
]

# Copies of the .proto's EntityKind / EntityFlag enums (sim imports nothing from proto);
# tests/unit/test_web_wire_constants.py fails if they ever differ.
KIND_EMPTY = 0
KIND_PLAYER = 1
KIND_NPC = 2
KIND_PROJECTILE = 3

FLAG_DEAD = 1  # player/NPC waiting to respawn: in its slot, hp 0, not collidable, not moving
FLAG_FIRED = 2  # the player fired on the last tick

_TWO_PI = 2.0 * np.pi

# Names and dtypes of the per-slot arrays, in the order state_hash() reads them.
_ARRAYS: tuple[tuple[str, type, tuple[int, ...]], ...] = (
    ("pos", np.float32, (2,)),
    ("vel", np.float32, (2,)),
    ("hp", np.int32, ()),
    ("kind", np.uint8, ()),
    ("alive", np.bool_, ()),
    ("gen", np.uint8, ()),
    ("owner", np.int32, ()),
    ("aim", np.float32, ()),
    ("score", np.int32, ()),
    ("deaths", np.int32, ()),
    ("flags", np.uint8, ()),
    ("respawn_tick", np.int64, ()),
    ("next_fire_tick", np.int64, ()),
    ("expire_tick", np.int64, ()),
)
#: The same, public: recordings store the arrays in this order (server/recording.py).
ARRAYS = _ARRAYS


class WorldFullError(RuntimeError):
    """No free slot (or the room's player limit is reached)."""


class World:
    """Entity arrays of length ``capacity``, the tick counter and the generator.

    Attributes (arrays owned by the World, mutated in place by ``step``):
      pos (C,2) float32 units; vel (C,2) float32 units/s; hp (C,) int32; kind (C,) uint8;
      alive (C,) bool (slot in use); gen (C,) uint8 (bumped on every allocation);
      owner (C,) int32 (projectile: shooter slot, -1 once the shooter left; player: player id;
      else -1); aim (C,) float32 radians; score (C,) int32 (kills by a player, times
      kill_score); deaths (C,) int32; flags (C,) uint8 (FLAG_*); respawn_tick,
      next_fire_tick, expire_tick (C,) int64 tick numbers.
      tick: int, ticks completed. rng: np.random.Generator. params: Params.
      history: ``sim.history.History``, the last second of hit-test state for lag
      compensation (derived from the arrays; ``step`` records it, not part of the hash).
    """

    pos: np.ndarray
    vel: np.ndarray
    hp: np.ndarray
    kind: np.ndarray
    alive: np.ndarray
    gen: np.ndarray
    owner: np.ndarray
    aim: np.ndarray
    score: np.ndarray
    deaths: np.ndarray
    flags: np.ndarray
    respawn_tick: np.ndarray
    next_fire_tick: np.ndarray
    expire_tick: np.ndarray

    def __init__(self, params: Params, rng: np.random.Generator) -> None:
        """Empty world (no NPCs). Prefer ``World.create``."""
        self.params = params
        self.rng = rng
        self.tick = 0
        c = params.capacity
        for name, dtype, tail in _ARRAYS:
            setattr(self, name, np.zeros((c, *tail), dtype=dtype))
        self.owner.fill(-1)
        from sim.history import History  # here: sim.history imports this module

        self.history: History = History.for_world(self)

    @property
    def capacity(self) -> int:
        return len(self.kind)

    @classmethod
    def create(cls, params: Params) -> World:
        """A new world seeded from ``params.seed`` with ``params.npc_count`` NPCs in the lowest
        slots: uniform random positions in the world, speed ``npc_speed`` in a uniform random
        direction, hp ``npc_hp``."""
        world = cls(params, np.random.Generator(np.random.PCG64(params.seed)))
        n = params.npc_count
        if n:
            slots = np.arange(n)
            world._allocate(slots, KIND_NPC)
            world.pos[slots] = world._random_points(n, 0.0)
            world.vel[slots] = world._random_velocities(n, params.npc_speed)
            world.hp[slots] = params.npc_hp
        world.history.record(world)
        return world

    # -- randomness (every draw goes through here, in a fixed order) ---------------------

    def _random_points(self, n: int, margin: float) -> np.ndarray:
        """(n,2) float32 uniform in [margin, size - margin] on each axis."""
        p = self.params
        lo = np.array([margin, margin])
        span = np.array([p.world_width, p.world_height]) - 2.0 * lo
        return (lo + self.rng.random((n, 2)) * span).astype(np.float32)

    def _random_velocities(self, n: int, speed: float) -> np.ndarray:
        """(n,2) float32, length ``speed``, uniform random direction."""
        theta = self.rng.random(n) * _TWO_PI
        return (speed * np.stack([np.cos(theta), np.sin(theta)], axis=1)).astype(np.float32)

    # -- slots ----------------------------------------------------------------------------

    def free_slots(self, k: int) -> np.ndarray:
        """Up to ``k`` free slot indices, lowest first."""
        return np.flatnonzero(~self.alive)[:k]

    def _allocate(self, slots: np.ndarray, kind: int) -> None:
        """Claim ``slots`` (assumed free and zeroed) for ``kind``; bump their generation."""
        self.alive[slots] = True
        self.kind[slots] = kind
        self.gen[slots] += np.uint8(1)  # uint8 wraps at 256 by design

    def _free(self, slots: np.ndarray) -> None:
        """Release ``slots`` (index array or bool mask); reset every field except ``gen``."""
        for name, _dtype, _tail in _ARRAYS:
            if name != "gen":
                getattr(self, name)[slots] = 0
        self.owner[slots] = -1

    def add_player(self, player_id: int) -> int:
        """Place a new player (hp ``player_hp``, random position inside the walls, at rest)
        in the lowest free slot and return the slot. Raises ``WorldFullError`` when no slot
        is free or ``max_players`` players are already in the world."""
        p = self.params
        n_players = int(np.count_nonzero(self.kind == KIND_PLAYER))
        if n_players >= p.max_players:
            raise WorldFullError(f"room.max_players = {p.max_players} players already present")
        free = self.free_slots(1)
        if len(free) == 0:
            raise WorldFullError(f"all {self.capacity} entity slots are in use")
        slot = int(free[0])
        self._allocate(free, KIND_PLAYER)
        self.owner[slot] = player_id
        self.hp[slot] = p.player_hp
        self.pos[slot] = self._random_points(1, p.player_radius)[0]
        return slot

    def remove_player(self, slot: int) -> None:
        """Free a player's slot. Its projectiles in flight stay but no longer credit anyone
        (owner -1), so a later occupant of the slot never inherits kills."""
        if not (0 <= slot < self.capacity) or self.kind[slot] != KIND_PLAYER:
            raise ValueError(f"slot {slot} does not hold a player")
        self._free(np.array([slot]))
        orphans = (self.kind == KIND_PROJECTILE) & (self.owner == slot)
        self.owner[orphans] = -1

    # -- parameters, copies, hashes -------------------------------------------------------

    def set_params(self, params: Params) -> None:
        """Apply a live parameter change. Raises ``ParamsError`` if a restart-only key
        (``live=False``: capacity, tick rate, seed, npc count, max players) differs. Entities
        keep their positions, pulled inside the walls if the world shrank; new speeds, hp
        and delays apply from the next event that uses them (turn, spawn, death)."""
        changed = restart_keys_changed(self.params, params)
        if changed:
            raise ParamsError(f"{', '.join(changed)} can only change with a restart")
        self.params = params
        size = np.array([params.world_width, params.world_height], dtype=np.float32)
        players = self.kind == KIND_PLAYER
        r = np.float32(params.player_radius)
        self.pos[players] = np.clip(self.pos[players], r, size - r)
        others = self.alive & ~players
        self.pos[others] = np.clip(self.pos[others], np.float32(0), size)

    def copy(self) -> World:
        """An independent deep copy (arrays, tick and generator state)."""
        rng = np.random.Generator(np.random.PCG64())
        rng.bit_generator.state = self.rng.bit_generator.state
        other = World.__new__(World)
        other.params = self.params
        other.rng = rng
        other.tick = self.tick
        other.history = self.history.copy()
        for name, _dtype, _tail in _ARRAYS:
            setattr(other, name, getattr(self, name).copy())
        return other

    def state_hash(self) -> str:
        """blake2b-128 hex digest of the tick, every array's bytes and the generator state."""
        h = hashlib.blake2b(digest_size=16)
        h.update(self.tick.to_bytes(8, "little", signed=True))
        for name, _dtype, _tail in _ARRAYS:
            h.update(np.ascontiguousarray(getattr(self, name)).tobytes())
        h.update(repr(self.rng.bit_generator.state).encode())
        return h.hexdigest()

    # -- convenience views ----------------------------------------------------------------

    def slots_of(self, kind: int) -> np.ndarray:
        """Slots currently holding ``kind`` (ascending)."""
        return np.flatnonzero(self.alive & (self.kind == kind))
