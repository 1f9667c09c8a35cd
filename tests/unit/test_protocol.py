"""The connection protocol object, without sockets: every rule of its state table, the
Kick table, the budget that tells a backlog from a flood, and the shared hostile table."""

from __future__ import annotations

import struct
from dataclasses import dataclass, field

import pytest

from proto import PROTOCOL_VERSION
from proto import tickwire_pb2 as pb
from server.framing import OP_BINARY, OP_CLOSE, OP_PONG
from server.lobby import Lobby
from server.metrics import Counts
from server.protocol import KICKS, Closed, Closing, ConnectionProtocol, Joined, State
from server.room import Room
from server.session import Session, SessionLimits
from sim.params import load_params
from tests.hostile_table import WIRE_ATTACKS, WireAttack
from tests.wsframes import (
    OP_PING,
    client_frame,
    encode,
    input_cmd,
    input_frame,
    join_frame,
)

TICK_RATE = 30


@dataclass
class Seating:
    lobby: Lobby
    draining: bool = False


@dataclass
class Server:
    """A lobby and the connections on it; time moves only when a test says so."""

    params: object = None
    limits: SessionLimits = field(
        default_factory=lambda: SessionLimits.for_tick_rate(TICK_RATE))
    now: float = 100.0

    def __post_init__(self) -> None:
        self.params = self.params or load_params().with_changes({"npc.count": 0})
        self.seating = Seating(Lobby(self.params))
        self.counts = Counts()

    def connect(self, **limits: float) -> ConnectionProtocol:
        lim = SessionLimits.for_tick_rate(TICK_RATE, **limits) if limits else self.limits
        return ConnectionProtocol(Session.open(lim, self.now), self.seating, self.counts)

    def joined(self, name: str = "p") -> tuple[ConnectionProtocol, Joined]:
        conn = self.connect()
        events = conn.receive_data(client_frame(join_frame(name)), self.now)
        assert isinstance(events[0], Joined)
        return conn, events[0]

    @property
    def room(self) -> Room:
        return next(iter(self.seating.lobby.rooms.values()))


def server_frames(conn: ConnectionProtocol) -> list[tuple[int, bytes]]:
    """Parse (and clear) the outbox: (opcode, payload) of each server frame."""
    out, data = [], b"".join(conn.outbox)
    conn.outbox.clear()
    while data:
        n, pos = data[1] & 0x7F, 2
        if n == 126:
            (n,), pos = struct.unpack("!H", data[2:4]), 4
        elif n == 127:
            (n,), pos = struct.unpack("!Q", data[2:10]), 10
        out.append((data[0] & 0x0F, data[pos:pos + n]))
        data = data[pos + n:]
    return out


def kick_and_close(conn: ConnectionProtocol) -> tuple[pb.Kick | None, int, str]:
    kick, code, reason = None, -1, ""
    for opcode, payload in server_frames(conn):
        if opcode == OP_BINARY:
            frame = pb.ServerFrame.FromString(payload)
            if frame.HasField("kick"):
                kick = frame.kick
        elif opcode == OP_CLOSE:
            code, reason = struct.unpack("!H", payload[:2])[0], payload[2:].decode()
    return kick, code, reason


# -- the shared hostile table ----------------------------------------------------------------


@pytest.mark.parametrize("attack", WIRE_ATTACKS, ids=[a.name for a in WIRE_ATTACKS])
def test_each_wire_attack_gets_its_close_code_reason_and_counted_label(attack: WireAttack):
    server = Server()
    conn = server.connect(**attack.limits)
    if attack.joined:
        conn.receive_data(client_frame(join_frame()), server.now)
        conn.outbox.clear()
    events = conn.receive_data(attack.wire(), server.now)
    closing = [e for e in events if isinstance(e, Closing)]
    assert conn.state is State.CLOSING and len(closing) == 1, events
    assert (conn.close_code, closing[0].code) == (attack.code, attack.code)
    assert attack.reason in conn.close_reason, conn.close_reason
    assert server.counts.frames_rejected.get(attack.label, 0) >= 1, server.counts.frames_rejected
    kick, code, reason = kick_and_close(conn)
    assert (code, reason) == (attack.code, conn.close_reason)
    if attack.code == 1008:
        assert kick is not None and kick.label == attack.label


# -- joining ------------------------------------------------------------------------------------


def test_a_join_seats_the_player_and_the_welcome_comes_from_the_room():
    server = Server()
    conn, joined = server.joined("ana")
    assert conn.state is State.JOINED and not joined.resumed
    assert conn.session.player_id == joined.player_id and conn.room is joined.room
    assert joined.room.seats[joined.player_id].name == "ana"


