"""Rules of the sans-I/O ``Room``: membership, input validation, the per-tick cap, resume,
and the snapshot stream as a client decodes it.

Time is an argument: every call takes ``now`` as a plain float (tick n happens at
``n / tick_rate``), nothing sleeps, and all randomness comes from seeded generators.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import pytest

from proto import PROTOCOL_VERSION, codec
from proto import tickwire_pb2 as pb
from server.room import (
    MAX_CMDS_PER_FRAME,
    MAX_SEQ_JUMP,
    Delivery,
    JoinRefused,
    Room,
    RoomFullError,
    TickResult,
    check_name,
)
from sim.params import Params, load_params
from sim.world import KIND_PROJECTILE

# -- helpers ------------------------------------------------------------------------------


def make_params(**changes: object) -> Params:
    """Default params with overrides given as Python field names (`npc_count=0`)."""
    return load_params().with_changes(changes)


def make_room(params: Params | None = None, *, deferred: bool = False) -> Room:
    """`deferred`: commands validated once per tick (``defer_input_checks``)."""
    return Room("test-room", params if params is not None else make_params(), now=0.0,
                defer_input_checks=deferred)


def cmd(
    seq: int, move_x: float = 0.0, move_y: float = 0.0, aim: float = 0.0, buttons: int = 0
) -> pb.InputCmd:
    return pb.InputCmd(seq=seq, move_x=move_x, move_y=move_y, aim=aim, buttons=buttons)


def frame(*cmds: pb.InputCmd, ack: int = 0) -> pb.Input:
    return pb.Input(ack_tick=ack, cmds=list(cmds))


def tick(room: Room) -> TickResult:
    """Run the room's next tick at its scheduled time (tick n at n / tick_rate s)."""
    return room.tick((room.tick_number + 1) / room.params.tick_rate)


def delivery_for(result: TickResult, player_id: int) -> Delivery:
    (found,) = [d for d in result.deliveries if d.player_id == player_id]
    return found


def snapshot_of(delivery: Delivery) -> pb.Snapshot:
    """The shared and personal parts parsed as one frame, as a client's parser sees them."""
    parsed = pb.ServerFrame.FromString(delivery.snapshot_shared + delivery.snapshot_personal)
    assert parsed.WhichOneof("kind") == "snapshot"
    return parsed.snapshot


def event_frames(delivery: Delivery) -> list[pb.ServerFrame]:
    return [pb.ServerFrame.FromString(raw) for raw in delivery.frames]


def kinds(delivery: Delivery) -> list[str]:
    return [f.WhichOneof("kind") for f in event_frames(delivery)]


def last_roster(result: TickResult, player_id: int) -> pb.Roster | None:
    rosters = [
        f.roster
        for f in event_frames(delivery_for(result, player_id))
        if f.WhichOneof("kind") == "roster"
    ]
    return rosters[-1] if rosters else None


def position(room: Room, player_id: int) -> np.ndarray:
    return room.world.pos[room.seats[player_id].entity].astype(np.float64)


@dataclass
class Mirror:
    """A client's side of the snapshot stream: every decoded snapshot kept by tick, each
    delta decoded against the snapshot of its baseline tick (proto/README.md, *Acks and
    baselines*)."""

    player_id: int
    max_lag: int | None  # None: this client never acknowledges anything
    states: dict[int, np.ndarray] = field(default_factory=dict)
    ticks: list[int] = field(default_factory=list)  # decoded ticks, in arrival order
    seq: int = 0

    def receive(self, delivery: Delivery) -> tuple[pb.Snapshot, np.ndarray]:
        snap = snapshot_of(delivery)
        assert delivery.keyframe == (snap.baseline_tick == 0) == codec.is_keyframe(snap.payload)
        baseline = self.states[snap.baseline_tick] if snap.baseline_tick else None
        state = codec.decode(snap.payload, baseline)
        self.states[snap.tick] = state
        self.ticks.append(snap.tick)
        return snap, state

    def ack(self, rng: np.random.Generator) -> int:
        """A tick this client decoded `lag` snapshots ago (0 when it never acks)."""
        if self.max_lag is None or not self.ticks:
            return 0
        lag = int(rng.integers(0, self.max_lag + 1))
        return self.ticks[max(0, len(self.ticks) - 1 - lag)]

    def next_cmd(self, rng: np.random.Generator) -> pb.InputCmd:
        self.seq += 1
        angle = rng.uniform(-math.pi, math.pi)
        moving = rng.random() < 0.8
        return cmd(
            self.seq,
            move_x=math.cos(angle) if moving else 0.0,
            move_y=math.sin(angle) if moving else 0.0,
            aim=angle,
            buttons=int(rng.random() < 0.3),
        )


