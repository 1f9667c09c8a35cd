"""The room's input path: per-frame buffering, validation (at once or once per tick in
NumPy), bounded queues. The reference is the rule as it was written before the arrays: one
command at a time, a deque per seat (``Reference`` below); both modes must match it
exactly, whatever the commands, the frame split and the flush points.
"""

from __future__ import annotations

import math
from collections import Counter, deque
from dataclasses import dataclass, field

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from proto import tickwire_pb2 as pb
from server.inputs import FLUSH_AT, MAX_SEQ_JUMP, SeatInputs, check_cmd
from server.room import Room
from sim.params import load_params

NAN, INF = float("nan"), float("inf")


@dataclass
class Reference:
    """The scalar rules, one command at a time (the Room's code before the arrays)."""

    limit: int
    queues: dict[int, deque] = field(default_factory=dict)
    newest: dict[int, int] = field(default_factory=dict)
    rejected: Counter = field(default_factory=Counter)  # (row, reason) -> count
    dropped: int = 0

    def receive(self, row: int, cmds: list[pb.InputCmd]) -> None:
        queue = self.queues.setdefault(row, deque())
        for cmd in cmds:
            newest = self.newest.get(row, 0)
            if cmd.seq <= newest:
                continue
            reason = check_cmd(cmd.seq, cmd.move_x, cmd.move_y, cmd.aim, cmd.buttons, newest)
            if reason:
                self.rejected[row, reason] += 1
                continue
            queue.append((cmd.seq, cmd.move_x, cmd.move_y, cmd.aim, bool(cmd.buttons & 1)))
            self.newest[row] = cmd.seq
            if len(queue) > self.limit:
                queue.popleft()
                self.dropped += 1


def as_f32(value: float) -> float:
    """What a protobuf float field holds."""
    return float(np.float32(value))


values = st.one_of(
    st.floats(-1.0, 1.0, width=32),
    st.sampled_from([NAN, INF, -INF, 1.5, -1.0000001, 7.0, -100.0]),
)
commands = st.builds(
    lambda seq, mx, my, aim, buttons: pb.InputCmd(seq=seq, move_x=mx, move_y=my, aim=aim,
                                                  buttons=buttons),
    seq=st.one_of(st.integers(0, 40), st.integers(0, 3000), st.just(2**32 - 1)),
    mx=values,
    my=values,
    aim=st.one_of(st.floats(-7.0, 7.0, width=32), st.just(NAN)),
    buttons=st.sampled_from([0, 0, 1, 1, 2, 0x80]),
)
# A stream of (row, frame of commands, flush after this frame?)
streams = st.lists(
    st.tuples(st.integers(0, 3), st.lists(commands, min_size=0, max_size=8), st.booleans()),
    max_size=40,
)


@settings(max_examples=300, deadline=None)
@given(stream=streams, limit=st.integers(1, 8), defer=st.booleans())
def test_both_modes_queue_and_reject_exactly_as_the_scalar_rules(stream, limit, defer):
    inputs = SeatInputs(4, limit, defer_checks=defer)
    ref = Reference(limit)
    got: Counter = Counter()
    for row, cmds, flush in stream:
        for reason in inputs.receive(row, cmds):
            got[row, reason] += 1
        ref.receive(row, cmds)
        if flush:
            for r, reason, count in inputs.flush(limit):
                got[r, reason] += count
    for r, reason, count in inputs.flush(limit):
        got[r, reason] += count

    assert got == ref.rejected
    by_reason: Counter = Counter()
    for (_, reason), n in ref.rejected.items():
        by_reason[reason] += n
    assert inputs.rejected == by_reason
    assert inputs.dropped == ref.dropped
    for row in range(4):
        expected = [(s, as_f32(x), as_f32(y), as_f32(a), f)
                    for s, x, y, a, f in ref.queues.get(row, ())]
        assert inputs.queued(row) == expected
        assert inputs.newest_seq[row] == ref.newest.get(row, 0)


