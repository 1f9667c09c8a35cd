"""One simulation tick, vectorised over every slot.

Theory of operation
-------------------
``step(world, inputs)`` advances the world by exactly one tick of ``dt = 1 / tick_rate``
seconds and returns the tick's ``StepEvents``. ``t = world.tick`` is the number of the tick
being simulated; ``world.tick`` becomes ``t + 1`` at the end. The phases, in order:

1. ``FLAG_FIRED`` is cleared everywhere; players/NPCs whose ``respawn_tick <= t`` respawn
   at a random position with full hp (NPCs also get a new random direction).
2. Active players move one step (the rule is in ``move_players``; the browser client
   reproduces it). Players without a command this tick are inactive and do not move; one
   with several commands had its earlier ones applied by ``pre_move`` before the step.
3. NPCs: when ``t % npc_turn_interval_ticks == 0`` every NPC picks a new uniform random
   direction at ``npc_speed``; then per axis ``p += v*dt``; ``p < 0 → p = -p, v = -v``;
   ``p > size → p = 2*size - p, v = -v`` (float32, exactly the arena scenario's rule).
4. Projectiles in flight expire (``t >= expire_tick``), the rest move ``p += v*dt`` and
   those that left the world are freed.
5. Players with ``fire`` set whose cooldown is over fire: one projectile each, lowest slots
   first while ``projectile.max`` and free slots allow.
   With ``weapon.kind = "hitscan"`` they fire a ray instead (cooldown ``weapon.cooldown_s``):
   every shot of the tick is tested at once against the world as its shooter saw it, no
   deeper than ``weapon.max_rewind_ms`` (``sim.hitscan``; ``sim.history`` keeps the last
   second of positions). Each hit takes ``weapon.damage`` hp; several hits on one target
   apply in shooter-slot order and the one that takes hp to <= 0 gets the kill. Hitscan
   hits and kills are reported after the projectile ones of the same tick.
6. Every projectile hits at most one target: the lowest-slot live, not-dead player or NPC
   (never its own shooter) with ``dx*dx + dy*dy <= (r_projectile + r_target)**2`` in
   float32. Candidates come from a uniform grid (cell >= the largest radius sum; targets
   near a projectile sorted by cell; the 3x3 neighbourhood of each projectile looked up in
   a cell -> run-of-sorted-targets table), so the cost is O(P + T log T), not O(P*T).
   Each hit removes the projectile and ``projectile.damage`` hp. When several projectiles
   hit one target on one tick, they apply in projectile-slot order and the one that takes
   hp to <= 0 gets the kill.
7. The killed get ``FLAG_DEAD``, hp 0, zero velocity, ``deaths += 1`` and a respawn tick;
   the killer (if it is still a player) gets ``score += kill_score``.

No phase loops over entities in Python; everything is a masked NumPy operation. Arithmetic
on positions and velocities is float32 throughout (parameters are rounded to float32 once
per tick) so that results are bit-identical run to run for a given seed and input stream,
and so a JavaScript client using ``Math.fround`` reproduces player movement exactly.
Trigonometry (NPC directions, aim) is done in float64 and rounded to float32; it is only
needed by the server, and the result is stored, never re-derived by clients.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass, field

import numpy as np

from sim.hitscan import RayHits, Views, resolve_views, trace
from sim.world import (
    FLAG_DEAD,
    FLAG_FIRED,
    KIND_NPC,
    KIND_PLAYER,
    KIND_PROJECTILE,
    World,
)

__all__ = ["STOP_SPEED", "HitscanShots", "Inputs", "StepEvents", "find_hits", "move_players",
           "pre_move", "step"]

F32 = np.float32
STOP_SPEED = F32(0.5)  # units/s: an idle player slower than this stops, so it stops changing
_NOT_FIRED = np.uint8(0xFF ^ FLAG_FIRED)
_EMPTY = np.zeros(0, dtype=np.int64)

# The 3x3 cell neighbourhood, as (9,) offsets.
_DX = np.array([-1, 0, 1, -1, 0, 1, -1, 0, 1], dtype=np.int64)
_DY = np.array([-1, -1, -1, 0, 0, 0, 1, 1, 1], dtype=np.int64)


@dataclass
class Inputs:
    """Dense per-slot intent for one tick, arrays of length C (only rows of live players
    are read). ``move`` (C,2) float32: desired direction, its length is clamped to <= 1;
    ``aim`` (C,) float32 radians; ``fire`` (C,) bool; ``active`` (C,) bool: the player
    moves this tick. A player with no command this tick is not active: it keeps its
    position and velocity until its command arrives (one command is one movement step, as
    the client predicted it). Non-finite move/aim rows are ignored (treated as no move /
    unchanged aim).

    The view a hitscan shot is tested at (read for shooters only; see ``sim.hitscan``):
    ``view_a``, ``view_b`` (C,) int64, the two snapshot ticks the client was drawing
    between (0 = no claim: test at the present), ``view_blend`` (C,) float32 in [0, 1];
    ``rewind_limit`` (C,) float32 ticks, the deepest rewind the room allows this shooter
    (+inf: only ``weapon.max_rewind_ms`` limits it)."""

    move: np.ndarray
    aim: np.ndarray
    fire: np.ndarray
    active: np.ndarray
    view_a: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))
    view_b: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))
    view_blend: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.float32))
    rewind_limit: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.float32))

    def __post_init__(self) -> None:
        c = len(self.aim)
        if len(self.view_a) != c:  # built without views: no claims, no room limit
            self.view_a = np.zeros(c, dtype=np.int64)
            self.view_b = np.zeros(c, dtype=np.int64)
            self.view_blend = np.zeros(c, dtype=np.float32)
            self.rewind_limit = np.full(c, np.inf, dtype=np.float32)

    @classmethod
    def empty(cls, capacity: int) -> Inputs:
        """No move, aim 0, no fire, every player active, no view claims."""
        return cls(
            move=np.zeros((capacity, 2), dtype=np.float32),
            aim=np.zeros(capacity, dtype=np.float32),
            fire=np.zeros(capacity, dtype=np.bool_),
            active=np.ones(capacity, dtype=np.bool_),
        )

    def clear_views(self) -> None:
        """Back to no claims and no room limit."""
        self.view_a.fill(0)
        self.view_b.fill(0)
        self.view_blend.fill(0.0)
        self.rewind_limit.fill(np.inf)


@dataclass
class HitscanShots:
    """The hitscan shots of one tick, one row per shot in shooter-slot order: ``shooter``
    slots (int64), ``target`` slot hit (-1 = miss), ``start``/``end`` (S,2) float32 (the
    ray as tested: from the shooter to the entry point, or to its range), ``view_a``,
    ``view_b``, ``view_blend`` (the view tested, after clamping), ``depth_ticks`` (float64,
    how far it rewound), ``clamped`` (bool, the claim was deeper than allowed)."""

    shooter: np.ndarray
    target: np.ndarray
    start: np.ndarray
    end: np.ndarray
    view_a: np.ndarray
    view_b: np.ndarray
    view_blend: np.ndarray
    depth_ticks: np.ndarray
    clamped: np.ndarray


@dataclass
class StepEvents:
    """What happened on one tick (slot arrays are int64, ordered by projectile slot for hits
    and by victim slot for kills; hitscan hits and kills follow the projectile ones).
    ``hits_shooter``/``kills_killer`` hold the shooter's slot at the time of the hit, -1 if
    the shooter has left. ``fired_shooter``/``fired_projectile``: the projectiles spawned
    this tick and whose they are (slots). ``hitscan``: this tick's rays, if any."""

    tick: int
    shots: int = 0
    # Defaults: empty int64 arrays (a view of one: a C call, no Python frame per field).
    hits_shooter: np.ndarray = field(default_factory=_EMPTY.view)
    hits_target: np.ndarray = field(default_factory=_EMPTY.view)
    kills_killer: np.ndarray = field(default_factory=_EMPTY.view)
    kills_victim: np.ndarray = field(default_factory=_EMPTY.view)
    respawned: np.ndarray = field(default_factory=_EMPTY.view)
    fired_shooter: np.ndarray = field(default_factory=_EMPTY.view)
    fired_projectile: np.ndarray = field(default_factory=_EMPTY.view)
    hitscan: HitscanShots | None = None


