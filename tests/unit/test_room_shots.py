"""The room's side of shots: view claims on the wire, the RTT-based limit, Shots frames
(hitscan tracers and hit markers for everyone, own projectile shots by seq), and the
rewind statistics for /rooms and /metrics. Plain calls with a manual clock."""

from __future__ import annotations

import math

import numpy as np
import pytest

from proto import tickwire_pb2 as pb
from server.metrics import Metrics, parse_metrics
from server.room import Room, TickResult
from sim.params import load_params

RATE = 30


def _room(defer: bool = False, **changes: object) -> Room:
    base: dict[str, object] = dict(npc_count=0, player_accel=100000.0,
                                   player_max_speed=600.0, weapon_kind="hitscan",
                                   weapon_range=2000.0, tick_rate=RATE)
    base.update(changes)
    return Room("shots", load_params().with_changes(base), now=0.0,
                defer_input_checks=defer)


def _tick(room: Room) -> TickResult:
    return room.tick((room.tick_number + 1) / RATE)


def _shots(result: TickResult, player_id: int) -> list[pb.Shots]:
    (d,) = [d for d in result.deliveries if d.player_id == player_id]
    out = []
    for raw in d.frames:
        f = pb.ServerFrame.FromString(raw)
        if f.WhichOneof("kind") == "shots":
            out.append(f.shots)
    return out


class Duel:
    """Seat 1 stands at (100, 500); seat 2 walks up x = 500 at 20 units/tick. Both send
    one command per tick; ``seen[tick]`` is seat 2's position in the snapshot of ``tick``."""

    def __init__(self, defer: bool = False, **changes: object) -> None:
        self.room = _room(defer, **changes)
        self.a = self.room.join(1, "shooter", 0.0)
        self.b = self.room.join(2, "target", 0.0)
        w = self.room.world
        w.pos[self.a.entity] = (100.0, 500.0)
        w.pos[self.b.entity] = (500.0, 100.0)
        self.seq = 0
        self.seen: dict[int, np.ndarray] = {}
        for _ in range(20):
            self.tick()

    def tick(self, shot: pb.InputCmd | None = None) -> TickResult:
        self.seq += 1
        room = self.room
        room.submit(1, pb.Input(cmds=[shot if shot is not None else pb.InputCmd(seq=self.seq)]))
        room.submit(2, pb.Input(cmds=[pb.InputCmd(seq=self.seq, move_y=1.0)]))
        result = _tick(room)
        self.seen[room.tick_number] = room.world.pos[self.b.entity].copy()
        return result

    def fire_at(self, a: int, b: int, beta: float, *, claim=None) -> TickResult:
        """Aim at where seat 2 was drawn at (a, b, beta); claim ``claim`` (default: the same)."""
        seen = self.seen[a] + (self.seen[b] - self.seen[a]) * np.float32(beta)
        here = self.room.world.pos[self.a.entity]
        aim = math.atan2(float(seen[1] - here[1]), float(seen[0] - here[0]))
        va, vb, vbeta = claim or (a, b, beta)
        return self.tick(pb.InputCmd(seq=self.seq + 1, aim=aim, buttons=1, view_tick=va,
                                     view_next_tick=vb, view_blend=vbeta))


@pytest.mark.parametrize("defer", [False, True], ids=["checked-at-once", "checked-per-tick"])
def test_a_shot_claiming_a_150_ms_old_view_hits_and_everyone_gets_the_tracer(defer):
    duel = Duel(defer)
    duel.room.set_rtt(1, 100.0)
    now = duel.room.tick_number + 1
    result = duel.fire_at(now - 5, now - 4, 0.5)
    (mine,) = _shots(result, 1)
    (shot,) = mine.shots
    assert shot.target == duel.b.entity and shot.shooter == duel.a.entity
    assert shot.seq == duel.seq and shot.projectile == 0
    assert shot.rewind_ms == pytest.approx(150.0, abs=0.01) and not shot.clamped
    assert (shot.x0, shot.y0) == (100.0, 500.0) and shot.x1 == pytest.approx(488.0, abs=1.0)
    assert _shots(result, 2)[0].shots[0].target == duel.b.entity
    assert duel.room.world.hp[duel.b.entity] == duel.room.params.player_hp - 20
    s = duel.room.shot_stats.summary()
    assert s["shots"] == 1 and s["hits"] == 1 and s["clamped"] == 0
    assert s["rewind_ms_le"]["100"] == 0 and s["rewind_ms_le"]["150"] == 1