def test_a_resume_retakes_the_seat_after_a_drop():
    server = Server()
    first, joined = server.joined()
    token = joined.room.seats[joined.player_id].resume_token
    first.connection_lost()
    joined.room.disconnect(joined.player_id, server.now)
    second = server.connect()
    events = second.receive_data(client_frame(encode(resume=pb.Resume(
        protocol_version=PROTOCOL_VERSION, token=token))), server.now + 1)
    assert events == [Joined(joined.room, joined.player_id, joined.entity, True)]
    assert second.state is State.JOINED


def test_a_resume_with_an_unknown_token_or_after_the_grace_is_refused_for_good():
    server = Server()
    conn = server.connect()
    conn.receive_data(client_frame(encode(resume=pb.Resume(
        protocol_version=PROTOCOL_VERSION, token=b"\x00\x00\x00\x07" + b"x" * 16))),
        server.now)
    kick, code, reason = kick_and_close(conn)
    assert (code, kick.label, kick.retry) == (1008, "bad_resume", False)
    _, joined = server.joined()
    token = joined.room.seats[joined.player_id].resume_token
    joined.room.disconnect(joined.player_id, server.now)
    late = server.connect()
    late.receive_data(client_frame(encode(resume=pb.Resume(
        protocol_version=PROTOCOL_VERSION, token=token))),
        server.now + server.params.resume_grace_s)
    kick, code, reason = kick_and_close(late)
    assert (code, kick.label) == (1008, "bad_resume") and "expired" in reason


def test_a_resume_after_joining_is_refused():
    conn, joined = Server().joined()
    token = joined.room.seats[joined.player_id].resume_token
    conn.outbox.clear()
    conn.receive_data(client_frame(encode(resume=pb.Resume(
        protocol_version=PROTOCOL_VERSION, token=token))), 0.0)
    assert conn.close_label == "already_joined"


@pytest.mark.parametrize("kind", ["join", "resume"])
def test_join_and_resume_are_refused_while_draining_with_a_transient_kick(kind: str):
    server = Server()
    server.seating.draining = True
    conn = server.connect()
    frame = join_frame() if kind == "join" else encode(resume=pb.Resume(
        protocol_version=PROTOCOL_VERSION, token=b"x" * 20))
    conn.receive_data(client_frame(frame), server.now)
    kick, code, _ = kick_and_close(conn)
    assert code == 1001 and kick.label == "draining" and kick.retry and kick.retry_after_s


def test_a_full_server_refuses_with_a_kick_that_says_retry_later():
    server = Server(params=load_params().with_changes({"npc.count": 0,
                                                      "room.max_players": 1}))
    server.seating.lobby.max_rooms = 1
    server.joined()
    conn = server.connect()
    conn.receive_data(client_frame(join_frame("late")), server.now)
    kick, code, reason = kick_and_close(conn)
    assert (code, reason, kick.label, kick.retry) == (1008, "server full", "server_full", True)


def test_a_bad_name_is_a_permanent_refusal():
    conn = Server().connect()
    conn.receive_data(client_frame(join_frame("")), 0.0)
    kick, code, _ = kick_and_close(conn)
    assert code == 1008 and kick.label == "bad_join" and not kick.retry


def test_the_join_deadline_is_absolute_and_pings_do_not_extend_it():
    server = Server()
    conn = server.connect()
    deadline = server.now + server.limits.join_timeout_s
    conn.receive_data(client_frame(b"p", OP_PING), deadline - 0.1)
    assert conn.poll(deadline - 0.01) == []
    events = conn.poll(deadline)
    assert [type(e) for e in events] == [Closing] and events[0].label == "join_timeout"
    assert conn.close_code == 1008


def test_a_joined_connection_has_no_join_deadline():
    server = Server()
    conn, _ = server.joined()
    assert conn.poll(server.now + 1000) == [] and conn.state is State.JOINED


# -- playing ---------------------------------------------------------------------------------


def test_inputs_reach_the_room_and_a_ping_gets_a_pong_with_the_server_tick():
    server = Server()
    conn, joined = server.joined()
    conn.outbox.clear()
    conn.receive_data(client_frame(input_frame(input_cmd(1, move_x=1.0))), server.now)
    assert joined.room.seats[joined.player_id].last_queued_seq == 1
    conn.receive_data(client_frame(encode(ping=pb.Ping(client_time=7.0))), server.now)
    (opcode, payload), = server_frames(conn)
    pong = pb.ServerFrame.FromString(payload).pong
    assert opcode == OP_BINARY and pong.client_time == 7.0 and pong.server_time == server.now
    assert pong.held == 0.0  # read as it arrived