# -- join and the first tick --------------------------------------------------------------


def test_a_joined_player_gets_welcome_then_roster_then_a_keyframe_snapshot():
    room = make_room()
    seat = room.join(7, "alice", now=0.0)

    result = tick(room)

    d = delivery_for(result, 7)
    assert kinds(d) == ["welcome", "roster"]
    welcome = event_frames(d)[0].welcome
    assert welcome.player_id == 7
    assert welcome.entity == seat.entity
    assert welcome.tick_rate == room.params.tick_rate
    assert welcome.protocol_version == PROTOCOL_VERSION
    assert welcome.params.player_max_speed == pytest.approx(room.params.player_max_speed)
    assert welcome.params.world_width == pytest.approx(room.params.world_width)
    assert len(welcome.resume_token) == 20
    assert welcome.resume_token == seat.resume_token

    assert d.keyframe
    snap = snapshot_of(d)
    assert snap.tick == result.tick == 1
    assert snap.baseline_tick == 0
    assert snap.last_input_seq == 0
    assert snap.rtt_ms == 0.0
    assert codec.states_equal(codec.decode(snap.payload, None), room.last_state)


def test_the_personal_part_carries_the_last_applied_seq_and_rtt_of_that_seat_only():
    room = make_room()
    room.join(1, "alice", now=0.0)
    room.join(2, "bob", now=0.0)
    tick(room)
    room.submit(1, frame(cmd(1), cmd(2), ack=1))
    room.set_rtt(1, 42.5)

    result = tick(room)

    alice, bob = snapshot_of(delivery_for(result, 1)), snapshot_of(delivery_for(result, 2))
    assert (alice.tick, alice.baseline_tick, alice.last_input_seq) == (2, 1, 2)
    assert alice.rtt_ms == pytest.approx(42.5)
    assert (bob.tick, bob.baseline_tick, bob.last_input_seq, bob.rtt_ms) == (2, 0, 0, 0.0)


@pytest.mark.parametrize("rows_in_a_run", [True, False])
def test_each_seat_gets_its_own_seq_and_rtt_whatever_order_its_row_has(rows_in_a_run):
    # Seats 1..4 take rows 0..3; after 2 leaves and 5 joins, row 1 is seat 5's, so the
    # seats in order (1, 3, 4, 5) have rows (0, 2, 3, 1): not one run. The personal parts
    # are then built from a gather, and from a slice of rows otherwise.
    room = make_room(deferred=True)
    for pid in (1, 2, 3, 4):
        room.join(pid, f"p{pid}", now=0.0)
    if not rows_in_a_run:
        room.leave(2)
        room.join(5, "p5", now=0.0)
    seats = sorted(room.seats)
    tick(room)
    for pid in seats:
        room.submit(pid, frame(*(cmd(s) for s in range(1, pid + 1)), ack=1))
        room.set_rtt(pid, 10.0 * pid)
    for _ in range(6):  # enough ticks for every seat to apply its commands
        result = tick(room)

    for pid in seats:
        snap = snapshot_of(delivery_for(result, pid))
        assert (snap.last_input_seq, snap.rtt_ms) == (pid, pytest.approx(10.0 * pid))
    assert isinstance(room._connected_run, slice) == rows_in_a_run


def test_event_frames_are_sent_once_and_the_roster_only_when_it_changed():
    room = make_room()
    room.join(1, "alice", now=0.0)
    tick(room)

    assert delivery_for(tick(room), 1).frames == []


# -- the client mirror law ----------------------------------------------------------------