def test_a_jump_then_an_in_range_command_in_one_flush_replays_the_rule_exactly():
    # A rejected jump does not advance the newest seq, so the next command is judged
    # against the seq before it (the running-maximum shortcut would get this wrong).
    inputs = SeatInputs(2, 8, defer_checks=True)
    inputs.receive(0, [pb.InputCmd(seq=1)])
    inputs.receive(0, [pb.InputCmd(seq=2 + MAX_SEQ_JUMP), pb.InputCmd(seq=5),
                       pb.InputCmd(seq=4), pb.InputCmd(seq=6, move_x=NAN)])
    inputs.receive(1, [pb.InputCmd(seq=3), pb.InputCmd(seq=2)])

    found = inputs.flush(8)

    assert sorted(found) == [(0, "non_finite", 1), (0, "seq_jump", 1)]
    assert [q[0] for q in inputs.queued(0)] == [1, 5]
    assert [q[0] for q in inputs.queued(1)] == [3]


def test_deferred_receive_buffers_only_commands_newer_than_the_last_flush():
    inputs = SeatInputs(1, 8, defer_checks=True)
    inputs.receive(0, [pb.InputCmd(seq=s) for s in (1, 2, 3)])
    inputs.flush(8)

    inputs.receive(0, [pb.InputCmd(seq=s) for s in (2, 3, 4)])  # two redundant copies

    assert inputs.buffered == 1


# -- through the Room ---------------------------------------------------------------------


def deferred_room(**changes: object) -> Room:
    return Room("r", load_params().with_changes({"npc_count": 0, **changes}),
                defer_input_checks=True)


def frame(*cmds: pb.InputCmd, ack: int = 0) -> pb.Input:
    return pb.Input(ack_tick=ack, cmds=list(cmds))


def tick(room: Room):
    return room.tick((room.tick_number + 1) / room.params.tick_rate)


def test_deferred_submit_returns_frame_level_reasons_and_the_tick_reports_the_rest():
    room = deferred_room()
    room.join(1, "alice", now=0.0)
    room.join(2, "bob", now=0.0)
    tick(room)

    assert room.submit(1, frame(pb.InputCmd(seq=1, move_x=NAN), pb.InputCmd(seq=2, aim=99.0),
                                pb.InputCmd(seq=3, move_y=INF))) == []
    assert room.submit(2, frame(*(pb.InputCmd(seq=s) for s in range(1, 10)))) == [
        "too_many_cmds"]
    assert room.submit(2, frame(ack=room.tick_number + 5)) == ["bad_ack"]
    assert room.submit(99, frame()) == ["no_seat"]

    result = tick(room)

    assert sorted(result.input_rejections) == [(1, "non_finite", 2), (1, "out_of_range", 1)]
    assert room.inputs_rejected == {"non_finite": 2, "out_of_range": 1, "too_many_cmds": 1,
                                    "bad_ack": 1}
    assert room.seats[1].last_applied_seq == 0
    assert tick(room).input_rejections == []  # reported once


def test_deferred_rejections_of_a_seat_that_then_drops_or_leaves_are_still_reported():
    room = deferred_room(resume_grace_s=5.0)
    for pid in (1, 2):
        room.join(pid, f"p{pid}", now=0.0)
    room.submit(1, frame(pb.InputCmd(seq=1, move_x=NAN)))
    room.submit(2, frame(pb.InputCmd(seq=1, buttons=0x80)))
    room.disconnect(1, now=0.0)
    room.leave(2)

    result = tick(room)

    assert sorted(result.input_rejections) == [(1, "non_finite", 1), (2, "unknown_buttons", 1)]


def test_commands_from_before_a_resume_never_leak_into_the_new_socket():
    room = deferred_room(resume_grace_s=5.0)
    seat = room.join(1, "alice", now=0.0)
    room.submit(1, frame(pb.InputCmd(seq=7, move_x=1.0)))
    room.disconnect(1, now=0.0)
    room.resume(seat, now=0.1)

    room.submit(1, frame(pb.InputCmd(seq=1, move_x=-1.0)))

    assert [q[0] for q in seat.queue] == [1]


def test_the_buffers_are_flushed_early_so_they_stay_bounded():
    room = deferred_room(max_players=200)
    for pid in range(1, 201):
        room.join(pid, f"p{pid}", now=0.0)
    most = 0
    for seq in range(1, 41):  # 200 seats x 8 commands x 40 frames, no tick
        for pid in range(1, 201):
            room.submit(pid, frame(*(pb.InputCmd(seq=8 * seq + k) for k in range(8))))
            most = max(most, room._inputs.buffered)

    assert most < FLUSH_AT
    assert [q[0] for q in room.seats[1].queue] == list(range(320, 328))
    assert room.inputs_dropped == 200 * (8 * 40 - room.params.input_queue)