def step(world: World, inputs: Inputs) -> StepEvents:
    """Advance ``world`` by one tick (``1 / params.tick_rate`` s) in place; see the module
    docstring for the phases. Returns the tick's events."""
    p = world.params
    t = world.tick
    dt = F32(1.0 / p.tick_rate)
    events = StepEvents(tick=t)

    # Free slots hold zeros (kind empty, no flags; KIND_EMPTY exactly in free slots, so
    # `alive` need not be read), and every phase below looks only at the slots up to the
    # highest occupied one: a room's capacity is mostly empty.
    occupied = world.kind.nonzero()[0]
    span = int(occupied[-1]) + 1 if len(occupied) else 0
    kind = world.kind[:span]
    flags = world.flags[:span]
    np.bitwise_and(flags, _NOT_FIRED, out=flags)
    dead = (flags & FLAG_DEAD) != 0

    if dead.any():
        due = (dead & (world.respawn_tick[:span] <= t)).nonzero()[0]
        if due.size:
            _respawn(world, due)
            dead[due] = False
            events.respawned = due
        players = ((kind == KIND_PLAYER) & ~dead).nonzero()[0]
        npcs = ((kind == KIND_NPC) & ~dead).nonzero()[0]
    else:  # nobody dead (always so without shooting): the kinds alone say it
        players = (kind == KIND_PLAYER).nonzero()[0]
        npcs = (kind == KIND_NPC).nonzero()[0]

    moving = players[inputs.active[players]]
    if moving.size:
        move_players(world, _run_of(moving), inputs, dt)

    if npcs.size:
        _move_npcs(world, _run_of(npcs), npcs.size, t, dt)

    flying = _move_projectiles(world, kind, t, dt)

    hitscan = p.weapon_kind == "hitscan"
    if players.size and p.shooting_enabled:
        if hitscan:
            events.shots = _fire_hitscan(world, players, inputs, t, events)
        else:
            events.shots = _fire(world, players, inputs, t, events)

    if flying or events.fired_projectile.size:  # else find_hits finds nothing
        proj, tgt = find_hits(world)
        if proj.size:
            _apply_hits(world, proj, tgt, t, events)
    if events.hitscan is not None:
        _apply_hitscan(world, events.hitscan, t, events)

    world.tick = t + 1
    if hitscan:  # only hitscan rewinds into the history (see sim.history)
        world.history.record(world)
    return events


