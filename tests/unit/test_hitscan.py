"""Lag-compensated hitscan: the ray test, the view rules, and shots inside real steps."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sim.history import History
from sim.hitscan import cast_rays, resolve_views
from sim.params import Params, ParamsError
from sim.step import Inputs, step
from sim.world import FLAG_DEAD, KIND_PLAYER, World

F32 = np.float32
RATE = 30
SPEED = 600.0  # units/s: 20 units per tick, more than a player radius (12) per tick


# -- the ray test ------------------------------------------------------------------------


def _rays(origin, direction, centres, radii, max_dist=1000.0, eligible=None):
    origin = np.asarray(origin, dtype=np.float32).reshape(-1, 2)
    direction = np.asarray(direction, dtype=np.float32).reshape(-1, 2)
    centres = np.asarray(centres, dtype=np.float32).reshape(origin.shape[0], -1, 2)
    radii = np.asarray(radii, dtype=np.float32)
    if eligible is None:
        eligible = np.ones(centres.shape[:2], dtype=bool)
    return cast_rays(origin, direction, max_dist, centres, radii, eligible)


def test_the_nearest_circle_along_the_ray_wins():
    k, d = _rays([0, 0], [1, 0], [[300, 0], [100, 5], [200, 0]], [10, 10, 10])
    assert k.tolist() == [1]
    assert d[0] == pytest.approx(100 - math.sqrt(100 - 25), abs=1e-3)


def test_a_tie_goes_to_the_lower_slot_and_ineligible_circles_are_skipped():
    k, _ = _rays([0, 0], [1, 0], [[100, 0], [100, 0]], [10, 10])
    assert k.tolist() == [0]
    k, _ = _rays([0, 0], [1, 0], [[100, 0], [100, 0]], [10, 10],
                 eligible=np.array([[False, True]]))
    assert k.tolist() == [1]


def test_circles_behind_beside_or_beyond_range_are_missed():
    k, d = _rays([0, 0], [1, 0], [[-50, 0], [100, 10.5], [1011, 0]], [10, 10, 10])
    assert k.tolist() == [-1] and np.isinf(d[0])
    # Exactly at range: the entry point (1000) counts.
    k, _ = _rays([0, 0], [1, 0], [[1010, 0]], [10])
    assert k.tolist() == [0]


def test_a_ray_starting_inside_a_circle_hits_it_at_zero():
    k, d = _rays([0, 0], [1, 0], [[3, 0], [50, 0]], [10, 10])
    assert k.tolist() == [0] and d[0] == 0.0


@settings(max_examples=200, deadline=None)
@given(
    ox=st.floats(0, 1000), oy=st.floats(0, 1000), angle=st.floats(-math.pi, math.pi),
    along=st.floats(20, 900), side=st.floats(-1, 1), radius=st.floats(2, 40),
)
def test_a_circle_is_hit_exactly_when_the_ray_passes_within_its_radius(
        ox, oy, angle, along, side, radius):
    d = np.array([math.cos(angle), math.sin(angle)], dtype=np.float32)
    n = np.array([-d[1], d[0]])
    off = side * 2 * radius  # from -2r to 2r off the ray
    if abs(abs(off) - radius) < 1e-2 * radius:
        return  # too close to the edge for float32 to decide either way
    centre = np.array([ox, oy]) + d * along + n * off
    k, _ = _rays([ox, oy], d, [centre], [radius], max_dist=2000.0)
    assert (k[0] == 0) == (abs(off) < radius)


# -- the view rules ----------------------------------------------------------------------


def _views(now, a, b, beta, limit=np.inf, oldest=0):
    return resolve_views(now, np.array([a]), np.array([b]), np.array([beta], dtype=F32),
                         np.array([limit]), oldest)


def test_an_honest_claim_is_kept_as_drawn_even_across_a_skipped_snapshot():
    v = _views(100, 95, 97, 0.25)
    assert (v.a[0], v.b[0], v.beta[0]) == (95, 97, F32(0.25))
    assert v.depth[0] == pytest.approx(100 - 95.5) and not v.clamped[0]


@pytest.mark.parametrize("a,b,beta", [(0, 0, 0.0), (98, 97, 0.5), (98, 99, float("nan")),
                                      (101, 102, 0.5)])
def test_no_malformed_or_future_claim_rewinds(a, b, beta):
    v = _views(100, a, b, beta)
    assert v.depth[0] == 0.0 and not v.clamped[0]
    assert v.a[0] == 100 and v.b[0] == 100


def test_a_claim_deeper_than_the_limit_is_clamped_to_the_limit():
    v = _views(100, 80, 81, 0.0, limit=7.5)
    assert v.clamped[0] and v.depth[0] == pytest.approx(7.5)
    assert (v.a[0], v.b[0], v.beta[0]) == (92, 93, F32(0.5))
    v = _views(100, 80, 81, 0.0, limit=50, oldest=90)  # older than the history holds
    assert v.clamped[0] and (v.a[0], v.b[0]) == (90, 91)


# -- shots inside real steps ---------------------------------------------------------------


def _params(**over) -> Params:
    base = dict(npc_count=0, capacity=64, max_players=8, player_accel=100000.0,
                player_max_speed=SPEED, tick_rate=RATE, weapon_kind="hitscan",
                weapon_range=2000.0, respawn_delay_s=0.0, max_projectiles=16)
    base.update(over)
    return Params(**base)


class Arena:
    """A shooter standing still at (100, 500) and a target walking up x = 500 at 20
    units/tick; ``history`` of the target's recorded positions by tick."""

    def __init__(self, **over) -> None:
        self.world = World.create(_params(**over))
        self.shooter = self.world.add_player(1)
        self.target = self.world.add_player(2)
        self.world.pos[self.shooter] = (100.0, 500.0)
        self.world.pos[self.target] = (500.0, 100.0)
        self.inputs = Inputs.empty(self.world.capacity)
        self.inputs.active[:] = False
        self.inputs.active[[self.shooter, self.target]] = True
        self.inputs.move[self.target] = (0.0, 1.0)
        self.seen: dict[int, np.ndarray] = {}
        for _ in range(20):
            self.tick()

    def tick(self, *, fire: bool = False, aim: float = 0.0, view=(0, 0, 0.0)):
        inp = self.inputs
        inp.fire[self.shooter] = fire
        inp.aim[self.shooter] = aim
        inp.view_a[self.shooter], inp.view_b[self.shooter] = view[0], view[1]
        inp.view_blend[self.shooter] = view[2]
        events = step(self.world, inp)
        self.seen[self.world.tick] = self.world.pos[self.target].copy()
        return events

    def aim_at(self, a: int, b: int, beta: float) -> float:
        seen = self.seen[a] + (self.seen[b] - self.seen[a]) * F32(beta)
        here = self.world.pos[self.shooter]
        return math.atan2(float(seen[1] - here[1]), float(seen[0] - here[0]))

    def shoot(self, a: int, b: int, beta: float, *, aim_view=None):
        """Fire at where the target was drawn at view (a, b, beta) (or at aim_view)."""
        aim = self.aim_at(*(aim_view or (a, b, beta)))
        return self.tick(fire=True, aim=aim, view=(a, b, beta)).hitscan