@pytest.mark.parametrize("deferred", [False, True], ids=["checked-at-once", "deferred"])
def test_decoding_every_snapshot_against_its_baseline_equals_the_server_state_every_tick(
        deferred):
    """Many players moving and firing, acks lagging 0..10 ticks (some never ack), players
    joining, leaving, dropping and resuming: each client's decoded state is the server's.
    (Twelve seats acking up to eleven ticks also exercise the bound on baselines.)"""
    params = make_params(
        npc_count=60,
        max_players=12,
        respawn_delay_s=0.3,
        npc_respawn_delay_s=0.3,
        projectile_damage=40,
        fire_cooldown_s=0.1,
        world_width=400.0,
        world_height=400.0,
        resume_grace_s=2.0,
    )
    room = make_room(params, deferred=deferred)
    rng = np.random.default_rng(2024)
    clients: dict[int, Mirror] = {}
    dropped: set[int] = set()
    next_id = 1
    checked = keyframes = 0

    for _ in range(400):
        if room.has_free_seat() and (len(clients) < 4 or rng.random() < 0.06):
            lag = None if rng.random() < 0.2 else int(rng.integers(0, 11))
            room.join(next_id, f"p{next_id}", now=room.tick_number / params.tick_rate)
            clients[next_id] = Mirror(next_id, lag)
            next_id += 1
        if len(clients) > 2 and rng.random() < 0.03:
            gone = int(rng.choice(list(clients)))
            room.leave(gone)
            clients.pop(gone)
            dropped.discard(gone)
        if len(clients) > 2 and rng.random() < 0.04:
            pid = int(rng.choice(list(clients)))
            now = room.tick_number / params.tick_rate
            if pid in dropped:  # back within the grace period, on a "new socket"
                room.resume(room.find_by_token(room.seats[pid].resume_token), now=now)
                clients[pid].seq = 0
                dropped.discard(pid)
            else:
                room.disconnect(pid, now=now)
                dropped.add(pid)

        for pid, client in clients.items():
            if pid not in dropped:
                assert room.submit(pid, frame(client.next_cmd(rng), ack=client.ack(rng))) == []

        result = tick(room)
        assert result.input_rejections == []
        for pid in result.expired:  # dropped for longer than the grace period
            assert pid in dropped
            clients.pop(pid)
            dropped.discard(pid)

        assert {d.player_id for d in result.deliveries} == set(clients) - dropped
        for d in result.deliveries:
            snap, state = clients[d.player_id].receive(d)
            assert snap.tick == result.tick
            assert codec.states_equal(state, room.last_state), f"tick {snap.tick}"
            checked += 1
            keyframes += d.keyframe

    # The scenario really exercised deltas, keyframes and fire.
    assert checked > 1000
    assert keyframes < checked / 3
    assert room.world.gen.max() > 1  # slots were reused (projectiles, rejoins)


# -- acks and baselines -------------------------------------------------------------------


def test_after_acking_tick_t_the_next_snapshot_is_a_delta_against_t():
    room = make_room()
    room.join(1, "alice", now=0.0)
    for _ in range(5):
        tick(room)
    room.submit(1, frame(cmd(1, move_x=1.0), ack=3))

    d = delivery_for(tick(room), 1)

    snap = snapshot_of(d)
    assert (snap.tick, snap.baseline_tick) == (6, 3)
    assert not d.keyframe
    assert not codec.is_keyframe(snap.payload)


def test_an_ack_of_zero_asks_for_a_keyframe_even_after_a_newer_ack():
    # A client that lost its baseline acks 0; it must not wait for the ring to forget.
    room = make_room()
    room.join(1, "alice", now=0.0)
    for _ in range(5):
        tick(room)
    room.submit(1, frame(ack=4))
    assert snapshot_of(delivery_for(tick(room), 1)).baseline_tick == 4

    room.submit(1, frame(ack=0))
    d = delivery_for(tick(room), 1)

    assert d.keyframe and snapshot_of(d).baseline_tick == 0


def test_an_ack_older_than_the_history_ring_gets_a_keyframe():
    room = make_room()
    room.join(1, "alice", now=0.0)
    tick(room)
    room.submit(1, frame(ack=1))
    assert snapshot_of(delivery_for(tick(room), 1)).baseline_tick == 1

    while room.history.get(1) is not None:  # the ring forgets tick 1
        result = tick(room)

    assert room.tick_number > room.history.size
    assert delivery_for(result, 1).keyframe
    assert snapshot_of(delivery_for(result, 1)).baseline_tick == 0