def pre_move(world: World, slots: np.ndarray, inputs: Inputs) -> None:
    """An extra movement step, before the tick's own, for player ``slots`` with more than
    one command this tick (commands that arrived late, bunched together). Each command is
    one movement step of ``dt``, exactly as the client predicted it; dead or departed slots
    are skipped. Nothing else in the world moves."""
    slots = np.asarray(slots, dtype=np.int64)
    live = (world.kind[slots] == KIND_PLAYER) & ((world.flags[slots] & FLAG_DEAD) == 0)
    if live.any():
        move_players(world, slots[live], inputs, F32(1.0 / world.params.tick_rate))


def move_players(world: World, slots: np.ndarray | slice, inputs: Inputs,
                 dt: np.float32) -> None:
    """The player movement rule, for live not-dead player ``slots`` (distinct slot indices,
    or a slice of them). Every value is float32
    and every operation a float32 operation (JS: wrap each in ``Math.fround``):

    params: A = f32(accel), S = f32(max_speed), R = f32(radius), W = f32(width),
            H = f32(height), dt = f32(1 / tick_rate),
            F = f32(exp(-f64(f32(friction)) * f64(dt)))  (computed in float64, rounded once)
    1. m = move; if m is not finite, m = (0, 0).
       L = sqrt(mx*mx + my*my); if L > 1: m = (mx / L, my / L)
       (a move so large that L overflows to inf becomes (0, 0), as x / inf = 0 in JS too).
    2. if m != (0, 0) (steering): target = (mx*S, my*S); d = target - v;
       n = sqrt(dx*dx + dy*dy); a = A*dt;
       if n <= a: v = target  (exactly)  else: k = a / n; v = (vx + dx*k, vy + dy*k).
       else (idle): v = (vx*F, vy*F); if sqrt(vx*vx + vy*vy) < 0.5: v = (0, 0).
    3. unless v = target was reached in step 2: s = sqrt(vx*vx + vy*vy);
       if s > S: k = S / s; v = (vx*k, vy*k).
    4. per axis: p = p + v*dt; lo = R, hi = size - R;
       if p < lo: p = lo, v = 0; if p > hi: p = hi, v = 0   (that axis only).
    5. aim = input aim if finite, else unchanged.
    With accel*dt >= 2*max_speed (e.g. accel 100000, max_speed 100 at 30 Hz) the velocity
    equals move_direction * max_speed on every tick: players move at exactly max_speed.
    """
    p = world.params
    max_speed = F32(p.player_max_speed)
    accel_dt = F32(p.player_accel) * dt
    fric = F32(math.exp(-float(F32(p.player_friction)) * float(dt)))
    zero, one = F32(0.0), F32(1.0)
    # Both axes at once as (k, 2) arrays: the same float32 operations per element as the
    # rule above, in half the NumPy calls (each call costs more than its arithmetic here).

    rows = slots  # an index array or a slice: both index every array below alike
    m = inputs.move[rows].astype(np.float32, copy=False)
    finite = np.isfinite(m)
    if not finite.all():
        m = np.where(finite.all(axis=1, keepdims=True), m, zero)
    with np.errstate(over="ignore"):  # a huge move overflows to L = inf, then m / inf = 0
        sq = m * m
        length = np.sqrt(sq[:, 0] + sq[:, 1])
    if length.max() > one:  # else every m / 1 below would give m: skipped (exact anyway)
        m = m / np.where(length > one, length, one)[:, None]  # x / 1 is exact: short moves kept

    v = world.vel[rows]
    steering = (m != zero).any(axis=1)
    target = m * max_speed
    d = target - v
    dd = d * d
    dist = np.sqrt(dd[:, 0] + dd[:, 1])
    reach = dist <= accel_dt
    # The branches below skip what every player would discard (a where() whose mask is
    # all true gives its first operand): with a high accel every steering player reaches
    # its target, and players mostly steer.
    if reach.all():
        s = target
    else:
        k = accel_dt / np.where(reach, one, dist)
        s = np.where(reach[:, None], target, v + d * k[:, None])
    if steering.all():
        v = s
    else:
        idle = v * fric
        ii = idle * idle
        stopped = np.sqrt(ii[:, 0] + ii[:, 1]) < STOP_SPEED
        v = np.where(steering[:, None], s, np.where(stopped[:, None], zero, idle))

    # The target itself is never clamped: |move| <= 1 makes it max_speed up to rounding,
    # and leaving it untouched keeps "velocity = direction * max_speed" exact.
    reached = steering & reach
    if not reached.all():
        vv = v * v
        speed = np.sqrt(vv[:, 0] + vv[:, 1])
        over = (speed > max_speed) & ~reached
        if over.any():
            k = max_speed / np.where(over, speed, one)
            v = np.where(over[:, None], v * k[:, None], v)

    radius = F32(p.player_radius)
    hi = _upper_walls(p.world_width, p.world_height, p.player_radius)
    pa = world.pos[rows] + v * dt
    out = (pa < radius) | (pa > hi)
    _put_rows(world.pos, rows, np.minimum(np.maximum(pa, radius), hi))
    _put_rows(world.vel, rows, np.where(out, zero, v))

    aim = inputs.aim[rows].astype(np.float32, copy=False)
    finite_aim = np.isfinite(aim)
    world.aim[rows] = aim if finite_aim.all() else np.where(finite_aim, aim, world.aim[rows])