def test_a_shot_at_where_the_target_was_drawn_150_ms_ago_hits():
    arena = Arena()
    now = arena.world.tick + 1
    # 150 ms at 30 Hz = 4.5 ticks: drawn halfway between now-5 and now-4.
    shots = arena.shoot(now - 5, now - 4, 0.5)
    assert shots.target.tolist() == [arena.target]
    assert shots.depth_ticks[0] == pytest.approx(4.5) and not shots.clamped[0]
    assert arena.world.hp[arena.target] == arena.world.params.player_hp - 20


def test_without_compensation_the_same_shot_misses():
    arena = Arena(max_rewind_ms=0.0)
    now = arena.world.tick + 1
    shots = arena.shoot(now - 5, now - 4, 0.5)
    assert shots.target.tolist() == [-1] and shots.clamped[0]
    assert arena.world.hp[arena.target] == arena.world.params.player_hp


def test_a_view_beyond_the_cap_is_clamped_and_misses():
    arena = Arena(max_rewind_ms=100.0)  # 3 ticks
    now = arena.world.tick + 1
    shots = arena.shoot(now - 5, now - 4, 0.5)
    assert shots.clamped[0] and shots.depth_ticks[0] == pytest.approx(3.0)
    assert shots.target.tolist() == [-1]


def test_the_rooms_own_limit_clamps_too():
    arena = Arena()
    arena.inputs.rewind_limit[arena.shooter] = 2.0
    now = arena.world.tick + 1
    shots = arena.shoot(now - 5, now - 4, 0.5)
    assert shots.clamped[0] and shots.depth_ticks[0] == pytest.approx(2.0)
    assert shots.target.tolist() == [-1]