def test_seats_acking_the_same_tick_share_the_identical_shared_bytes_object():
    room = make_room()
    for pid in (1, 2, 3, 4):
        room.join(pid, f"p{pid}", now=0.0)
    for _ in range(4):
        tick(room)
    room.submit(1, frame(ack=2))
    room.submit(2, frame(ack=2))
    room.submit(3, frame(ack=3))

    result = tick(room)

    d1, d2, d3, d4 = (delivery_for(result, pid) for pid in (1, 2, 3, 4))
    assert d1.snapshot_shared is d2.snapshot_shared
    assert d1.snapshot_shared is not d3.snapshot_shared
    assert d1.snapshot_personal is not d2.snapshot_personal
    assert d4.keyframe and not d1.keyframe


def test_the_history_encodes_once_per_distinct_baseline_per_tick():
    room = make_room()
    acks = {1: 2, 2: 2, 3: 3, 4: 3, 5: 4, 6: 0, 7: 0}  # baselines 2, 3, 4 and a keyframe
    for pid in acks:
        room.join(pid, f"p{pid}", now=0.0)
    for _ in range(5):
        tick(room)
    for pid, ack in acks.items():
        room.submit(pid, frame(ack=ack))
    before = room.history.encodes

    tick(room)

    assert room.history.encodes - before == 4


# -- inputs move the right entity; the per-tick cap ---------------------------------------


def test_a_player_holding_move_x_moves_right_and_an_idle_player_does_not_move():
    room = make_room(make_params(npc_count=0, world_width=4000.0, world_height=4000.0))
    room.join(1, "alice", now=0.0)
    room.join(2, "bob", now=0.0)
    a0, b0 = position(room, 1), position(room, 2)

    for seq in range(1, 11):
        room.submit(1, frame(cmd(seq, move_x=1.0), ack=room.tick_number))
        room.submit(2, frame(cmd(seq), ack=room.tick_number))
        tick(room)

    a1, b1 = position(room, 1), position(room, 2)
    assert a1[0] > a0[0] + 10.0
    assert a1[1] == a0[1]
    assert np.array_equal(b1, b0)


def distance_covered(cmds_per_tick: int, seconds: float) -> tuple[float, Params]:
    """Distance one player covers holding full speed away from the nearer x wall, sending
    `cmds_per_tick` single-command frames per tick (so `cmds_per_tick` × the tick rate)."""
    params = make_params(npc_count=0, world_width=4000.0, world_height=4000.0)
    room = make_room(params)  # same seed, so the same spawn point in every run
    room.join(1, "runner", now=0.0)
    start = position(room, 1)
    direction = 1.0 if start[0] < params.world_width / 2 else -1.0
    seq = 0
    for _ in range(params.ticks(seconds)):
        for _ in range(cmds_per_tick):
            seq += 1
            room.submit(1, frame(cmd(seq, move_x=direction), ack=room.tick_number))
        tick(room)
    return float(np.linalg.norm(position(room, 1) - start)), params


@pytest.mark.parametrize("cmds_per_tick", [2, 3, 8])
def test_sending_faster_than_the_tick_rate_never_moves_a_player_faster(cmds_per_tick):
    seconds = 5.0
    fast, params = distance_covered(cmds_per_tick, seconds)
    normal, _ = distance_covered(1, seconds)

    assert fast <= params.player_max_speed * seconds + params.player_radius
    assert fast <= normal + 1e-3
    assert normal > 0.9 * params.player_max_speed * seconds  # it really ran


def test_a_frame_with_more_than_8_commands_is_cut_to_the_newest_8_and_counted():
    room = make_room(make_params(input_queue=64))
    room.join(1, "alice", now=0.0)

    reasons = room.submit(1, frame(*(cmd(seq) for seq in range(1, 101))))

    assert reasons == ["too_many_cmds"]
    assert room.inputs_rejected["too_many_cmds"] == 1
    queued = [entry[0] for entry in room.seats[1].queue]
    assert queued == list(range(101 - MAX_CMDS_PER_FRAME, 101))


def test_many_frames_without_a_tick_keep_the_queue_within_its_bound_and_count_drops():
    room = make_room()
    room.join(1, "alice", now=0.0)
    bound = room.params.input_queue

    for seq in range(1, 101):
        assert room.submit(1, frame(cmd(seq))) == []
        assert len(room.seats[1].queue) <= bound

    assert room.inputs_dropped == 100 - bound
    assert [entry[0] for entry in room.seats[1].queue] == list(range(101 - bound, 101))