def _move_npcs(world: World, rows: np.ndarray | slice, n: int, t: int,
               dt: np.float32) -> None:
    """Move the `n` live NPCs at `rows` (slot indices in ascending order, or a slice)."""
    p = world.params
    if t % p.npc_turn_interval_ticks == 0:
        _put_rows(world.vel, rows, world._random_velocities(n, p.npc_speed))
    size = _upper_walls(p.world_width, p.world_height, 0.0)
    vel = world.vel[rows]  # a view when `rows` is a slice: written back in place below
    pa = world.pos[rows] + vel * dt  # both axes at once, same float32 ops
    low = pa < F32(0.0)
    high = pa > size
    bounced = low | high
    if bounced.any():  # most ticks nobody reaches a wall
        twice = size + size  # exact in float32: the "2W" of the scenario rule
        pa = np.where(low, -pa, np.where(high, twice - pa, pa))
        np.negative(vel, out=vel, where=bounced)
        _put_rows(world.vel, rows, vel)
    _put_rows(world.pos, rows, pa)


def _move_projectiles(world: World, kind: np.ndarray, t: int, dt: np.float32) -> int:
    """Expire, move and free the projectiles (`kind`: the world's kinds, or a prefix
    holding every live slot). Returns how many are still flying."""
    p = world.params
    proj = (kind == KIND_PROJECTILE).nonzero()[0]
    if proj.size == 0:
        return 0
    expired = world.expire_tick[proj] <= t
    flying = proj[~expired]
    pos = world.pos.take(flying, axis=0)
    pos += world.vel.take(flying, axis=0) * dt
    _put_rows(world.pos, flying, pos)
    left = np.zeros(flying.size, dtype=np.bool_)
    for axis, size in enumerate((p.world_width, p.world_height)):
        left |= (pos[:, axis] < F32(0.0)) | (pos[:, axis] > F32(size))
    gone = np.concatenate([proj[expired], flying[left]])
    if gone.size:
        world._free(gone)
    return int(flying.size - np.count_nonzero(left))