def test_off_by_one_tick_the_target_at_t_is_not_the_target_at_t_minus_one():
    arena = Arena()
    t = arena.world.tick - 3
    # Aimed at the target as it was at tick t:
    assert arena.shoot(t, t + 1, 0.0).target.tolist() == [arena.target]
    for _ in range(10):  # cooldown
        arena.tick()
    t = arena.world.tick - 3
    miss_early = arena.shoot(t - 1, t, 0.0, aim_view=(t, t + 1, 0.0))
    assert miss_early.target.tolist() == [-1]  # claimed T-1, aimed at T
    for _ in range(10):
        arena.tick()
    t = arena.world.tick - 3
    miss_late = arena.shoot(t, t + 1, 1.0, aim_view=(t, t + 1, 0.0))
    assert miss_late.target.tolist() == [-1]  # claimed T+1 (blend 1), aimed at T


@pytest.mark.parametrize("beta", [0.0, 1.0])
def test_blend_edges_are_the_two_ticks_themselves(beta):
    arena = Arena()
    t = arena.world.tick - 4
    edge = (t, t, 0.0) if beta == 0.0 else (t + 1, t + 1, 0.0)
    shots = arena.shoot(t, t + 1, beta, aim_view=edge)
    assert shots.target.tolist() == [arena.target]
    assert shots.view_blend[0] == F32(beta)


def test_a_target_that_respawned_inside_the_window_is_not_hit_where_it_was():
    arena = Arena()
    w = arena.world
    seen_at = w.tick - 2
    # Killed and respawned since the shooter's view.
    w.flags[arena.target] |= FLAG_DEAD
    w.respawn_tick[arena.target] = w.tick + 1
    arena.tick()
    arena.tick()
    assert not w.flags[arena.target] & FLAG_DEAD
    shots = arena.shoot(seen_at, seen_at + 1, 0.0)
    assert shots.target.tolist() == [-1] and not shots.clamped[0]


def test_a_teleport_or_a_new_occupant_inside_the_window_breaks_the_rewind():
    arena = Arena()
    w = arena.world
    seen_at = w.tick - 1
    w.pos[arena.target] += (0.0, 300.0)  # a jump no movement explains
    arena.tick()
    assert arena.shoot(seen_at, seen_at + 1, 0.0).target.tolist() == [-1]

    arena = Arena()
    w = arena.world
    seen_at = w.tick - 1
    w.remove_player(arena.target)
    again = w.add_player(3)
    assert again == arena.target  # the same slot, a new generation
    w.pos[again] = arena.seen[seen_at]  # standing exactly where the old one was seen
    arena.seen[w.tick] = w.pos[again].copy()
    arena.tick()
    assert arena.shoot(seen_at, seen_at + 1, 0.0).target.tolist() == [-1]