@pytest.mark.parametrize("defer", [False, True])
def test_a_lowered_queue_bound_applies_from_the_next_tick_as_before(defer):
    params = load_params().with_changes({"npc_count": 0, "input_queue": 8})
    room = Room("r", params, defer_input_checks=defer)
    room.join(1, "alice", now=0.0)
    room.submit(1, frame(*(pb.InputCmd(seq=s) for s in range(1, 9))))
    room.set_params(params.with_changes({"input_queue": 2}), now=0.0)
    tick(room)  # takes one command; seven stay queued over the new bound

    room.submit(1, frame(pb.InputCmd(seq=9), pb.InputCmd(seq=10)))

    assert [q[0] for q in room.seats[1].queue] == [4, 5, 6, 7, 8, 9, 10]
    assert room.inputs_dropped == 2


def test_a_raised_queue_bound_widens_the_rings_and_keeps_their_order():
    params = load_params().with_changes({"npc_count": 0, "input_queue": 4})
    room = Room("r", params, defer_input_checks=True)
    room.join(1, "alice", now=0.0)
    room.submit(1, frame(*(pb.InputCmd(seq=s) for s in range(1, 7))))
    tick(room)  # 3..6 queued, one taken
    room.set_params(params.with_changes({"input_queue": 16}), now=0.0)
    tick(room)

    room.submit(1, frame(*(pb.InputCmd(seq=s) for s in range(7, 15))))

    assert [q[0] for q in room.seats[1].queue] == list(range(5, 15))


def test_check_cmd_is_the_reason_table():
    assert check_cmd(1, 0.0, 0.0, 0.0, 0, 0) is None
    assert check_cmd(1, NAN, 0.0, 0.0, 0x80, 0) == "non_finite"
    assert check_cmd(1, 0.0, 1.5, 0.0, 0x80, 0) == "out_of_range"
    assert check_cmd(1, 0.0, 0.0, 2 * math.pi, 0x80, 0) == "unknown_buttons"
    assert check_cmd(2 + MAX_SEQ_JUMP, 0.0, 0.0, 0.0, 1, 1) == "seq_jump"
    assert check_cmd(1 + MAX_SEQ_JUMP, 0.0, 0.0, 0.0, 1, 1) is None


# -- the usual tick's fast path (commands that skip the rings) ---------------------------

def taken_by_row(taken) -> dict:
    """A Taken as {row: (move, aim, fire, shot, waited)} (the fast path keeps arrival
    order), and its pre-move rounds."""
    per_row = {int(r): (tuple(taken.move[i].tolist()), float(taken.aim[i]),
                        bool(taken.fire[i]), tuple(taken.shot[i].tolist()),
                        int(taken.waited[i]))
               for i, r in enumerate(taken.rows.tolist())}
    early = [(r.tolist(), m.tolist(), a.tolist()) for r, m, a in taken.early]
    return {"rows": per_row, "early": early}


usual_ticks = st.lists(
    st.tuples(
        # per row: how many new commands this tick (mostly one), and whether it fires
        st.lists(st.tuples(st.sampled_from([0, 1, 1, 1, 1, 2, 3]), st.booleans()),
                 min_size=4, max_size=4),
        st.sampled_from(["", "", "", "bad", "length", "queued", "clear", "reset",
                         "second_flush"]),
        st.booleans(),  # flush before the take (as Room.tick does), or let take find them
    ),
    min_size=1, max_size=80,
)


@settings(max_examples=200, deadline=None)
@given(ticks=usual_ticks, cap=st.integers(1, 3), limit=st.integers(1, 4),
       window=st.integers(1, 5), defer=st.booleans())