def test_a_claim_deeper_than_the_seats_rtt_allows_is_clamped_by_the_estimate():
    duel = Duel(max_rewind_ms=1000.0)
    duel.room.set_rtt(1, 0.0)  # allowance: 100 ms + 4 ticks + 1 queued = 8 ticks
    now = duel.room.tick_number + 1
    (shot,) = _shots(duel.fire_at(now - 9, now - 8, 0.0), 1)[0].shots
    assert shot.clamped and shot.target == -1
    assert shot.rewind_ms == pytest.approx(8 * 1000 / RATE, abs=0.01)
    s = duel.room.shot_stats.summary()
    assert s["clamped"] == 1 and s["clamped_by_estimate"] == 1 and s["clamped_share"] == 1.0

    # The same claim from a seat whose RTT explains it is honoured.
    for _ in range(10):
        duel.tick()
    duel.room.set_rtt(1, 200.0)
    now = duel.room.tick_number + 1
    (shot,) = _shots(duel.fire_at(now - 9, now - 8, 0.0), 1)[0].shots
    assert not shot.clamped and shot.target == duel.b.entity


def test_the_cap_clamps_whatever_the_rtt():
    duel = Duel(max_rewind_ms=100.0)
    duel.room.set_rtt(1, 400.0)
    now = duel.room.tick_number + 1
    (shot,) = _shots(duel.fire_at(now - 5, now - 4, 0.5), 1)[0].shots
    assert shot.clamped and shot.target == -1 and shot.rewind_ms == pytest.approx(100.0)
    s = duel.room.shot_stats.summary()
    assert s["clamped"] == 1 and s["clamped_by_estimate"] == 0


@pytest.mark.parametrize("view", [(10, 9, 0.5), (0, 9, 0.5), (9, 10, 1.5),
                                  (9, 10, float("nan"))])
@pytest.mark.parametrize("defer", [False, True], ids=["checked-at-once", "checked-per-tick"])
def test_a_malformed_view_claim_rejects_the_command_and_is_counted(view, defer):
    room = _room(defer)
    room.join(1, "x", 0.0)
    a, b, beta = view
    reasons = room.submit(1, pb.Input(cmds=[pb.InputCmd(
        seq=1, buttons=1, view_tick=a, view_next_tick=b, view_blend=beta)]))
    if defer:
        assert reasons == []
        assert _tick(room).input_rejections == [(1, "bad_view", 1)]
    else:
        assert reasons == ["bad_view"]
    assert room.inputs_rejected["bad_view"] == 1
    assert room.queued_commands(1) == []


def test_own_projectile_shots_name_the_projectile_and_go_to_the_owner_only():
    duel = Duel(weapon_kind="projectile")
    result = duel.tick(pb.InputCmd(seq=duel.seq + 1, aim=0.0, buttons=1))
    (mine,) = _shots(result, 1)
    (shot,) = mine.shots
    slot = shot.projectile - 1
    w = duel.room.world
    assert shot.seq == duel.seq and shot.shooter == duel.a.entity
    assert w.kind[slot] == 3 and w.owner[slot] == duel.a.entity
    assert shot.projectile_gen == w.gen[slot]
    assert _shots(result, 2) == []