def test_the_shooter_never_hits_itself_and_live_state_is_not_rewound():
    arena = Arena()
    w = arena.world
    twin = w.copy()
    now = w.tick + 1
    arena.shoot(now - 5, now - 4, 0.5)
    twin_inputs = Inputs.empty(twin.capacity)
    twin_inputs.active[:] = False
    twin_inputs.active[[arena.shooter, arena.target]] = True
    twin_inputs.move[arena.target] = (0.0, 1.0)
    twin_inputs.aim[arena.shooter] = w.aim[arena.shooter]
    step(twin, twin_inputs)
    assert np.array_equal(w.pos, twin.pos) and np.array_equal(w.vel, twin.vel)

    alone = World.create(_params())
    me = alone.add_player(1)
    inp = Inputs.empty(alone.capacity)
    inp.fire[me] = True
    shots = step(alone, inp).hitscan
    assert shots.target.tolist() == [-1]
    assert alone.hp[me] == alone.params.player_hp


def test_many_shooters_at_one_target_credit_the_kill_in_shooter_order():
    w = World.create(_params(player_hp=40))
    target = w.add_player(99)
    w.pos[target] = (500.0, 500.0)
    shooters = [w.add_player(i) for i in range(1, 4)]
    for i, s in enumerate(shooters):
        w.pos[s] = (100.0, 450.0 + 50 * i)
    w.history.record(w)
    inp = Inputs.empty(w.capacity)
    for s in shooters:
        inp.aim[s] = math.atan2(500.0 - w.pos[s][1], 500.0 - w.pos[s][0])
        inp.fire[s] = True
    e = step(w, inp)
    assert e.shots == 3 and e.hitscan.target.tolist() == [target] * 3
    assert list(e.kills_victim) == [target] and list(e.kills_killer) == [shooters[1]]
    assert w.score[shooters[1]] == 1 and w.kind[target] == KIND_PLAYER


def test_hitscan_runs_are_deterministic_and_copies_continue_identically():
    def run(world: World, rng: np.random.Generator, ticks: int) -> list:
        out = []
        players = world.slots_of(KIND_PLAYER)
        for _ in range(ticks):
            inp = Inputs.empty(world.capacity)
            inp.move[players] = rng.uniform(-1, 1, (players.size, 2)).astype(np.float32)
            inp.aim[players] = rng.uniform(-3, 3, players.size).astype(np.float32)
            inp.fire[players] = rng.random(players.size) < 0.5
            inp.view_a[players] = max(1, world.tick - 6)
            inp.view_b[players] = max(1, world.tick - 5)
            inp.view_blend[players] = rng.random(players.size).astype(np.float32)
            e = step(world, inp)
            h = e.hitscan
            out.append(None if h is None else (h.shooter.tolist(), h.target.tolist()))
        return out

    def fresh() -> World:
        w = World.create(_params(npc_count=20, capacity=64, max_players=16))
        for i in range(12):
            w.add_player(i + 1)
        return w

    a, b = fresh(), fresh()
    ra, rb = np.random.default_rng(5), np.random.default_rng(5)
    assert run(a, ra, 60) == run(b, rb, 60)
    assert a.state_hash() == b.state_hash()
    c = a.copy()
    rc = np.random.default_rng(9)
    ra = np.random.default_rng(9)
    assert run(a, ra, 30) == run(c, rc, 30)
    assert a.state_hash() == c.state_hash()
    assert any(r and any(t >= 0 for t in r[1]) for r in run(a, ra, 60))  # some hits happen


def test_history_holds_about_a_second_and_numbers_lives():
    w = World.create(_params())
    assert w.history.depth == RATE + 2
    for _ in range(100):
        step(w, Inputs.empty(w.capacity))
    assert w.history.newest == 100 and w.history.oldest == 100 - RATE - 1
    with pytest.raises(ValueError):
        History(8, 1)


def test_weapon_params_are_validated():
    with pytest.raises(ParamsError, match=r"weapon\.kind = 'laser' is not one of"):
        Params(weapon_kind="laser")
    with pytest.raises(ParamsError, match="expected str"):
        Params(weapon_kind=1)
    with pytest.raises(ParamsError, match=r"weapon\.max_rewind_ms"):
        Params(max_rewind_ms=1500.0)
    assert Params().weapon_kind == "projectile" and Params().max_rewind_ms == 250.0