def test_the_fast_path_takes_exactly_what_the_rings_take(ticks, cap, limit, window, defer):
    fast = SeatInputs(4, limit, defer_checks=defer)
    rings = SeatInputs(4, limit, defer_checks=defer, direct=False)
    seq = [0, 0, 0, 0]
    direct_ticks = 0
    for per_row, event, flush_first in ticks:
        frames = []
        for row, (count, fire) in enumerate(per_row):
            cmds = []
            for k in range(count):
                seq[row] += 1
                cmds.append(pb.InputCmd(seq=seq[row], move_x=0.5 - 0.25 * row, move_y=0.1 * k,
                                        aim=0.3 * row, buttons=int(fire and k == 0),
                                        view_tick=3 if fire else 0,
                                        view_next_tick=4 if fire else 0,
                                        view_blend=0.5 if fire else 0.0))
            if event == "bad" and row == 1 and cmds:
                cmds[-1].move_x = NAN
            # the clients resend the two commands before (redundant copies)
            frames.append([pb.InputCmd(seq=s) for s in range(max(1, seq[row] - 2 - count + 1),
                                                             seq[row] - count + 1)] + cmds)
        now = [[list(inputs.receive(row, cmds)) for row, cmds in enumerate(frames)]
               for inputs in (fast, rings)]
        assert now[0] == now[1]
        if flush_first:
            assert sorted(fast.flush(limit)) == sorted(rings.flush(limit))
        if event == "second_flush":
            for inputs in (fast, rings):
                inputs.receive(2, [pb.InputCmd(seq=seq[2] + 1, move_x=0.25)])
            seq[2] += 1
            assert sorted(fast.flush(limit)) == sorted(rings.flush(limit))
        elif event == "length":
            assert fast.length.tolist() == rings.length.tolist()
        elif event == "queued":
            assert fast.queued(0) == rings.queued(0)
        elif event == "clear":
            fast.clear_queue(3)
            rings.clear_queue(3)
        elif event == "reset":
            fast.reset(0)
            rings.reset(0)
            seq[0] = 0
        direct_ticks += fast._direct is not None
        a, b = fast.take(cap, window), rings.take(cap, window)
        assert taken_by_row(a) == taken_by_row(b)
        # The queue positions (_head) and the ring's free cells may differ; nothing else.
        for name in ("budget", "last_applied", "_window_min", "_window_ticks"):
            assert getattr(fast, name).tolist() == getattr(rings, name).tolist()
        assert fast.newest_seq == rings.newest_seq
        assert (fast.dropped, fast.trimmed, fast.rejected) == (
            rings.dropped, rings.trimmed, rings.rejected)
        for row in range(4):
            assert fast.queued(row) == rings.queued(row)
    assert rings._direct is None  # the reference never skips the rings


def test_one_command_per_seat_into_empty_queues_skips_the_rings():
    inputs = SeatInputs(3, 8, defer_checks=True)
    inputs.receive(2, [pb.InputCmd(seq=1, move_x=1.0, buttons=1)])
    inputs.receive(0, [pb.InputCmd(seq=1, move_y=-1.0)])
    inputs.flush(8)

    assert inputs._direct is not None
    taken = inputs.take(3, 30)

    assert taken.rows.tolist() == [2, 0] and taken.fire.tolist() == [True, False]
    assert taken.move.tolist() == [[1.0, 0.0], [0.0, -1.0]]
    assert inputs.budget.tolist() == [0, 1, 0] and inputs.last_applied.tolist() == [1, 0, 1]
    assert inputs.length.tolist() == [0, 0, 0]


@pytest.mark.parametrize("defer", [True, False])
def test_buffered_commands_reach_the_queue_bit_for_bit(defer: bool) -> None:
    """The buffer packs each command's values as float64 bytes: the widest uint32 seq and
    view ticks, float32 extremes and subnormals come out of the flush exactly."""
    inputs = SeatInputs(4, 8, defer_checks=defer)
    tiny = float(np.float32(1e-45))  # the smallest float32 subnormal
    top = 2**32 - 1
    inputs.newest_seq[2] = top - 3
    inputs.receive(2, [
        pb.InputCmd(seq=top - 2, move_x=tiny, move_y=-1.0, aim=float(np.float32(math.pi))),
        pb.InputCmd(seq=top - 1, move_x=float(np.float32(0.1)), move_y=-tiny, aim=-0.0,
                    buttons=1, view_tick=top, view_next_tick=top, view_blend=1.0),
        pb.InputCmd(seq=top, move_x=1.0, move_y=float(np.float32(-0.7)), aim=0.0)])
    assert inputs.flush(8) == []
    queued = inputs.queued(2)
    assert queued == [(top - 2, tiny, -1.0, float(np.float32(math.pi)), False),
                      (top - 1, float(np.float32(0.1)), -tiny, -0.0, True),
                      (top, 1.0, float(np.float32(-0.7)), 0.0, False)]
    assert math.copysign(1.0, queued[1][3]) == -1.0  # the sign of -0.0 survives
    assert inputs.newest_seq[2] == top