def test_a_seat_with_nothing_queued_stands_still_and_never_refires():
    # Its command is late, not absent: the step is taken when the command arrives.
    room = make_room(make_params(npc_count=0, world_width=4000.0, world_height=4000.0))
    room.join(1, "alice", now=0.0)
    room.submit(1, frame(cmd(1, move_y=1.0, buttons=1)))
    tick(room)
    shots = int(np.count_nonzero(room.world.kind == KIND_PROJECTILE))
    where = position(room, 1)

    for _ in range(3 * room.params.ticks(room.params.fire_cooldown_s)):
        tick(room)

    assert shots == 1
    assert np.count_nonzero(room.world.kind == KIND_PROJECTILE) <= shots
    assert np.array_equal(position(room, 1), where)


def test_late_commands_catch_up_to_exactly_where_on_time_commands_lead():
    # The client predicts one step per command; bunched commands must land the player
    # where the same commands arriving one per tick would have, at the same seq.
    params = make_params(npc_count=0, world_width=4000.0, world_height=4000.0)
    on_time, late = make_room(params), make_room(params)
    for room in (on_time, late):
        room.join(1, "alice", now=0.0)
    commands = [cmd(seq, move_x=1.0, move_y=0.5 * (seq % 3)) for seq in range(1, 7)]

    for c in commands[:3]:
        on_time.submit(1, frame(c))
        tick(on_time)
    tick(late)  # nothing arrived
    late.submit(1, frame(*commands[:2]))
    tick(late)  # two commands: one pre-move step, then the tick's own
    late.submit(1, frame(commands[2]))
    tick(late)

    assert late.seats[1].last_applied_seq == on_time.seats[1].last_applied_seq == 3
    assert np.array_equal(position(late, 1), position(on_time, 1))
    assert np.array_equal(late.world.vel[late.seats[1].entity],
                          on_time.world.vel[on_time.seats[1].entity])


def test_a_standing_queue_after_a_stall_is_trimmed_within_two_seconds():
    # Ten ticks of silence, then everything at once, then one command per tick: without
    # trimming the seat would stay several commands (ticks of input delay) behind forever.
    room = make_room(make_params(npc_count=0))
    room.join(1, "alice", now=0.0)
    for _ in range(10):
        tick(room)
    seq = 10
    room.submit(1, frame(*[cmd(i, move_x=1.0) for i in range(1, 9)]))
    room.submit(1, frame(cmd(9, move_x=1.0), cmd(10, move_x=1.0)))
    backlog = []
    for _ in range(2 * room.params.tick_rate):
        seq += 1
        room.submit(1, frame(cmd(seq, move_x=1.0)))
        tick(room)
        backlog.append(seq - room.seats[1].last_applied_seq)
    assert max(backlog[:5]) >= 3  # the stall left a queue behind
    assert backlog[-1] <= 1 and room.inputs_trimmed > 0


def test_a_fast_sender_earns_no_extra_steps():
    # Twice the tick rate lands exactly where once per tick does: one step per tick
    # (the surplus waits in the bounded queue, and the oldest is dropped from it).
    params = make_params(npc_count=0, world_width=4000.0, world_height=4000.0)
    steady, fast = make_room(params), make_room(params)
    for room in (steady, fast):
        room.join(1, "alice", now=0.0)
    for t in range(30):
        steady.submit(1, frame(cmd(t + 1, move_x=1.0)))
        fast.submit(1, frame(cmd(2 * t + 1, move_x=1.0), cmd(2 * t + 2, move_x=1.0)))
        tick(steady)
        tick(fast)
    assert np.array_equal(position(fast, 1), position(steady, 1))
    assert fast.inputs_dropped > 0


# -- input validation ---------------------------------------------------------------------

NAN, INF = float("nan"), float("inf")


