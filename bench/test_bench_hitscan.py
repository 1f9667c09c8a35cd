"""Lag-compensated hitscan: 200 shots against 1,000 entities (figures are data, not asserts).

Run: .venv/bin/pytest bench/test_bench_hitscan.py --benchmark-enable
"""

from __future__ import annotations

import numpy as np
from pytest_benchmark.fixture import BenchmarkFixture

from sim.hitscan import resolve_views, trace
from sim.params import Params
from sim.step import Inputs, step
from sim.world import KIND_PLAYER, World

SHOOTERS = 200
NPCS = 800  # + 200 players = 1,000 entities


def _world() -> tuple[World, np.ndarray, Inputs]:
    params = Params().with_changes({
        "world.capacity": 2048, "room.max_players": SHOOTERS, "npc.count": NPCS,
        "weapon.kind": "hitscan", "weapon.range": 600.0, "weapon.cooldown_s": 0.02,
        "player.respawn_delay_s": 0.5, "npc.respawn_delay_s": 0.5,
    })
    world = World.create(params)
    slots = np.array([world.add_player(i + 1) for i in range(SHOOTERS)])
    rng = np.random.default_rng(0)
    inputs = Inputs.empty(world.capacity)
    inputs.move[slots] = rng.uniform(-1, 1, (SHOOTERS, 2)).astype(np.float32)
    inputs.aim[slots] = rng.uniform(-np.pi, np.pi, SHOOTERS).astype(np.float32)
    for _ in range(40):  # a full history ring, everyone moving
        step(world, inputs)
    return world, slots, inputs


def test_bench_hitscan_trace_200_shots_1k_entities(benchmark: BenchmarkFixture) -> None:
    """One tick's worth of shots: every one of 200 players fires, each with its own view
    about 150 ms back (4 to 5 ticks, random blend), tested against all 1,000 entities."""
    world, slots, _inputs = _world()
    world.history.stage(world)
    now = world.tick + 1
    rng = np.random.default_rng(1)
    view_a = np.full(SHOOTERS, now - 5, dtype=np.int64)
    blend = rng.random(SHOOTERS).astype(np.float32)
    limit = np.full(SHOOTERS, 7.5, dtype=np.float32)
    aim = world.aim[slots].astype(np.float64)
    direction = np.stack([np.cos(aim), np.sin(aim)], axis=1).astype(np.float32)
    origin = world.pos[slots]

    def run():
        views = resolve_views(now, view_a, view_a + 1, blend, limit, world.history.oldest)
        return trace(world.history, now, slots, origin, direction, 600.0, views)

    hits = benchmark(run)
    benchmark.extra_info["shots"] = SHOOTERS
    benchmark.extra_info["entities"] = int(world.alive.sum())
    benchmark.extra_info["hits"] = int((hits.target >= 0).sum())
    if benchmark.stats is not None:
        benchmark.extra_info["us_per_shot"] = benchmark.stats.stats.mean * 1e6 / SHOOTERS


def test_bench_step_with_200_hitscan_shots(benchmark: BenchmarkFixture) -> None:
    """A whole step in which all 200 players fire (cooldown 1 tick), views 150 ms back;
    compare with `test_bench_step_without_shots` for the shots' share."""
    world, slots, inputs = _world()
    inputs.fire[slots] = True

    def run():
        inputs.view_a[slots] = world.tick - 4
        inputs.view_b[slots] = world.tick - 3
        inputs.view_blend[slots] = 0.5
        return step(world, inputs)

    events = benchmark(run)
    benchmark.extra_info["players"] = int((world.kind == KIND_PLAYER).sum())
    benchmark.extra_info["shots_last_tick"] = events.shots


def test_bench_step_without_shots(benchmark: BenchmarkFixture) -> None:
    world, _slots, inputs = _world()
    benchmark(step, world, inputs)
