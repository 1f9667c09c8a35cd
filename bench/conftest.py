"""Shared fixtures of the codec and room benchmarks."""

from __future__ import annotations

from pathlib import Path

import pytest

from sim.params import Params, load_params

ARENA = Path(__file__).resolve().parent / "scenarios" / "arena.toml"


@pytest.fixture(scope="session")
def arena_params() -> Params:
    """The peer-comparison scenario (E = 1000 NPCs at 50 units/s in a 1000×1000 world, no
    shooting). Falls back to the same values on the defaults if the scenario file is absent,
    so the benchmarks never silently measure a different load."""
    if ARENA.exists():
        return load_params(ARENA)
    return load_params().with_changes(
        {
            "world.width": 1000.0,
            "world.height": 1000.0,
            "world.capacity": 2048,
            "room.max_players": 250,
            "npc.count": 1000,
            "npc.speed": 50.0,
            "npc.turn_interval_ticks": 60,
            "projectile.enabled": False,
            "projectile.max": 0,
            "player.accel": 100000.0,
            "player.friction": 0.0,
            "player.max_speed": 100.0,
        }
    )
