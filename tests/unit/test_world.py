"""sim.world: creation, slots and generations, players, copies, hashes, live params."""

from __future__ import annotations

import numpy as np
import pytest

from sim.params import Params, ParamsError
from sim.step import Inputs, step
from sim.world import (
    KIND_EMPTY,
    KIND_NPC,
    KIND_PLAYER,
    KIND_PROJECTILE,
    World,
    WorldFullError,
)


def _params(**changes: object) -> Params:
    return Params().with_changes(changes)


def test_create_spawns_npcs_in_the_lowest_slots_with_speed_and_hp() -> None:
    p = _params(npc_count=50, npc_speed=70.0, npc_hp=33)
    w = World.create(p)
    assert w.capacity == p.capacity
    assert w.pos.shape == (p.capacity, 2) and w.pos.dtype == np.float32
    assert w.vel.dtype == np.float32 and w.hp.dtype == np.int32 and w.kind.dtype == np.uint8
    assert w.respawn_tick.dtype == np.int64 and w.gen.dtype == np.uint8
    npcs = w.slots_of(KIND_NPC)
    np.testing.assert_array_equal(npcs, np.arange(50))
    assert not w.alive[50:].any()
    assert (w.hp[npcs] == 33).all()
    assert (w.gen[npcs] == 1).all()
    assert (w.owner[npcs] == -1).all()
    assert ((w.pos[npcs] >= 0) & (w.pos[npcs] <= 1000)).all()
    speed = np.hypot(w.vel[npcs, 0].astype(float), w.vel[npcs, 1].astype(float))
    np.testing.assert_allclose(speed, 70.0, rtol=1e-6)
    assert w.tick == 0


def test_same_seed_same_world_different_seed_different_world() -> None:
    a, b = World.create(_params(seed=5)), World.create(_params(seed=5))
    c = World.create(_params(seed=6))
    assert a.state_hash() == b.state_hash()
    assert a.state_hash() != c.state_hash()


def test_add_player_takes_the_lowest_free_slot_inside_the_walls() -> None:
    p = _params(npc_count=3)
    w = World.create(p)
    slot = w.add_player(player_id=77)
    assert slot == 3
    assert w.kind[slot] == KIND_PLAYER and w.alive[slot]
    assert w.owner[slot] == 77 and w.hp[slot] == p.player_hp
    r = p.player_radius
    assert (w.pos[slot] >= r).all() and (w.pos[slot] <= 1000 - r).all()
    assert (w.vel[slot] == 0).all()
    assert w.add_player(78) == 4


def test_remove_player_frees_the_slot_and_reuse_bumps_gen() -> None:
    w = World.create(_params(npc_count=2))
    slot = w.add_player(1)
    w.add_player(2)
    gen = int(w.gen[slot])
    w.remove_player(slot)
    assert not w.alive[slot] and w.kind[slot] == KIND_EMPTY
    assert w.owner[slot] == -1 and w.hp[slot] == 0 and (w.pos[slot] == 0).all()
    again = w.add_player(3)
    assert again == slot
    assert w.gen[again] == gen + 1
    assert w.owner[again] == 3


def test_gen_wraps_at_256() -> None:
    w = World.create(_params(npc_count=0))
    for _ in range(256):
        w.remove_player(w.add_player(1))
    assert w.gen[0] == 0
    w.add_player(1)
    assert w.gen[0] == 1


def test_remove_player_rejects_a_slot_without_a_player() -> None:
    w = World.create(_params(npc_count=1))
    with pytest.raises(ValueError, match="slot 0 does not hold a player"):
        w.remove_player(0)
    with pytest.raises(ValueError):
        w.remove_player(10**6)


def test_remove_player_orphans_its_projectiles() -> None:
    w = World.create(_params(npc_count=0))
    shooter = w.add_player(1)
    inputs = Inputs.empty(w.capacity)
    inputs.fire[shooter] = True
    step(w, inputs)
    proj = w.slots_of(KIND_PROJECTILE)
    assert proj.size == 1 and w.owner[proj[0]] == shooter
    w.remove_player(shooter)
    assert w.owner[proj[0]] == -1
    assert w.alive[proj[0]]


def test_world_full_errors() -> None:
    w = World.create(_params(npc_count=0, max_players=2))
    w.add_player(1)
    w.add_player(2)
    with pytest.raises(WorldFullError, match="max_players"):
        w.add_player(3)
    w2 = World.create(_params(npc_count=0))
    w2.alive[:] = True  # every slot taken, e.g. by projectiles
    with pytest.raises(WorldFullError, match="slots"):
        w2.add_player(1)


def test_copy_is_independent_and_hashes_equal() -> None:
    w = World.create(_params(npc_count=10))
    w.add_player(1)
    c = w.copy()
    assert c.state_hash() == w.state_hash()
    step(c, Inputs.empty(c.capacity))
    assert c.state_hash() != w.state_hash()
    step(w, Inputs.empty(w.capacity))
    assert c.state_hash() == w.state_hash()


def test_state_hash_sees_every_array_and_the_rng() -> None:
    w = World.create(_params(npc_count=4))
    base = w.state_hash()
    for name in ("pos", "vel", "hp", "score", "flags", "next_fire_tick"):
        c = w.copy()
        getattr(c, name)[0] += 1
        assert c.state_hash() != base, name
    c = w.copy()
    c.rng.random()
    assert c.state_hash() != base


def test_set_params_applies_live_changes_and_refuses_restart_keys() -> None:
    p = _params(npc_count=20)
    w = World.create(p)
    slot = w.add_player(1)
    w.pos[slot] = (900.0, 900.0)
    w.set_params(p.with_changes({"world.width": 500.0, "world.height": 500.0}))
    assert w.params.world_width == 500.0
    r = np.float32(p.player_radius)
    assert (w.pos[slot] == np.float32(500.0) - r).all()
    assert (w.pos[w.slots_of(KIND_NPC)] <= 500.0).all()
    with pytest.raises(ParamsError, match=r"world.capacity.*restart"):
        w.set_params(w.params.with_changes({"world.capacity": 4096}))
