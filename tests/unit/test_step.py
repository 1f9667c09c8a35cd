"""sim.step: determinism, NPC rule, player movement, firing, hits, kills, respawns, grid."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sim.params import Params, load_params
from sim.step import Inputs, find_hits, step
from sim.world import (
    FLAG_DEAD,
    FLAG_FIRED,
    KIND_NPC,
    KIND_PLAYER,
    KIND_PROJECTILE,
    World,
)

F32 = np.float32
ARENA = Path(__file__).resolve().parents[2] / "bench" / "scenarios" / "arena.toml"


def _params(**changes: object) -> Params:
    return Params().with_changes(changes)


def _scripted_inputs(world: World, players: np.ndarray, t: int) -> Inputs:
    """Deterministic inputs from the tick number only (not from any RNG under test)."""
    inputs = Inputs.empty(world.capacity)
    k = np.arange(players.size)
    angle = (t // 20 + k * 1.7).astype(np.float32)
    inputs.move[players, 0] = np.cos(angle)
    inputs.move[players, 1] = np.sin(angle)
    inputs.aim[players] = angle + np.float32(0.5)
    inputs.fire[players] = (t + k) % 3 == 0
    return inputs


def _run(params: Params, ticks: int) -> list[str]:
    w = World.create(params)
    players = np.array([w.add_player(i) for i in range(8)])
    hashes = []
    for t in range(ticks):
        step(w, _scripted_inputs(w, players, t))
        hashes.append(w.state_hash())
    return hashes


def test_same_seed_and_inputs_give_identical_states_every_tick() -> None:
    p = _params(
        npc_count=200,
        npc_hp=30,
        respawn_delay_s=0.5,
        npc_respawn_delay_s=0.5,
        world_width=400.0,
        world_height=400.0,
    )
    a = _run(p, 300)
    b = _run(p, 300)
    assert a == b
    c = _run(p.with_changes({"world.seed": 2}), 300)
    assert all(x != y for x, y in zip(a, c, strict=True))


def test_the_scripted_game_actually_exercises_hits_kills_and_respawns() -> None:
    p = _params(
        npc_count=200, npc_hp=30, npc_respawn_delay_s=0.5, world_width=400.0, world_height=400.0
    )
    w = World.create(p)
    players = np.array([w.add_player(i) for i in range(8)])
    totals = {"shots": 0, "hits": 0, "kills": 0, "respawned": 0}
    for t in range(300):
        e = step(w, _scripted_inputs(w, players, t))
        totals["shots"] += e.shots
        totals["hits"] += e.hits_target.size
        totals["kills"] += e.kills_victim.size
        totals["respawned"] += e.respawned.size
    assert all(v > 0 for v in totals.values()), totals
    assert w.score[players].sum() == totals["kills"]


def _npc_reference(
    pos: np.ndarray, vel: np.ndarray, size: tuple[float, float], dt: np.float32, ticks: int
) -> list[np.ndarray]:
    """The arena rule written out per NPC and per axis with float32 scalars."""
    pos, vel = pos.copy(), vel.copy()
    out = []
    for _ in range(ticks):
        for i in range(len(pos)):
            for axis in range(2):
                w = F32(size[axis])
                p = pos[i, axis] + vel[i, axis] * dt
                v = vel[i, axis]
                if p < F32(0.0):
                    p, v = -p, -v
                elif p > w:
                    p, v = F32(2.0) * w - p, -v
                pos[i, axis], vel[i, axis] = p, v
        out.append(pos.copy())
    return out


@pytest.mark.parametrize(("size", "speed"), [((1000.0, 1000.0), 50.0), ((100.0, 130.0), 1900.0)])
def test_npc_bounce_rule_is_bit_exact(size: tuple[float, float], speed: float) -> None:
    p = _params(
        npc_count=6,
        npc_speed=speed,
        npc_turn_interval_ticks=100000,
        world_width=size[0],
        world_height=size[1],
    )
    w = World.create(p)
    inputs = Inputs.empty(w.capacity)
    step(w, inputs)  # tick 0 is a turn tick; none follow in this test
    npcs = w.slots_of(KIND_NPC)
    expected = _npc_reference(w.pos[npcs], w.vel[npcs], size, F32(1 / 30), 400)
    bounced = 0
    for want in expected:
        before = w.vel[npcs].copy()
        step(w, inputs)
        bounced += int((np.sign(before) != np.sign(w.vel[npcs])).sum())
        np.testing.assert_array_equal(w.pos[npcs], want)
    assert bounced > 0


def test_npcs_turn_together_every_interval_at_npc_speed() -> None:
    p = _params(npc_count=30, npc_speed=40.0, npc_turn_interval_ticks=10)
    w = World.create(p)
    inputs = Inputs.empty(w.capacity)
    npcs = w.slots_of(KIND_NPC)
    for t in range(45):
        before = np.abs(w.vel[npcs])
        step(w, inputs)
        after = np.abs(w.vel[npcs])
        speed = np.hypot(after[:, 0].astype(float), after[:, 1].astype(float))
        np.testing.assert_allclose(speed, 40.0, rtol=1e-6)
        if t % 10 == 0:
            assert (np.abs(after - before) > 1e-3).any(axis=1).all(), t
        else:
            np.testing.assert_array_equal(after, before)


def _one_player_world(**changes: object) -> tuple[World, int]:
    w = World.create(_params(npc_count=0, **changes))
    slot = w.add_player(1)
    w.pos[slot] = (500.0, 500.0)
    return w, slot


def test_arena_player_moves_exactly_100_units_per_second() -> None:
    p = load_params(ARENA).with_changes({"npc.count": 0})
    w = World.create(p)
    slot = w.add_player(1)
    w.pos[slot] = (200.0, 200.0)
    inputs = Inputs.empty(w.capacity)
    inputs.move[slot] = (1.0, 0.0)
    x0 = float(w.pos[slot, 0])
    for _ in range(30):
        step(w, inputs)
        assert w.vel[slot, 0] == F32(100.0) and w.vel[slot, 1] == F32(0.0)
    assert float(w.pos[slot, 0]) - x0 == pytest.approx(100.0, abs=1e-3)
    assert w.pos[slot, 1] == F32(200.0)
    # Any direction, changed every tick: the velocity is the normalised input times 100.
    rng = np.random.default_rng(3)
    for _ in range(60):
        move = rng.normal(size=2).astype(np.float32) * F32(rng.uniform(0.01, 50))
        inputs.move[slot] = move
        step(w, inputs)
        length = np.sqrt(move[0] * move[0] + move[1] * move[1])
        unit = move / length if length > F32(1.0) else move
        np.testing.assert_array_equal(w.vel[slot], unit * F32(100.0))


def test_player_is_clamped_to_the_world_and_stops_on_the_wall() -> None:
    p = load_params(ARENA).with_changes({"npc.count": 0})
    w = World.create(p)
    slot = w.add_player(1)
    inputs = Inputs.empty(w.capacity)
    inputs.move[slot] = (-1.0, 1.0)
    for _ in range(400):
        step(w, inputs)
    assert w.pos[slot, 0] == F32(p.player_radius)
    assert w.pos[slot, 1] == F32(p.world_height) - F32(p.player_radius)
    assert (w.vel[slot] == 0).all()


def test_idle_player_glides_to_a_stop_with_friction() -> None:
    w, slot = _one_player_world()
    inputs = Inputs.empty(w.capacity)
    inputs.move[slot] = (1.0, 0.0)
    for _ in range(30):
        step(w, inputs)
    assert w.vel[slot, 0] == F32(w.params.player_max_speed)
    inputs.move[slot] = (0.0, 0.0)
    step(w, inputs)
    assert 0 < w.vel[slot, 0] < w.params.player_max_speed
    for _ in range(60):
        step(w, inputs)
    assert (w.vel[slot] == 0).all()


extreme = st.sampled_from(
    [0.0, 1e-30, -1e-30, 1.0, -1.0, 1e30, -1e30, 3.4e38, float("nan"), float("inf"), float("-inf")]
)
component = st.one_of(st.floats(-10, 10, width=32), extreme)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    accel=st.floats(1, 100000),
    max_speed=st.floats(1, 2000),
    friction=st.floats(0, 100),
    radius=st.floats(1, 100),
    moves=st.lists(st.tuples(component, component), min_size=1, max_size=40),
)
def test_players_never_exceed_max_speed_and_stay_in_bounds(
    accel: float,
    max_speed: float,
    friction: float,
    radius: float,
    moves: list[tuple[float, float]],
) -> None:
    w = World.create(
        _params(
            npc_count=0,
            player_accel=accel,
            player_max_speed=max_speed,
            player_friction=friction,
            player_radius=radius,
            world_width=300.0,
            world_height=250.0,
        )
    )
    slots = np.array([w.add_player(i) for i in range(3)])
    inputs = Inputs.empty(w.capacity)
    for move in moves:
        inputs.move[slots] = np.array(move, dtype=np.float32)
        step(w, inputs)
        v = w.vel[slots].astype(np.float64)
        assert np.isfinite(v).all()
        assert (np.hypot(v[:, 0], v[:, 1]) <= max_speed * (1 + 1e-6)).all()
        pos = w.pos[slots]
        assert (pos >= F32(radius)).all()
        assert (pos[:, 0] <= F32(300.0) - F32(radius)).all()
        assert (pos[:, 1] <= F32(250.0) - F32(radius)).all()


def test_firing_respects_the_cooldown() -> None:
    w, slot = _one_player_world(fire_cooldown_s=0.2)  # 6 ticks at 30 Hz
    inputs = Inputs.empty(w.capacity)
    inputs.fire[slot] = True
    fired_on = []
    for t in range(30):
        e = step(w, inputs)
        if e.shots:
            fired_on.append(t)
            assert w.flags[slot] & FLAG_FIRED
        else:
            assert not w.flags[slot] & FLAG_FIRED
    assert fired_on == [0, 6, 12, 18, 24]


def test_projectile_spawns_ahead_of_the_shooter_along_its_aim() -> None:
    w, slot = _one_player_world()
    inputs = Inputs.empty(w.capacity)
    inputs.fire[slot] = True
    inputs.aim[slot] = np.float32(np.pi / 2)
    step(w, inputs)
    (proj,) = w.slots_of(KIND_PROJECTILE)
    p = w.params
    np.testing.assert_allclose(
        w.pos[proj], (500.0, 500.0 + p.player_radius + p.projectile_radius), atol=1e-3
    )
    np.testing.assert_allclose(w.vel[proj], (0.0, p.projectile_speed), atol=1e-3)
    assert w.owner[proj] == slot
    assert w.expire_tick[proj] == p.ticks(p.projectile_lifetime_s)


def test_firing_respects_max_projectiles_and_favours_low_slots() -> None:
    w = World.create(_params(npc_count=0, max_projectiles=3, fire_cooldown_s=0.02))
    slots = np.array([w.add_player(i) for i in range(5)])
    inputs = Inputs.empty(w.capacity)
    inputs.fire[slots] = True
    inputs.aim[slots] = np.float32(-np.pi / 2)  # different aims keep them from hitting each other
    for _ in range(10):
        step(w, inputs)
        assert w.slots_of(KIND_PROJECTILE).size <= 3
    w2 = World.create(_params(npc_count=0, max_projectiles=3))
    s2 = np.array([w2.add_player(i) for i in range(5)])
    for i, s in enumerate(s2):
        w2.pos[s] = (100.0 + 150.0 * i, 500.0)
    inputs2 = Inputs.empty(w2.capacity)
    inputs2.fire[s2] = True
    e = step(w2, inputs2)
    assert e.shots == 3
    np.testing.assert_array_equal(np.sort(w2.owner[w2.slots_of(KIND_PROJECTILE)]), s2[:3])


def test_shooting_disabled_fires_nothing() -> None:
    w, slot = _one_player_world(shooting_enabled=False)
    inputs = Inputs.empty(w.capacity)
    inputs.fire[slot] = True
    assert step(w, inputs).shots == 0
    assert w.slots_of(KIND_PROJECTILE).size == 0


def test_projectiles_expire_after_their_lifetime() -> None:
    w, slot = _one_player_world(projectile_lifetime_s=0.1, projectile_speed=10.0)
    inputs = Inputs.empty(w.capacity)
    inputs.fire[slot] = True
    step(w, inputs)
    inputs.fire[slot] = False
    for _ in range(2):
        step(w, inputs)
        assert w.slots_of(KIND_PROJECTILE).size == 1
    step(w, inputs)  # lifetime 0.1 s = 3 ticks
    assert w.slots_of(KIND_PROJECTILE).size == 0


def test_shooting_an_npc_damages_kills_scores_and_it_respawns() -> None:
    p = _params(
        npc_count=1,
        npc_speed=0.0,
        npc_hp=50,
        projectile_damage=25,
        fire_cooldown_s=0.1,
        npc_respawn_delay_s=1.0,
        player_radius=10.0,
    )
    w = World.create(p)
    npc = 0
    w.pos[npc] = (500.0, 500.0)
    shooter = w.add_player(9)
    w.pos[shooter] = (400.0, 500.0)
    inputs = Inputs.empty(w.capacity)
    inputs.fire[shooter] = True  # aim 0 = +x, towards the NPC
    hits, kill_tick = [], None
    for _ in range(30):
        e = step(w, inputs)
        for s, t in zip(e.hits_shooter, e.hits_target, strict=True):
            hits.append((int(s), int(t)))
        if e.kills_victim.size:
            assert list(e.kills_victim) == [npc] and list(e.kills_killer) == [shooter]
            kill_tick = e.tick
            break
        if hits:
            assert w.hp[npc] == 50 - 25 * len(hits)
    assert hits == [(shooter, npc), (shooter, npc)]
    assert kill_tick is not None
    assert w.score[shooter] == 1 and w.deaths[npc] == 1
    assert w.flags[npc] & FLAG_DEAD and w.hp[npc] == 0 and w.alive[npc]
    assert w.respawn_tick[npc] == kill_tick + 30
    inputs.fire[shooter] = False
    # Dead: not collidable, not moving, until the respawn tick.
    while w.tick < kill_tick + 30:
        e = step(w, inputs)
        assert e.respawned.size == 0
        assert w.flags[npc] & FLAG_DEAD
    e = step(w, inputs)
    assert list(e.respawned) == [npc]
    assert not w.flags[npc] & FLAG_DEAD and w.hp[npc] == 50


def test_player_kill_credits_the_shooter_and_the_victim_respawns() -> None:
    p = _params(npc_count=0, player_hp=25, projectile_damage=25, respawn_delay_s=0.5)
    w = World.create(p)
    a, b = w.add_player(1), w.add_player(2)
    w.pos[a], w.pos[b] = (300.0, 300.0), (360.0, 300.0)
    inputs = Inputs.empty(w.capacity)
    inputs.fire[a] = True
    inputs.fire[b] = True
    inputs.aim[b] = np.float32(np.pi / 2)  # b shoots away, a shoots at b
    killed = None
    for _ in range(10):
        e = step(w, inputs)
        if e.kills_victim.size:
            killed = e.tick
            assert list(e.kills_victim) == [b] and list(e.kills_killer) == [a]
            break
    assert killed is not None and w.score[a] == 1 and w.deaths[b] == 1
    # While dead, b neither moves nor fires.
    inputs.fire[a] = False
    inputs.move[b] = (1.0, 0.0)
    pos_b = w.pos[b].copy()
    for _ in range(p.ticks(p.respawn_delay_s) - 1):
        e = step(w, inputs)
        assert e.shots == 0 and (w.pos[b] == pos_b).all()
    e = step(w, inputs)
    assert list(e.respawned) == [b] and w.hp[b] == 25


def test_a_projectile_never_hits_its_shooter() -> None:
    w, slot = _one_player_world(player_radius=50.0, projectile_speed=1.0)
    inputs = Inputs.empty(w.capacity)
    inputs.fire[slot] = True
    inputs.aim[slot] = np.float32(np.pi)
    for _ in range(5):
        e = step(w, inputs)
        assert e.hits_target.size == 0
    assert w.hp[slot] == w.params.player_hp


def test_simultaneous_hits_kill_once_and_credit_the_lowest_projectile_slot() -> None:
    p = _params(npc_count=1, npc_speed=0.0, npc_hp=40, projectile_damage=25)
    w = World.create(p)
    w.pos[0] = (500.0, 500.0)
    shooters = [w.add_player(i) for i in range(3)]
    for s, (x, y) in zip(shooters, [(475.0, 500.0), (525.0, 500.0), (500.0, 475.0)], strict=True):
        w.pos[s] = (x, y)
    inputs = Inputs.empty(w.capacity)
    inputs.fire[shooters] = True
    inputs.aim[shooters] = np.array([0.0, np.pi, np.pi / 2], dtype=np.float32)
    e = step(w, inputs)
    assert sorted(e.hits_target.tolist()) == [0, 0, 0]
    assert list(e.kills_victim) == [0]
    # Projectile slots follow shooter order, so the second projectile takes hp 40 → -10.
    assert list(e.kills_killer) == [shooters[1]]
    assert w.hp[0] == 0 and w.deaths[0] == 1
    assert w.slots_of(KIND_PROJECTILE).size == 0


def test_freed_projectile_slots_are_reused_with_a_new_generation() -> None:
    w, slot = _one_player_world(projectile_lifetime_s=0.05, fire_cooldown_s=0.1)
    inputs = Inputs.empty(w.capacity)
    inputs.fire[slot] = True
    step(w, inputs)
    (proj,) = w.slots_of(KIND_PROJECTILE)
    g = int(w.gen[proj])
    for _ in range(3):
        step(w, inputs)
    (again,) = w.slots_of(KIND_PROJECTILE)
    assert again == proj and w.gen[again] == g + 1


# -- the grid against brute force ---------------------------------------------------------


def _brute_force_hits(w: World) -> tuple[np.ndarray, np.ndarray]:
    p = w.params
    dead = (w.flags & FLAG_DEAD) != 0
    proj = np.flatnonzero(w.alive & (w.kind == KIND_PROJECTILE))
    tgt = np.flatnonzero(w.alive & ((w.kind == KIND_PLAYER) | (w.kind == KIND_NPC)) & ~dead)
    out_p, out_t = [], []
    for i in proj:
        for j in tgt:  # ascending: the first hit is the lowest slot
            if j == w.owner[i]:
                continue
            dx = w.pos[i, 0] - w.pos[j, 0]
            dy = w.pos[i, 1] - w.pos[j, 1]
            r = F32(p.projectile_radius) + F32(
                p.player_radius if w.kind[j] == KIND_PLAYER else p.npc_radius
            )
            if dx * dx + dy * dy <= r * r:
                out_p.append(i)
                out_t.append(j)
                break
    return np.array(out_p, dtype=np.int64), np.array(out_t, dtype=np.int64)


@settings(max_examples=80, deadline=None)
@given(
    seed=st.integers(0, 2**32 - 1),
    size=st.sampled_from([100.0, 173.5, 1000.0, 4000.0]),
    radii=st.tuples(st.floats(1, 100), st.floats(1, 100), st.floats(0.5, 50)),
    n=st.tuples(st.integers(0, 60), st.integers(0, 60), st.integers(0, 80)),
    clustered=st.booleans(),
)
def test_grid_hits_equal_brute_force(
    seed: int,
    size: float,
    radii: tuple[float, float, float],
    n: tuple[int, int, int],
    clustered: bool,
) -> None:
    player_r, npc_r, proj_r = radii
    player_r = min(player_r, size / 2 - 1)
    n_players, n_npcs, n_proj = n
    p = _params(
        npc_count=0,
        world_width=size,
        world_height=size,
        player_radius=player_r,
        npc_radius=npc_r,
        projectile_radius=proj_r,
        max_players=100,
        capacity=400,
    )
    w = World.create(p)
    rng = np.random.default_rng(seed)
    total = n_players + n_npcs + n_proj
    slots = rng.permutation(p.capacity)[:total]
    kinds = np.repeat([KIND_PLAYER, KIND_NPC, KIND_PROJECTILE], [n_players, n_npcs, n_proj])
    w.alive[slots] = True
    w.kind[slots] = kinds
    if clustered:  # many entities in a few cells, on cell borders and on the walls
        choices = np.array([0.0, size, size / 2, size / 3, 1.0, size - 1.0], dtype=np.float32)
        w.pos[slots] = rng.choice(choices, size=(total, 2)) + rng.normal(
            0, 2 * proj_r, size=(total, 2)
        ).astype(np.float32)
        w.pos[slots] = np.clip(w.pos[slots], 0, size)
    else:
        w.pos[slots] = rng.uniform(0, size, size=(total, 2)).astype(np.float32)
    players = slots[kinds == KIND_PLAYER]
    shooters = players if players.size else np.array([-1])
    w.owner[slots[kinds == KIND_PROJECTILE]] = rng.choice(shooters, size=n_proj)
    w.flags[slots[kinds != KIND_PROJECTILE]] = np.where(
        rng.random(n_players + n_npcs) < 0.2, FLAG_DEAD, 0
    )
    got_p, got_t = find_hits(w)
    want_p, want_t = _brute_force_hits(w)
    np.testing.assert_array_equal(got_p, want_p)
    np.testing.assert_array_equal(got_t, want_t)


def _reference_move(params: Params, pos: np.ndarray, vel: np.ndarray, move: np.ndarray,
                    aim: np.float32, old_aim: np.float32, dt: np.float32
                    ) -> tuple[np.ndarray, np.ndarray, np.float32]:
    """``move_players``'s docstring rule for one player, in float32 scalars."""
    speed_cap, radius = F32(params.player_max_speed), F32(params.player_radius)
    accel_dt = F32(params.player_accel) * dt
    fric = F32(np.exp(-float(F32(params.player_friction)) * float(dt)))
    mx, my = F32(move[0]), F32(move[1])
    if not (np.isfinite(mx) and np.isfinite(my)):
        mx = my = F32(0.0)
    with np.errstate(over="ignore"):
        length = np.sqrt(mx * mx + my * my)
    if length > F32(1.0):
        mx, my = mx / length, my / length
    vx, vy = F32(vel[0]), F32(vel[1])
    reached = False
    if mx != 0 or my != 0:
        tx, ty = mx * speed_cap, my * speed_cap
        dx, dy = tx - vx, ty - vy
        dist = np.sqrt(dx * dx + dy * dy)
        if dist <= accel_dt:
            vx, vy, reached = tx, ty, True
        else:
            k = accel_dt / dist
            vx, vy = vx + dx * k, vy + dy * k
    else:
        vx, vy = vx * fric, vy * fric
        if np.sqrt(vx * vx + vy * vy) < F32(0.5):
            vx = vy = F32(0.0)
    if not reached:
        s = np.sqrt(vx * vx + vy * vy)
        if s > speed_cap:
            k = speed_cap / s
            vx, vy = vx * k, vy * k
    new_pos, new_vel = np.empty(2, np.float32), np.empty(2, np.float32)
    for axis, (p, v, size) in enumerate(((pos[0], vx, params.world_width),
                                         (pos[1], vy, params.world_height))):
        hi = F32(size) - radius
        p = F32(p) + v * dt
        if p < radius:
            p, v = radius, F32(0.0)
        if p > hi:
            p, v = hi, F32(0.0)
        new_pos[axis], new_vel[axis] = p, v
    return new_pos, new_vel, (aim if np.isfinite(aim) else old_aim)


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    accel=st.floats(1, 100000),
    max_speed=st.floats(1, 2000),
    friction=st.floats(0, 100),
    seed=st.integers(0, 2**32 - 1),
    moves=st.lists(st.tuples(component, component, component), min_size=1, max_size=6),
    slots_as=st.sampled_from(["array", "slice", "shuffled"]),
)
def test_move_players_equals_its_rule_player_by_player(
    accel: float, max_speed: float, friction: float, seed: int,
    moves: list[tuple[float, float, float]], slots_as: str,
) -> None:
    """The vectorised rule (both axes per NumPy call) against the docstring's rule run one
    player at a time in float32 scalars: the same bits, walls and NaN moves included, for
    slots given as an index array (in any order) and as a slice (the step's usual run)."""
    from sim.step import move_players

    params = _params(npc_count=0, player_accel=accel, player_max_speed=max_speed,
                     player_friction=friction, world_width=300.0, world_height=250.0)
    w = World.create(params)
    slots = np.array([w.add_player(i) for i in range(len(moves))])
    rng = np.random.default_rng(seed)
    w.vel[slots] = rng.uniform(-2.5 * max_speed, 2.5 * max_speed, (len(moves), 2))
    w.pos[slots[::2]] = rng.uniform(0.0, 300.0, (len(slots[::2]), 2))  # some near a wall
    inputs = Inputs.empty(w.capacity)
    inputs.move[slots] = np.array([m[:2] for m in moves], dtype=np.float32)
    inputs.aim[slots] = np.array([m[2] for m in moves], dtype=np.float32)
    dt = F32(1.0 / params.tick_rate)
    expected = [_reference_move(params, w.pos[s].copy(), w.vel[s].copy(), inputs.move[s],
                                inputs.aim[s], w.aim[s], dt) for s in slots]
    given = {"array": slots, "slice": slice(int(slots[0]), int(slots[-1]) + 1),
             "shuffled": rng.permutation(slots)}[slots_as]
    move_players(w, given, inputs, dt)
    for s, (pos, vel, aim) in zip(slots, expected, strict=True):
        assert w.pos[s].tobytes() == pos.tobytes()
        assert w.vel[s].tobytes() == vel.tobytes()
        assert w.aim[s].tobytes() == np.float32(aim).tobytes()