def test_a_shot_refused_by_the_cooldown_sends_no_shot():
    duel = Duel()
    now = duel.room.tick_number + 1
    assert _shots(duel.fire_at(now - 5, now - 4, 0.5), 1)
    now = duel.room.tick_number + 1
    assert _shots(duel.fire_at(now - 5, now - 4, 0.5), 1) == []  # cooldown: 8 ticks


def test_shot_stats_move_into_prometheus_once():
    duel = Duel()
    now = duel.room.tick_number + 1
    duel.fire_at(now - 5, now - 4, 0.5)
    m = Metrics()
    mt = (m.hitscan_rewind, m.hitscan_shots, m.hitscan_clamped, m.hitscan_hits)
    duel.room.shot_stats.export(*mt)
    duel.room.shot_stats.export(*mt)
    values = parse_metrics(m.render()[0].decode())
    assert values["tickwire_hitscan_shots_total"] == 1
    assert values["tickwire_hitscan_hits_total"] == 1
    assert values["tickwire_hitscan_rewind_seconds_count"] == 1
    assert values['tickwire_hitscan_rewind_seconds_bucket{le="0.15"}'] == 1
    assert values['tickwire_hitscan_rewind_seconds_bucket{le="0.1"}'] == 0


def test_welcome_params_tell_the_weapon():
    room = _room(weapon_cooldown_s=0.5)
    mp = room.move_params()
    assert mp.weapon_kind == 1 and mp.weapon_range == 2000.0 and mp.fire_cooldown_s == 0.5
    assert _room(weapon_kind="projectile").move_params().weapon_kind == 0


@pytest.mark.parametrize("defer", [False, True], ids=["checked-at-once", "checked-per-tick"])
def test_the_first_firing_command_of_a_bunch_names_the_shot(defer):
    duel = Duel(defer)
    room = duel.room
    for _ in range(2):  # the shooter's commands are late: it earns budget for 3 steps
        duel.seq += 1
        room.submit(2, pb.Input(cmds=[pb.InputCmd(seq=duel.seq, move_y=1.0)]))
        _tick(room)
    now = room.tick_number + 1
    seq = duel.seq - 2
    # Three late commands arrive together; the 2nd and 3rd fire with different views.
    room.submit(1, pb.Input(cmds=[
        pb.InputCmd(seq=seq + 1),
        pb.InputCmd(seq=seq + 2, buttons=1, view_tick=now - 5, view_next_tick=now - 4,
                    view_blend=0.5),
        pb.InputCmd(seq=seq + 3, buttons=1, view_tick=now - 2, view_next_tick=now - 1,
                    view_blend=0.0)]))
    room.submit(2, pb.Input(cmds=[pb.InputCmd(seq=duel.seq + 1, move_y=1.0)]))
    (shot,) = _shots(_tick(room), 1)[0].shots
    assert shot.seq == seq + 2
    assert shot.rewind_ms == pytest.approx(4.5 * 1000 / RATE, abs=0.01)


def test_a_bunched_shot_flies_along_the_aim_of_the_command_that_fired():
    duel = Duel(weapon_kind="projectile")
    room = duel.room
    for _ in range(2):  # late commands: budget for 3 steps
        duel.seq += 1
        room.submit(2, pb.Input(cmds=[pb.InputCmd(seq=duel.seq, move_y=1.0)]))
        _tick(room)
    seq = duel.seq - 2
    room.submit(1, pb.Input(cmds=[
        pb.InputCmd(seq=seq + 1, aim=0.5),
        pb.InputCmd(seq=seq + 2, aim=1.0, buttons=1),
        pb.InputCmd(seq=seq + 3, aim=2.0)]))
    (shot,) = _shots(_tick(room), 1)[0].shots
    vel = room.world.vel[shot.projectile - 1]
    assert shot.seq == seq + 2
    assert math.atan2(float(vel[1]), float(vel[0])) == pytest.approx(1.0, abs=1e-6)