@functools.lru_cache(maxsize=8)
def _upper_walls(width: float, height: float, radius: float) -> np.ndarray:
    """(2,) float32 ``(width, height) - radius`` (radius as float32), made once per world
    size instead of every tick. Read-only: it is shared."""
    walls = np.array([width, height], dtype=np.float32) - np.float32(radius)
    walls.flags.writeable = False
    return walls


def _run_of(slots: np.ndarray) -> np.ndarray | slice:
    """Ascending distinct ``slots`` (as ``nonzero`` gives) as a slice when they are one
    run (NPCs take the lowest slots and players the next ones, so they usually are):
    reading and writing a slice of rows is a view and a copy, far cheaper than a gather
    and a scatter. Only for ascending input: first and last alone say it is a run."""
    n = len(slots)
    if n and int(slots[-1]) - int(slots[0]) == n - 1:
        return slice(int(slots[0]), int(slots[-1]) + 1)
    return slots


def _put_rows(dst: np.ndarray, slots: np.ndarray | slice, rows: np.ndarray) -> None:
    """``dst[slots] = rows`` for (C,2) float32 ``dst``; for an index array through an
    int64 view: scattering one 8-byte element per row is several times faster than NumPy's
    2-D row scatter."""
    if isinstance(slots, slice):
        dst[slots] = rows
        return
    rows = np.ascontiguousarray(rows, dtype=np.float32)
    dst.view(np.int64).reshape(-1)[slots] = rows.view(np.int64).reshape(-1)