INVALID_COMMANDS = [
        pytest.param({"move_x": NAN, "move_y": 1.0}, "non_finite", id="nan-move_x"),
        pytest.param({"move_x": INF, "move_y": 1.0}, "non_finite", id="inf-move_x"),
        pytest.param({"move_x": -INF, "move_y": 1.0}, "non_finite", id="-inf-move_x"),
        pytest.param({"move_y": NAN, "move_x": 1.0}, "non_finite", id="nan-move_y"),
        pytest.param({"move_y": INF, "move_x": 1.0}, "non_finite", id="inf-move_y"),
        pytest.param({"move_y": -INF, "move_x": 1.0}, "non_finite", id="-inf-move_y"),
        pytest.param({"aim": NAN, "move_x": 1.0}, "non_finite", id="nan-aim"),
        pytest.param({"aim": INF, "move_x": 1.0}, "non_finite", id="inf-aim"),
        pytest.param({"aim": -INF, "move_x": 1.0}, "non_finite", id="-inf-aim"),
        pytest.param({"move_x": 1.5}, "out_of_range", id="move_x-1.5"),
        pytest.param({"move_y": -1.5}, "out_of_range", id="move_y--1.5"),
        pytest.param({"aim": 100.0, "move_x": 1.0}, "out_of_range", id="aim-100"),
        pytest.param({"buttons": 0x80, "move_x": 1.0}, "unknown_buttons", id="buttons-0x80"),
]


@pytest.mark.parametrize(("bad", "reason"), INVALID_COMMANDS)
def test_an_invalid_command_is_rejected_counted_and_leaves_the_world_alone(bad, reason):
    room = make_room(make_params(npc_count=0))
    room.join(1, "alice", now=0.0)
    tick(room)
    seat = room.seats[1]
    before = (position(room, 1), float(room.world.aim[seat.entity]))

    assert room.submit(1, frame(cmd(1, **bad), ack=1)) == [reason]
    tick(room)

    assert room.inputs_rejected == {reason: 1}
    assert seat.last_applied_seq == 0
    assert np.array_equal(position(room, 1), before[0])
    assert float(room.world.aim[seat.entity]) == before[1]
    assert np.count_nonzero(room.world.kind == KIND_PROJECTILE) == 0


@pytest.mark.parametrize(("bad", "reason"), INVALID_COMMANDS)
def test_deferred_an_invalid_command_is_reported_by_the_tick_counted_and_harmless(bad, reason):
    room = make_room(make_params(npc_count=0), deferred=True)
    room.join(1, "alice", now=0.0)
    tick(room)
    seat = room.seats[1]
    before = (position(room, 1), float(room.world.aim[seat.entity]))

    assert room.submit(1, frame(cmd(1, **bad), ack=1)) == []
    result = tick(room)

    assert result.input_rejections == [(1, reason, 1)]
    assert room.inputs_rejected == {reason: 1}
    assert seat.last_applied_seq == 0
    assert np.array_equal(position(room, 1), before[0])
    assert float(room.world.aim[seat.entity]) == before[1]
    assert np.count_nonzero(room.world.kind == KIND_PROJECTILE) == 0


def test_deferred_a_sequence_jump_is_reported_by_the_tick_and_exactly_1024_is_not():
    room = make_room(deferred=True)
    room.join(1, "alice", now=0.0)
    room.submit(1, frame(cmd(1)))
    room.submit(1, frame(cmd(2 + MAX_SEQ_JUMP)))
    room.submit(1, frame(cmd(1 + MAX_SEQ_JUMP)))

    assert tick(room).input_rejections == [(1, "seq_jump", 1)]
    assert room.inputs_rejected == {"seq_jump": 1}
    assert room.seats[1].last_queued_seq == 1 + MAX_SEQ_JUMP


def test_a_sequence_jump_of_more_than_1024_is_rejected_and_exactly_1024_is_not():
    room = make_room()
    room.join(1, "alice", now=0.0)
    room.submit(1, frame(cmd(1)))

    assert room.submit(1, frame(cmd(2 + MAX_SEQ_JUMP))) == ["seq_jump"]
    assert room.submit(1, frame(cmd(1 + MAX_SEQ_JUMP))) == []
    assert room.inputs_rejected == {"seq_jump": 1}
    assert room.seats[1].last_queued_seq == 1 + MAX_SEQ_JUMP


def test_an_ack_beyond_the_rooms_tick_is_rejected_and_not_recorded():
    room = make_room()
    room.join(1, "alice", now=0.0)
    tick(room)
    tick(room)

    assert room.submit(1, frame(cmd(1), ack=room.tick_number + 1)) == ["bad_ack"]
    assert room.inputs_rejected == {"bad_ack": 1}
    assert room.seats[1].acked_tick == 0
    assert [entry[0] for entry in room.seats[1].queue] == [1]  # the commands still count