def test_the_broad_pass_never_drops_a_hit_the_full_test_finds():
    from sim.hitscan import trace

    w = World.create(_params(npc_count=40, capacity=128, max_players=40, npc_speed=300.0))
    players = np.array([w.add_player(i + 1) for i in range(40)])
    rng = np.random.default_rng(3)
    inp = Inputs.empty(w.capacity)
    hits = 0
    for _ in range(60):
        inp.move[players] = rng.uniform(-1, 1, (40, 2)).astype(np.float32)
        step(w, inp)
        h = w.history
        now = w.tick + 1
        h.stage(w)
        a = now - rng.integers(0, 9, 40)
        views = resolve_views(now, a, a + 1, rng.random(40).astype(F32),
                              np.full(40, 7.5, dtype=F32), h.oldest)
        aim = rng.uniform(-np.pi, np.pi, 40)
        d = np.stack([np.cos(aim), np.sin(aim)], axis=1).astype(F32)
        o = w.pos[players]
        got = trace(h, now, players, o, d, 700.0, views)
        # The same shots by brute force: every shot against every slot, no broad pass.
        ra, rb, rn = h.rows(views.a), h.rows(views.b), now % h.depth
        centres = h.pos[ra] + (h.pos[rb] - h.pos[ra]) * views.beta[:, None, None]
        eligible = (h.collidable[rn][None, :] & h.collidable[ra] & h.collidable[rb]
                    & (h.life[ra] == h.life[rn][None, :]) & (h.life[rb] == h.life[rn][None, :])
                    & (np.arange(w.capacity)[None, :] != players[:, None]))
        want, _ = cast_rays(o, d, 700.0, centres, h.radius[ra], eligible)
        assert got.target.tolist() == want.tolist()
        hits += int((want >= 0).sum())
    assert hits > 100


def test_the_ring_is_recorded_only_for_hitscan_and_starts_over_after_a_gap():
    w = World.create(_params(weapon_kind="projectile"))
    shooter = w.add_player(1)
    for _ in range(10):
        step(w, Inputs.empty(w.capacity))
    assert w.history.newest == 0  # only the creation row: projectile worlds skip the ring
    for _ in range(40):  # a stale run of rows from an earlier hitscan period
        w.set_params(w.params.with_changes({"weapon.kind": "hitscan"}))
        step(w, Inputs.empty(w.capacity))
    w.set_params(w.params.with_changes({"weapon.kind": "projectile"}))
    for _ in range(20):
        step(w, Inputs.empty(w.capacity))
    w.set_params(w.params.with_changes({"weapon.kind": "hitscan"}))
    step(w, Inputs.empty(w.capacity))
    assert w.history.oldest == w.history.newest == w.tick  # the stale rows are not a run
    inp = Inputs.empty(w.capacity)
    inp.fire[shooter] = True
    inp.view_a[shooter], inp.view_b[shooter] = w.tick - 5, w.tick - 4
    shots = step(w, inp).hitscan
    assert shots.clamped[0] and shots.depth_ticks[0] == pytest.approx(1.0)


@settings(max_examples=300, deadline=None)
@given(now=st.integers(40, 10_000), a=st.integers(0, 12_000), span=st.integers(-3, 6),
       blend=st.floats(allow_nan=True, allow_infinity=True, width=32),
       limit=st.floats(0, 40), history=st.integers(1, 33))
def test_any_claim_resolves_to_rows_the_history_holds_within_the_limit(
        now, a, span, blend, limit, history):
    oldest = now - history + 1
    v = _views(now, a, a + span, blend, limit=limit, oldest=oldest)
    assert oldest <= v.a[0] <= v.b[0] <= now
    assert 0.0 <= v.beta[0] <= 1.0
    assert 0.0 <= v.depth[0] <= max(min(limit, now - oldest), 0.0) + 1e-9
    tau = v.a[0] + float(v.beta[0]) * (v.b[0] - v.a[0])
    assert tau == pytest.approx(now - v.depth[0], abs=1e-3)