def _fire(world: World, shooters: np.ndarray, inputs: Inputs, t: int,
          events: StepEvents) -> int:
    """Spawn projectiles for ``shooters`` (live players) that want to and may fire.
    Returns the number of shots."""
    p = world.params
    ready = inputs.fire[shooters] & (world.next_fire_tick[shooters] <= t)
    shooters = shooters[ready]
    if shooters.size == 0 or p.max_projectiles == 0:
        return 0
    in_flight = int(np.count_nonzero(world.kind == KIND_PROJECTILE))
    budget = max(0, p.max_projectiles - in_flight)
    slots = world.free_slots(min(budget, shooters.size))
    shooters = shooters[: slots.size]
    if slots.size == 0:
        return 0
    world._allocate(slots, KIND_PROJECTILE)
    aim = world.aim[shooters].astype(np.float64)
    direction = np.stack([np.cos(aim), np.sin(aim)], axis=1).astype(np.float32)
    offset = F32(p.player_radius) + F32(p.projectile_radius)
    world.pos[slots] = world.pos[shooters] + direction * offset
    world.vel[slots] = direction * F32(p.projectile_speed)
    world.aim[slots] = world.aim[shooters]
    world.owner[slots] = shooters
    world.expire_tick[slots] = t + p.ticks(p.projectile_lifetime_s)
    world.next_fire_tick[shooters] = t + p.ticks(p.fire_cooldown_s)
    world.flags[shooters] |= np.uint8(FLAG_FIRED)
    events.fired_shooter = shooters.astype(np.int64)
    events.fired_projectile = slots.astype(np.int64)
    return int(slots.size)


def _fire_hitscan(world: World, shooters: np.ndarray, inputs: Inputs, t: int,
                  events: StepEvents) -> int:
    """Trace the rays of ``shooters`` (live players) that want to and may fire, each at
    the view it claimed (``sim.hitscan``). Stores them in ``events.hitscan``; the damage
    is applied after the projectile hits. Returns the number of shots."""
    p = world.params
    ready = inputs.fire[shooters] & (world.next_fire_tick[shooters] <= t)
    shooters = shooters[ready]
    if shooters.size == 0:
        return 0
    history = world.history
    now = t + 1
    history.stage(world)
    cap = F32(p.max_rewind_ms * p.tick_rate / 1000.0)
    limit = np.minimum(inputs.rewind_limit[shooters], cap)
    views: Views = resolve_views(now, inputs.view_a[shooters], inputs.view_b[shooters],
                                 inputs.view_blend[shooters], limit, history.oldest)
    aim = world.aim[shooters].astype(np.float64)
    direction = np.stack([np.cos(aim), np.sin(aim)], axis=1).astype(np.float32)
    origin = world.pos[shooters]
    rays: RayHits = trace(history, now, shooters, origin, direction, p.weapon_range, views)
    world.next_fire_tick[shooters] = t + p.ticks(p.weapon_cooldown_s)
    world.flags[shooters] |= np.uint8(FLAG_FIRED)
    events.hitscan = HitscanShots(
        shooter=shooters.astype(np.int64), target=rays.target, start=origin, end=rays.end,
        view_a=views.a, view_b=views.b, view_blend=views.beta, depth_ticks=views.depth,
        clamped=views.clamped)
    return int(shooters.size)


def _apply_hitscan(world: World, shots: HitscanShots, t: int, events: StepEvents) -> None:
    hit = shots.target >= 0
    if not hit.any():
        return
    shooters, targets = shots.shooter[hit], shots.target[hit]
    # A target a projectile killed earlier in this tick takes no more damage.
    live = (world.flags[targets] & FLAG_DEAD) == 0
    shooters, targets = shooters[live], targets[live]
    events.hits_shooter = np.concatenate([events.hits_shooter, shooters])
    events.hits_target = np.concatenate([events.hits_target, targets])
    if targets.size:
        _damage(world, shooters, targets, shooters, int(world.params.weapon_damage), t, events)


def _target_radius(world: World, slots: np.ndarray) -> np.ndarray:
    p = world.params
    return np.where(
        world.kind[slots] == KIND_PLAYER, F32(p.player_radius), F32(p.npc_radius)
    ).astype(np.float32)