def test_a_redundant_copy_of_a_command_is_silently_ignored_and_applied_once():
    room = make_room()
    room.join(1, "alice", now=0.0)

    assert room.submit(1, frame(cmd(1, buttons=1))) == []
    assert room.submit(1, frame(cmd(1, buttons=1), cmd(2, move_x=1.0))) == []
    assert room.submit(1, frame(cmd(1, buttons=1), cmd(2, move_x=1.0), cmd(3))) == []

    assert [entry[0] for entry in room.seats[1].queue] == [1, 2, 3]
    assert room.inputs_rejected == {}
    tick(room)
    tick(room)
    tick(room)  # one command per tick
    assert room.seats[1].last_applied_seq == 3
    assert snapshot_of(delivery_for(tick(room), 1)).last_input_seq == 3


def test_a_command_from_a_player_without_a_seat_is_refused():
    assert make_room().submit(99, frame(cmd(1))) == ["no_seat"]


# -- names and capacity -------------------------------------------------------------------


@pytest.mark.parametrize(
    "name",
    ["", "   ", "x" * 25, "bad\x00name", "tab\tinside", "bell\x07", "new\nline"],
    ids=["empty", "whitespace", "25-chars", "nul", "tab", "bell", "newline"],
)
def test_a_name_that_is_empty_too_long_or_not_printable_is_refused(name):
    room = make_room()
    with pytest.raises(JoinRefused):
        room.join(1, name, now=0.0)
    assert room.seats == {}
    assert not room.world.alive[room.world.kind == 1].any()


@pytest.mark.parametrize(
    "name",
    ["\u3164", "\u3164\u3164\u3164", "\u2800", "\u2800 \u2800", "\u115f\u1160", "\uffa0",
     "\u0301", "\u0301\u0302\u0303", "\u20dd", "\u034f", "\u3164\u0301\u2800"],
    ids=["hangul-filler", "three-fillers", "braille-blank", "blanks-and-space",
         "choseong-jungseong-fillers", "halfwidth-filler", "combining-acute",
         "combining-marks", "enclosing-mark", "grapheme-joiner", "filler-mark-blank"],
)
def test_a_name_made_only_of_characters_that_show_nothing_is_refused(name):
    room = make_room()
    with pytest.raises(JoinRefused, match="visible character"):
        room.join(1, name, now=0.0)
    with pytest.raises(JoinRefused, match="visible character"):
        check_name(name)
    assert room.seats == {}


@pytest.mark.parametrize("name", ["a\u0301", "\u674e", "\U0001f642", "Zo\u00eb", "\u3164a",
                                  "\u2800.", "\u0915\u094d\u0937", "#1"])
def test_a_name_with_something_visible_is_accepted_as_it_is(name):
    assert make_room().join(1, name, now=0.0).name == name


def test_a_name_is_trimmed_and_24_printable_characters_are_accepted():
    room = make_room()
    assert room.join(1, "  alice  ", now=0.0).name == "alice"
    assert room.join(2, "é" * 24, now=0.0).name == "é" * 24


def test_a_full_room_raises_room_full_error():
    room = make_room(make_params(max_players=2))
    room.join(1, "alice", now=0.0)
    room.join(2, "bob", now=0.0)

    assert not room.has_free_seat()
    with pytest.raises(RoomFullError):
        room.join(3, "carol", now=0.0)


def test_a_disconnected_seat_still_occupies_its_place_in_a_full_room():
    room = make_room(make_params(max_players=2))
    room.join(1, "alice", now=0.0)
    room.join(2, "bob", now=0.0)
    room.disconnect(2, now=0.0)

    with pytest.raises(RoomFullError):
        room.join(3, "carol", now=0.0)


# -- disconnect, resume and expiry --------------------------------------------------------


def grace_room() -> Room:
    room = make_room(make_params(resume_grace_s=10.0))
    room.join(1, "alice", now=0.0)
    room.join(2, "bob", now=0.0)
    tick(room)
    return room


def test_a_disconnected_seat_keeps_its_entity_and_is_found_by_its_token_only():
    room = grace_room()
    seat = room.seats[1]
    room.disconnect(1, now=0.5)
    for _ in range(30):
        tick(room)

    token = seat.resume_token
    assert room.find_by_token(token) is seat
    assert room.world.alive[seat.entity]
    for i in range(len(token)):  # a flipped byte anywhere: player id or secret
        wrong = bytearray(token)
        wrong[i] ^= 0x01
        assert room.find_by_token(bytes(wrong)) is None
    assert room.find_by_token(token[:-1]) is None
    assert room.find_by_token(token + b"\x00") is None
    assert room.find_by_token(b"") is None


