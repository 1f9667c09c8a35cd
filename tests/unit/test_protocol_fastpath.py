"""The one-input-per-read short path of `ConnectionProtocol.receive_data` against the
general loop: the same reads, in two connections that differ only in `fast_path`, give
the same events, outbox, state, counts, budget and room inputs after every read."""

from __future__ import annotations

import math

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from proto import tickwire_pb2 as pb
from server.lobby import Lobby
from server.metrics import Counts
from server.protocol import ConnectionProtocol, Joined
from server.session import Session, SessionLimits
from sim.params import load_params
from tests.wsframes import (
    OP_CLOSE,
    OP_PING,
    OP_TEXT,
    client_frame,
    encode,
    input_cmd,
    input_frame,
    join_frame,
)

PARAMS = load_params().with_changes({"npc.count": 0})
MASK = b"\x11\x22\x33\x44"  # one fixed mask, so both connections read the same bytes

_value = st.one_of(st.floats(-1.0, 1.0), st.sampled_from([1.5, -7.0, math.nan, math.inf]))


@st.composite
def wire_frame(draw: st.DrawFn) -> bytes:
    kind = draw(st.sampled_from(["input"] * 6 + ["ping", "ws_ping", "garbage", "empty",
                                                 "text", "fragment", "big", "close"]))
    if kind == "input":
        seq = draw(st.integers(1, 3000))
        cmds = [input_cmd(seq + i, move_x=draw(_value), move_y=draw(_value),
                          aim=draw(st.floats(-3.0, 3.0)), buttons=draw(st.sampled_from([0, 1, 2])))
                for i in range(draw(st.integers(0, 10)))]
        ack = draw(st.sampled_from([0, 1, 5, 10_000]))
        return client_frame(input_frame(*cmds, ack_tick=ack), mask=MASK)
    if kind == "ping":
        return client_frame(encode(ping=pb.Ping(client_time=1.5)), mask=MASK)
    if kind == "ws_ping":
        return client_frame(b"hi", OP_PING, mask=MASK)
    if kind == "garbage":
        return client_frame(b"\xff\xfe\xfd", mask=MASK)
    if kind == "empty":
        return client_frame(b"", mask=MASK)
    if kind == "text":
        return client_frame(b"{}", OP_TEXT, mask=MASK)
    if kind == "fragment":  # the first part of a message that never finishes
        return client_frame(input_frame(input_cmd(1)), fin=False, mask=MASK)
    if kind == "big":  # a whole Input over 125 bytes: a 16-bit length header
        cmds = [input_cmd(9000 + i, move_x=0.5) for i in range(8)]
        return client_frame(input_frame(*cmds) + b"", mask=MASK)
    return client_frame(b"\x03\xe8", OP_CLOSE, mask=MASK)


@st.composite
def reads(draw: st.DrawFn) -> list[tuple[float, bytes]]:
    """(seconds since the previous read, bytes of the read): whole frames, several
    frames in one read, or a stream cut at arbitrary points (partial frames)."""
    frames = draw(st.lists(wire_frame(), min_size=1, max_size=40))
    stream = b"".join(frames)
    out: list[tuple[float, bytes]] = []
    if draw(st.booleans()):
        for frame in frames:
            out.append((draw(st.sampled_from([0.0, 0.001, 1 / 30, 0.5])), frame))
    else:
        cuts = sorted(draw(st.lists(st.integers(1, max(1, len(stream) - 1)), max_size=12)))
        for a, b in zip([0, *cuts], [*cuts, len(stream)], strict=True):
            if b > a:
                out.append((draw(st.sampled_from([0.0, 1 / 30])), stream[a:b]))
    return out


def _joined(fast: bool, defer: bool, burst: float) -> ConnectionProtocol:
    class Seating:
        lobby = Lobby(PARAMS, defer_input_checks=defer)
        draining = False

    limits = SessionLimits.for_tick_rate(30, frame_burst=burst, max_drops=20)
    conn = ConnectionProtocol(Session.open(limits, 100.0), Seating(), Counts())
    conn.fast_path = fast
    events = conn.receive_data(client_frame(join_frame("p")), 100.0)
    assert isinstance(events[0], Joined)
    conn.outbox.clear()
    return conn


def _seen(conn: ConnectionProtocol, events: list) -> tuple:
    """Everything a read can change that anyone looks at."""
    room, session, counts = conn.room, conn.session, conn.counts
    seat = room.seats.get(session.player_id) if room is not None else None
    return (events, list(conn.outbox), conn.state, conn.close_code, conn.close_reason,
            conn.close_label, counts.bytes_received, dict(counts.frames_rejected),
            dict(counts.inputs_rejected), counts.backlogs, session.last_read_at,
            session.last_frame_at, session.budget.frames, session.budget.bytes_,
            None if seat is None else (seat.acked_tick, seat.last_queued_seq),
            None if room is None else dict(room.inputs_rejected))


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(script=reads(), defer=st.booleans(), burst=st.sampled_from([2.0, 60.0]))
def test_short_path_and_general_loop_agree_on_every_read(
        script: list[tuple[float, bytes]], defer: bool, burst: float) -> None:
    fast, general = _joined(True, defer, burst), _joined(False, defer, burst)
    now = 100.0
    for dt, data in script:
        now += dt
        seen = [_seen(c, c.receive_data(data, now)) for c in (fast, general)]
        assert seen[0] == seen[1]
        fast.outbox.clear()
        general.outbox.clear()
    for conn in (fast, general):  # the commands both buffered, validated and queued
        if conn.room is not None and conn.session.player_id in conn.room.seats:
            conn.room.queued_commands(conn.session.player_id)
    assert _seen(fast, []) == _seen(general, [])


@pytest.mark.parametrize("defer", [False, True])
def test_a_read_of_one_input_takes_the_short_path(defer: bool) -> None:
    """The short path is taken for the reads the arena's clients make (the frame parser
    never sees them: its last frame's size stays the Join's), and not for anything else."""
    conn = _joined(True, defer, 60.0)
    join_wire = conn.parser.wire_bytes
    data = client_frame(input_frame(input_cmd(1, move_x=0.5), ack_tick=1))
    assert len(data) != join_wire
    conn.receive_data(data, 101.0)
    assert conn.parser.wire_bytes == join_wire
    assert conn.counts.bytes_received >= len(data) and conn.room is not None
    ping = client_frame(encode(ping=pb.Ping(client_time=1.0)))
    conn.receive_data(ping, 101.1)
    assert conn.parser.wire_bytes == len(ping)  # a Ping goes through the general loop