def find_hits(world: World) -> tuple[np.ndarray, np.ndarray]:
    """(projectile slots ascending, target slot hit by each): for every live projectile the
    lowest-slot collidable target within reach (see phase 6 of the module docstring).
    Pure: reads the world, changes nothing."""
    p = world.params
    kind = world.kind  # KIND_EMPTY exactly in free slots, so no need to consult `alive`
    proj = np.flatnonzero(kind == KIND_PROJECTILE)
    if proj.size == 0:
        return _EMPTY, _EMPTY
    collidable = (kind == KIND_PLAYER) | (kind == KIND_NPC)
    collidable &= (world.flags & FLAG_DEAD) == 0
    tgt = np.flatnonzero(collidable)
    if tgt.size == 0:
        return _EMPTY, _EMPTY

    # 1% above the largest radius sum: float32 rounding of the distance test and of the
    # cell computation can move a pair a hair, and a hit pair must stay in adjacent cells.
    # Cells may be larger (never smaller) than that: cap the grid at ~2**18 cells so the
    # per-tick occupancy tables stay small in a big world with tiny radii.
    cell = 1.01 * (max(p.player_radius, p.npc_radius) + p.projectile_radius)
    cell = max(cell, math.sqrt(p.world_width * p.world_height / 2**18))
    inv_cell = F32(1.0 / cell)
    gx = int(p.world_width // cell) + 1
    gy = int(p.world_height // cell) + 1
    # One empty cell of padding on every side: the 3x3 neighbourhood of any cell is then a
    # constant set of key offsets and never needs a bounds check.
    stride = gx + 2
    n_cells = stride * (gy + 2)

    def key_of(slots: np.ndarray) -> np.ndarray:
        pos = world.pos.take(slots, axis=0)
        c = (pos * inv_cell).astype(np.int64)  # truncation: monotonic, like floor for p >= 0
        cx = np.minimum(np.maximum(c[:, 0], 0), gx - 1)
        cy = np.minimum(np.maximum(c[:, 1], 0), gy - 1)
        return (cy + 1) * stride + (cx + 1)

    tkey = key_of(tgt)
    neighbours = _DY * stride + _DX
    qkey = (key_of(proj)[:, None] + neighbours).ravel()

    # Keep only queries of occupied cells and targets in queried cells: with sparse
    # projectiles both shrink ~10x, which makes the sort and the lookups cheap.
    occupied = np.zeros(n_cells, dtype=np.bool_)
    occupied[tkey] = True
    useful = np.flatnonzero(occupied[qkey])
    if useful.size == 0:
        return _EMPTY, _EMPTY
    qkey = qkey[useful]
    qproj = proj[useful // 9]
    queried = np.zeros(n_cells, dtype=np.bool_)
    queried[qkey] = True
    near = queried[tkey]
    tkey, tgt = tkey[near], tgt[near]
    # Order within a cell does not matter (the lowest slot is picked below), so the faster
    # unstable sort is fine and still deterministic.
    order = np.argsort(tkey)
    sorted_key, sorted_tgt = tkey[order], tgt[order]
    # Runs of equal keys = the targets of one cell. A dense cell -> run table replaces a
    # binary search per query; it is only read at cells that are both occupied and queried,
    # which are exactly the cells written, so np.empty's garbage is never seen.
    first = np.ones(sorted_key.size, dtype=np.bool_)
    first[1:] = sorted_key[1:] != sorted_key[:-1]
    run_start = np.flatnonzero(first)
    run_len = np.diff(np.append(run_start, sorted_key.size))
    run_of_cell = np.empty(n_cells, dtype=np.int64)
    run_of_cell[sorted_key[run_start]] = np.arange(run_start.size)
    run = run_of_cell[qkey]
    lo = run_start[run]
    counts = run_len[run]
    total = int(counts.sum())

    # Expand (query, candidate) pairs without a loop: candidate j of query q sits at
    # sorted index lo[q] + j.
    ends = np.cumsum(counts)
    at = np.repeat(lo - (ends - counts), counts) + np.arange(total)
    cand_t = sorted_tgt[at]
    cand_p = np.repeat(qproj, counts)

    pp = world.pos.take(cand_p, axis=0)
    pt = world.pos.take(cand_t, axis=0)
    dx = pp[:, 0] - pt[:, 0]
    dy = pp[:, 1] - pt[:, 1]
    reach = F32(p.projectile_radius) + _target_radius(world, cand_t)
    hit = dx * dx + dy * dy <= reach * reach
    hit &= cand_t != world.owner[cand_p]
    cand_p, cand_t = cand_p[hit], cand_t[hit]
    if cand_p.size == 0:
        return _EMPTY, _EMPTY
    order = np.argsort(cand_p * world.capacity + cand_t)
    cand_p, cand_t = cand_p[order], cand_t[order]
    first = np.ones(cand_p.size, dtype=np.bool_)
    first[1:] = cand_p[1:] != cand_p[:-1]
    return cand_p[first], cand_t[first]


def _apply_hits(
    world: World, proj: np.ndarray, tgt: np.ndarray, t: int, events: StepEvents
) -> None:
    shooters = world.owner[proj].astype(np.int64)
    events.hits_shooter = shooters
    events.hits_target = tgt
    world._free(proj)
    _damage(world, shooters, tgt, proj, int(world.params.projectile_damage), t, events)


def _damage(world: World, shooters: np.ndarray, tgt: np.ndarray, rank_by: np.ndarray,
            dmg: int, t: int, events: StepEvents) -> None:
    """``dmg`` hp per hit on ``tgt``; several hits on one target apply in ``rank_by``
    order and the one that takes hp to <= 0 gets the kill (appended to the events)."""
    p = world.params
    # Group hits by target, `rank_by` order within a group.
    order = np.argsort(tgt * world.capacity + rank_by)
    tgt_s, shooter_s = tgt[order], shooters[order]
    first = np.ones(tgt_s.size, dtype=np.bool_)
    first[1:] = tgt_s[1:] != tgt_s[:-1]
    starts = np.flatnonzero(first)
    rank = np.arange(tgt_s.size) - starts[np.cumsum(first) - 1]
    hp_before = world.hp[tgt_s].astype(np.int64)
    hp_after = hp_before - dmg * (rank + 1)
    killing = (hp_after <= 0) & (hp_after + dmg > 0)

    victims = tgt_s[starts]
    n_hits = np.diff(np.append(starts, tgt_s.size))
    new_hp = np.maximum(world.hp[victims].astype(np.int64) - dmg * n_hits, 0)
    world.hp[victims] = new_hp.astype(np.int32)

    killed = tgt_s[killing]
    if killed.size == 0:
        return
    killers = shooter_s[killing]
    events.kills_victim = np.concatenate([events.kills_victim, killed])
    events.kills_killer = np.concatenate([events.kills_killer, killers])
    is_player = world.kind[killed] == KIND_PLAYER
    delay = np.where(is_player, p.ticks(p.respawn_delay_s), p.ticks(p.npc_respawn_delay_s))
    world.flags[killed] |= np.uint8(FLAG_DEAD)
    world.hp[killed] = 0
    world.vel[killed] = F32(0.0)
    world.deaths[killed] += 1
    world.respawn_tick[killed] = t + delay
    credited = killers[killers >= 0]
    credited = credited[world.kind[credited] == KIND_PLAYER]
    np.add.at(world.score, credited, p.kill_score)


def _respawn(world: World, slots: np.ndarray) -> None:
    p = world.params
    is_player = world.kind[slots] == KIND_PLAYER
    players, npcs = slots[is_player], slots[~is_player]
    world.flags[slots] &= np.uint8(0xFF ^ FLAG_DEAD)
    if players.size:
        world.pos[players] = world._random_points(players.size, p.player_radius)
        world.vel[players] = F32(0.0)
        world.hp[players] = p.player_hp
    if npcs.size:
        world.pos[npcs] = world._random_points(npcs.size, 0.0)
        world.vel[npcs] = world._random_velocities(npcs.size, p.npc_speed)
        world.hp[npcs] = p.npc_hp