def test_a_ping_read_at_the_tick_is_answered_with_its_arrival_and_how_long_it_waited():
    server = Server()
    conn, _ = server.joined()
    conn.outbox.clear()
    arrived = server.now - 0.02
    conn.receive_data(client_frame(encode(ping=pb.Ping(client_time=7.0))), arrived, 0.02)
    (_, payload), = server_frames(conn)
    pong = pb.ServerFrame.FromString(payload).pong
    assert pong.server_time == arrived and pong.held == 0.02
    # The next read's Ping waited for nothing: the hold is per read, not remembered.
    conn.receive_data(client_frame(encode(ping=pb.Ping(client_time=8.0))), server.now)
    (_, payload), = server_frames(conn)
    assert pb.ServerFrame.FromString(payload).pong.held == 0.0


def test_a_websocket_ping_is_answered_with_its_payload():
    conn, _ = Server().joined()
    conn.outbox.clear()
    conn.receive_data(client_frame(b"abc", OP_PING), 0.0)
    assert server_frames(conn) == [(OP_PONG, b"abc")]


def test_a_pong_answering_our_ping_is_an_rtt_sample_and_a_forged_one_is_counted():
    server = Server()
    conn, joined = server.joined()
    ping = conn.session.pings.poll(server.now + 2)
    conn.receive_data(client_frame(ping, OP_PONG), server.now + 2.05)
    assert server.counts.rtt_samples == [pytest.approx(0.05)]
    assert joined.room.seats[joined.player_id].rtt_ms == pytest.approx(50.0)
    conn.receive_data(client_frame(b"forged", OP_PONG), server.now + 2.1)
    assert server.counts.frames_rejected == {"bad_pong": 1} and conn.state is State.JOINED


def test_leave_frees_the_seat_at_once_and_closes_with_1000_left():
    server = Server()
    conn, joined = server.joined()
    conn.outbox.clear()
    events = conn.receive_data(client_frame(encode(leave=pb.Leave())), server.now)
    assert events == [Closing(1000, "left", "left", False)]
    assert joined.player_id not in joined.room.seats
    kick, code, reason = kick_and_close(conn)
    assert (kick, code, reason) == (None, 1000, "left")  # not a policy close: no Kick


def test_invalid_inputs_are_counted_and_many_of_them_close_the_sender():
    server = Server()
    conn, _ = server.joined()
    bad = client_frame(input_frame(input_cmd(1, move_x=float("nan"))))
    conn.receive_data(bad, server.now)
    assert server.counts.inputs_rejected == {"non_finite": 1} and conn.state is State.JOINED
    for i in range(60):
        conn.receive_data(client_frame(input_frame(input_cmd(i + 2, move_x=float("inf")))),
                          server.now)
    assert conn.state is State.CLOSING and conn.close_label == "invalid_inputs"


def test_rejections_reported_by_the_room_after_a_tick_are_charged_the_same_way():
    server = Server()
    conn, _ = server.joined()
    assert conn.charge_rejections("out_of_range", 3, server.now) == []
    assert server.counts.inputs_rejected == {"out_of_range": 3}
    events = conn.charge_rejections("out_of_range", 1000, server.now)
    assert [e.label for e in events] == ["invalid_inputs"]


def test_a_bug_while_handling_a_frame_closes_that_client_with_1011():
    server = Server()
    conn, joined = server.joined()

    def broken(player_id: int, msg: pb.Input) -> list[str]:
        raise ZeroDivisionError("simulated bug")

    joined.room.submit = broken
    conn.receive_data(client_frame(input_frame(input_cmd(1))), server.now)
    assert (conn.close_code, conn.close_label) == (1011, "internal_error")


# -- budget: backlog versus flood ---------------------------------------------------------


def _inputs(first_seq: int, n: int) -> bytes:
    return b"".join(client_frame(input_frame(input_cmd(s))) for s in range(first_seq,
                                                                         first_seq + n))


def test_frames_queued_during_a_4_s_stall_arrive_at_once_and_are_a_backlog():
    server = Server()
    conn, _ = server.joined()
    t = server.now
    for i in range(30):  # a second of play at 30 Hz
        t += 1 / 30
        conn.receive_data(_inputs(i + 1, 1), t)
    # 4 s of silence (the server was paused, or the client's network stalled), then
    # everything the client sent meanwhile in one read: 120 inputs and 4 pongs.
    conn.receive_data(_inputs(31, 120) + client_frame(b"x" * 16, OP_PONG) * 4, t + 4.0)
    assert conn.state is State.JOINED
    assert server.counts.frames_rejected.get("rate_limited", 0) == 0
    assert server.counts.backlogs == 1  # counted (and logged) as a backlog


def test_a_flood_without_a_pause_is_still_closed():
    server = Server()
    conn, _ = server.joined()
    t, seq = server.now, 1
    for _ in range(30 * 5):  # 10 inputs per tick period: 10x the tick rate, for 5 s
        t += 1 / 30
        conn.receive_data(_inputs(seq, 10), t)
        seq += 10
        if conn.state is not State.JOINED:
            break
    assert conn.state is State.CLOSING and conn.close_label == "flood"
    assert t - server.now < 2.0  # closed within two seconds of simulated time