def test_a_disconnected_seat_gets_no_deliveries():
    room = grace_room()
    room.disconnect(1, now=0.1)

    for _ in range(5):
        assert [d.player_id for d in tick(room).deliveries] == [2]


def test_a_resumed_player_gets_a_welcome_and_a_keyframe_for_the_same_entity():
    room = grace_room()
    seat = room.seats[1]
    entity = seat.entity
    for _ in range(3):
        tick(room)
    room.submit(1, frame(cmd(1), ack=room.tick_number))
    tick(room)
    room.disconnect(1, now=0.2)
    tick(room)

    room.resume(room.find_by_token(seat.resume_token), now=5.0)
    d = delivery_for(tick(room), 1)

    assert kinds(d)[0] == "welcome"
    welcome = event_frames(d)[0].welcome
    assert welcome.entity == entity == seat.entity
    assert welcome.resume_token == seat.resume_token
    assert d.keyframe
    snap = snapshot_of(d)
    assert snap.baseline_tick == 0
    assert codec.states_equal(codec.decode(snap.payload, None), room.last_state)
    # The new socket restarts its sequence numbers at 1.
    assert room.submit(1, frame(cmd(1, move_x=1.0), ack=snap.tick)) == []
    assert [entry[0] for entry in seat.queue] == [1]


def test_every_resume_issues_a_fresh_token_and_the_used_one_stops_working():
    room = grace_room()
    seat = room.seats[1]
    first = seat.resume_token
    room.disconnect(1, now=0.1)

    room.resume(room.find_by_token(first), now=0.2)
    welcome = event_frames(delivery_for(tick(room), 1))[0].welcome
    second = bytes(welcome.resume_token)

    assert second != first and second == seat.resume_token
    assert second[:4] == first[:4]  # same player id, new secret
    assert room.find_by_token(first) is None  # a second holder of the old token is out
    assert room.find_by_token(second) is seat

    # Again, on a half-open socket (no disconnect seen): the token still rotates.
    room.resume(room.find_by_token(second), now=0.3)
    third = bytes(event_frames(delivery_for(tick(room), 1))[0].welcome.resume_token)
    assert third not in (first, second)
    assert room.find_by_token(second) is None
    assert room.find_by_token(third) is seat


def test_after_the_grace_period_a_tick_expires_the_seat_frees_the_entity_and_tells_others():
    room = grace_room()
    entity = room.seats[1].entity
    room.disconnect(1, now=1.0)

    early = room.tick(10.9)  # 9.9 s after the drop: still waiting
    assert early.expired == []
    assert room.world.alive[entity]

    result = room.tick(11.0)

    assert result.expired == [1]
    assert 1 not in room.seats
    assert not room.world.alive[entity]
    roster = last_roster(result, 2)
    assert roster is not None
    assert [p.player_id for p in roster.players] == [2]


def test_a_resume_after_the_grace_period_is_refused_even_before_the_next_tick():
    room = grace_room()
    seat = room.seats[1]
    room.disconnect(1, now=1.0)

    late = 1.0 + room.params.resume_grace_s + 5.0  # no tick ran since the drop
    found = room.find_by_token(seat.resume_token)
    if found is not None:  # either refusal is fine: no lookup, or no resume
        with pytest.raises(JoinRefused):
            room.resume(found, now=late)


def test_the_roster_lists_every_seat_with_its_connected_flag():
    room = grace_room()
    room.join(3, "carol", now=0.1)
    room.disconnect(2, now=0.1)

    result = tick(room)

    roster = last_roster(result, 1)
    assert roster is not None
    listed = {(p.player_id, p.name, p.entity, p.connected) for p in roster.players}
    assert listed == {
        (1, "alice", room.seats[1].entity, True),
        (2, "bob", room.seats[2].entity, False),
        (3, "carol", room.seats[3].entity, True),
    }
    assert last_roster(result, 3) == roster


def test_a_room_without_grace_frees_a_disconnected_seat_at_once():
    room = make_room(make_params(resume_grace_s=0.0))
    seat = room.join(1, "alice", now=0.0)
    room.disconnect(1, now=0.0)

    assert 1 not in room.seats
    assert not room.world.alive[seat.entity]
