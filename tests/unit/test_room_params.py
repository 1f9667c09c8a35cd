"""Live parameters in the sans-I/O Room: applied at the next tick boundary, announced with a
Params frame to every seat, restart-only keys kept. Time is a plain float."""

from __future__ import annotations

import pytest

from proto import tickwire_pb2 as pb
from server.room import Room, merge_live_params
from sim.params import ParamsError, load_params


def frames_of(result, player_id: int) -> list[pb.ServerFrame]:
    (d,) = [d for d in result.deliveries if d.player_id == player_id]
    out = []
    for data in d.frames:
        f = pb.ServerFrame()
        f.ParseFromString(data)
        out.append(f)
    return out


def snapshot_of(result, player_id: int) -> pb.Snapshot:
    (d,) = [d for d in result.deliveries if d.player_id == player_id]
    f = pb.ServerFrame()
    f.ParseFromString(d.snapshot_shared + d.snapshot_personal)
    return f.snapshot


def test_set_params_applies_at_the_next_tick_and_announces_it_to_every_seat():
    room = Room("r", load_params(), now=0.0)
    room.join(1, "a", 0.0)
    room.join(2, "b", 0.0)
    room.tick(1 / 30)
    faster = room.params.with_changes({"player.max_speed": 300.0})

    assert room.set_params(faster, 0.05) == []
    assert room.params.player_max_speed == 220.0  # nothing changes between ticks
    result = room.tick(2 / 30)

    assert room.params.player_max_speed == 300.0
    assert room.world.params.player_max_speed == 300.0
    assert room.params_version == 2
    for player_id in (1, 2):
        (params_frame,) = [f for f in frames_of(result, player_id)
                           if f.WhichOneof("kind") == "params"]
        assert params_frame.params.version == 2
        assert params_frame.params.params.player_max_speed == pytest.approx(300.0)
        assert snapshot_of(result, player_id).params_version == 2


def test_set_params_keeps_restart_only_keys_and_names_them():
    room = Room("r", load_params(), now=0.0)
    new = room.params.with_changes({"world.tick_rate": 60, "npc.speed": 80.0})

    assert room.set_params(new, 0.0) == ["world.tick_rate"]
    room.tick(1 / 30)

    assert room.params.tick_rate == 30
    assert room.params.npc_speed == 80.0


def test_set_params_with_an_explicit_version_adopts_it():
    room = Room("r", load_params(), now=0.0, params_version=5)
    room.set_params(room.params.with_changes({"player.hp": 90}), 0.0, version=9)
    room.tick(1 / 30)
    assert room.params_version == 9


def test_a_second_change_before_the_tick_replaces_the_first():
    room = Room("r", load_params(), now=0.0)
    room.set_params(room.params.with_changes({"player.hp": 90}), 0.0)
    room.set_params(room.params.with_changes({"player.hp": 80}), 0.0)
    room.tick(1 / 30)
    assert room.params.player_hp == 80
    assert room.params_version == 2


def test_merge_live_params_refuses_a_live_change_the_running_capacity_cannot_hold():
    running = load_params().with_changes({"world.capacity": 400, "projectile.max": 100})
    wants = running.with_changes({"world.capacity": 8000, "projectile.max": 4000})
    with pytest.raises(ParamsError, match="capacity"):
        merge_live_params(running, wants)