def test_a_backlog_bigger_than_its_silence_earned_is_dropped_and_counted():
    server = Server()
    conn, _ = server.joined()
    conn.receive_data(_inputs(1, 600), server.now + 1.0)  # 1 s silence, 5 s worth of input
    assert server.counts.frames_rejected["rate_limited"] > 0
    assert conn.close_label == "flood"


# -- closing -------------------------------------------------------------------------------


def test_close_sends_one_kick_and_one_close_and_is_idempotent():
    conn, _ = Server().joined()
    conn.outbox.clear()
    assert conn.close(1008, "kicked by admin", label="kicked") == [
        Closing(1008, "kicked by admin", "kicked", False)]
    assert conn.close(1008, "again", label="kicked") == []
    kick, code, reason = kick_and_close(conn)
    assert (code, reason, kick.label, kick.retry) == (1008, "kicked by admin", "kicked", True)


def test_a_kick_tells_the_client_how_long_its_ban_lasts():
    conn, _ = Server().joined()
    conn.outbox.clear()
    conn.close(1008, "kicked by admin", label="kicked", retry_after_s=90)
    kick, _, _ = kick_and_close(conn)
    assert (kick.retry, kick.retry_after_s) == (True, 90)


def test_a_permanent_refusal_says_do_not_retry():
    conn, _ = Server().joined()
    conn.outbox.clear()
    conn.close(1008, "protocol version 9 unsupported", label="bad_version")
    kick, _, _ = kick_and_close(conn)
    assert (kick.label, kick.retry) == ("bad_version", False)


def test_frames_after_our_close_are_ignored_until_the_peer_closes_too():
    server = Server()
    conn, joined = server.joined()
    conn.close(1008, "bye", label="kicked")
    conn.outbox.clear()
    assert conn.receive_data(client_frame(input_frame(input_cmd(5))), server.now) == []
    assert joined.room.seats[joined.player_id].last_queued_seq == 0
    events = conn.receive_data(client_frame(struct.pack("!H", 1008), OP_CLOSE), server.now)
    assert events == [Closed(1008)] and conn.state is State.CLOSED and conn.outbox == []


def test_a_peer_that_keeps_sending_after_our_close_is_not_read_forever():
    conn, _ = Server().joined()
    conn.close(1008, "bye", label="kicked")
    junk = client_frame(b"x" * 100, OP_PING) * 700  # 74 KB of frames, no Close
    events = conn.receive_data(junk[:30_000], 0.0) + conn.receive_data(junk[30_000:], 0.0)
    assert events == [Closed(1008)] and conn.state is State.CLOSED


def test_a_peer_close_is_echoed_and_its_code_kept():
    conn, _ = Server().joined()
    conn.outbox.clear()
    events = conn.receive_data(client_frame(struct.pack("!H", 4000) + b"bye", OP_CLOSE), 0.0)
    assert events == [Closed(4000)] and conn.peer_close_code == 4000
    assert conn.close_code is None
    assert server_frames(conn) == [(OP_CLOSE, struct.pack("!H", 4000))]


def test_every_kick_label_says_whether_to_retry():
    for label in ("bad_join", "bad_version", "replaced"):
        assert not KICKS[label][0], label
    for label in ("server_full", "draining", "kicked", "banned", "idle"):
        assert KICKS[label][0], label


def test_a_banned_name_is_refused_with_the_time_left_and_a_retry():
    server = Server()
    server.seating.lobby.bans.ban(server.now, name="mallory", address=None, seconds=30)
    conn = server.connect()
    events = conn.receive_data(client_frame(join_frame("mallory")), server.now + 10)
    assert isinstance(events[0], Closing) and events[0].label == "banned"
    kick, code, _ = kick_and_close(conn)
    assert (code, kick.label, kick.retry, kick.retry_after_s) == (1008, "banned", True, 20)


def test_an_address_ban_refuses_any_name_from_that_address():
    server = Server()
    server.seating.lobby.bans.ban(server.now, name=None, address="10.0.0.7", seconds=30)
    conn = ConnectionProtocol(Session.open(server.limits, server.now), server.seating,
                              server.counts, peer_ip="10.0.0.7")
    events = conn.receive_data(client_frame(join_frame("other")), server.now)
    assert isinstance(events[0], Closing) and events[0].label == "banned"
    ok = ConnectionProtocol(Session.open(server.limits, server.now), server.seating,
                            server.counts, peer_ip="10.0.0.8")
    assert isinstance(ok.receive_data(client_frame(join_frame("other")), server.now)[0], Joined)
