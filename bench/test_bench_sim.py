"""Benchmarks of one simulation step (pytest-benchmark; figures are data, not asserts).

Run: .venv/bin/pytest bench/test_bench_sim.py --benchmark-enable
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from pytest_benchmark.fixture import BenchmarkFixture

from sim.params import Params, load_params
from sim.step import Inputs, step
from sim.world import KIND_PLAYER, KIND_PROJECTILE, World

ARENA = Path(__file__).resolve().parent / "scenarios" / "arena.toml"


def _combat_world(players: int, npcs: int, projectiles: int, size: float) -> tuple[World, Inputs]:
    """A world in steady combat: every player steers and fires; ~``projectiles`` in flight."""
    params = Params().with_changes(
        {
            "world.width": size,
            "world.height": size,
            "world.capacity": 16384,
            "room.max_players": players,
            "npc.count": npcs,
            "projectile.max": projectiles,
            "projectile.cooldown_s": 0.1,
            "npc.respawn_delay_s": 0.5,
            "player.respawn_delay_s": 0.5,
        }
    )
    world = World.create(params)
    slots = np.array([world.add_player(i) for i in range(players)])
    rng = np.random.default_rng(0)
    inputs = Inputs.empty(world.capacity)
    inputs.move[slots] = rng.uniform(-1, 1, (players, 2)).astype(np.float32)
    inputs.aim[slots] = rng.uniform(-np.pi, np.pi, players).astype(np.float32)
    inputs.fire[slots] = True
    for _ in range(90):  # fill the projectile budget, reach steady state
        step(world, inputs)
    return world, inputs


@pytest.mark.parametrize(
    ("players", "npcs", "projectiles", "size"),
    [(100, 800, 100, 1000.0), (1000, 8000, 1000, 4000.0)],
    ids=["1k-entities", "10k-entities"],
)
def test_bench_step_combat(
    benchmark: BenchmarkFixture, players: int, npcs: int, projectiles: int, size: float
) -> None:
    world, inputs = _combat_world(players, npcs, projectiles, size)
    benchmark(step, world, inputs)
    in_flight = world.slots_of(KIND_PROJECTILE).size
    benchmark.extra_info["entities"] = int(world.alive.sum())
    benchmark.extra_info["projectiles_in_flight"] = int(in_flight)


@pytest.mark.parametrize("npcs", [100, 1000])
def test_bench_step_arena(benchmark: BenchmarkFixture, npcs: int) -> None:
    """The peer-comparison scenario: 200 players steering, E NPCs, no shooting."""
    params = load_params(ARENA).with_changes({"npc.count": npcs})
    world = World.create(params)
    slots = np.array([world.add_player(i) for i in range(200)])
    inputs = Inputs.empty(world.capacity)
    angle = np.random.default_rng(1).uniform(0, 2 * np.pi, slots.size)
    inputs.move[slots, 0] = np.cos(angle)
    inputs.move[slots, 1] = np.sin(angle)
    benchmark(step, world, inputs)
    benchmark.extra_info["entities"] = int((world.kind != 0).sum())
    assert (world.kind[slots] == KIND_PLAYER).all()
