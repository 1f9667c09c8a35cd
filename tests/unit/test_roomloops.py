"""RoomLoops without a network: delivery into stand-in transports, the per-tick input
rejections a room reports, and the counters exported once per tick."""

from __future__ import annotations

import asyncio

from proto import tickwire_pb2 as pb
from server.clock import ManualClock
from server.connection import Connection
from server.lobby import Lobby
from server.metrics import Metrics
from server.protocol import ConnectionProtocol, Joined, State
from server.room import TickResult
from server.roomloops import RoomLoops
from server.session import Session, SessionLimits
from sim.params import load_params
from tests.wsframes import OP_PONG, client_frame, input_cmd, input_frame, join_frame


class Transport:
    """Stands in for an asyncio transport; `buffered` plays the kernel's send buffer."""

    def __init__(self) -> None:
        self.chunks: list[bytes] = []
        self.calls: list[list[bytes]] = []  # one entry per write/writelines: one syscall
        self.buffered = 0
        self.aborted = self.closed = False

    def write(self, data: bytes) -> None:
        self.chunks.append(bytes(data))
        self.calls.append([bytes(data)])

    def writelines(self, chunks) -> None:
        chunks = [bytes(chunk) for chunk in chunks]
        self.chunks.extend(chunks)
        self.calls.append(chunks)

    def get_write_buffer_size(self) -> int:
        return self.buffered

    def is_closing(self) -> bool:
        return self.aborted or self.closed

    def abort(self) -> None:
        self.aborted = True

    def close(self) -> None:
        self.closed = True


class World:
    def __init__(self, players: int = 2, changes: dict | None = None, **limits: float) -> None:
        self.clock = ManualClock(10.0)
        self.metrics = Metrics()
        self.lobby = Lobby(load_params().with_changes({"npc.count": 0, **(changes or {})}))
        self.draining = False
        self.connections: dict[int, Connection] = {}
        self.loops = RoomLoops(self.lobby, self.clock, self.metrics, self.connections)
        self.limits = SessionLimits.for_tick_rate(30, **limits)
        self.conns = [self._join(f"p{i}") for i in range(players)]
        self.room = next(iter(self.lobby.rooms.values()))

    def on_joined(self, conn: Connection, event: Joined) -> None:
        self.connections[event.player_id] = conn

    def _join(self, name: str) -> Connection:
        protocol = ConnectionProtocol(Session.open(self.limits, self.clock.now()), self,
                                      self.metrics.counts)
        conn = Connection(Transport(), protocol, self, self.clock, 2.0)
        conn.feed_data(client_frame(join_frame(name)))
        return conn


def run(coro_fn):
    async def main():
        return coro_fn()
    return asyncio.run(main())


def test_every_seat_gets_its_frames_and_a_snapshot_and_the_counts_are_plain_ints():
    def body():
        w = World(players=2)
        result = w.room.tick(w.clock.now())
        w.loops.deliver(result, w.clock.now())
        for conn in w.conns:
            sent = b"".join(conn.transport.chunks)
            assert sent.count(b"\x82") >= 2  # the Welcome and the snapshot, at least
        counts = w.metrics.counts
        assert counts.snapshots_sent == 2 and counts.bytes_sent > 0
        assert counts.keyframes_sent == 2  # nobody acked yet
    run(body)


def test_chunked_snapshots_are_counted_seat_by_seat():
    """With interest management each seat gets its own chunks (no shared group): every
    byte written is counted, and each seat's snapshot once."""
    def body():
        w = World(players=2, changes={"interest.enabled": True, "npc.count": 40})
        for conn in w.conns:
            conn.transport.chunks.clear()
        counts = w.metrics.counts
        bytes_before, sizes_before = counts.bytes_sent, sum(counts.snapshot_sizes.values())
        result = w.room.tick(w.clock.now())
        assert [d.chunks is not None for d in result.deliveries] == [True, True]
        w.loops.deliver(result, w.clock.now())
        written = sum(len(c) for conn in w.conns for c in conn.transport.chunks)
        assert counts.bytes_sent - bytes_before == written > 0
        assert counts.snapshots_sent == 2 and counts.keyframes_sent == 2
        assert sum(counts.snapshot_sizes.values()) - sizes_before == 2
    run(body)


def test_a_seat_over_the_high_water_mark_skips_and_is_aborted_after_the_stall():
    def body():
        w = World(players=1, send_high_water=100, stall_timeout_s=5.0)
        conn = w.conns[0]
        conn.transport.buffered = 1000
        w.loops.deliver(w.room.tick(w.clock.now()), w.clock.now())
        assert w.metrics.counts.snapshots_skipped == 1 and not conn.transport.aborted
        w.clock.advance(5.0)
        w.loops.deliver(w.room.tick(w.clock.now()), w.clock.now())
        assert conn.transport.aborted and conn.protocol.close_label == "stalled_reader"
    run(body)


def test_input_rejections_the_room_reports_after_a_tick_are_charged_to_their_sender():
    def body():
        w = World(players=2)
        bad, good = w.conns
        pid = bad.session.player_id
        w.loops.charge_input_rejections(TickResult(tick=1, deliveries=[], expired=[],
                                              input_rejections=[(pid, "non_finite", 3)]),
                                   w.clock.now())
        assert w.metrics.counts.inputs_rejected == {"non_finite": 3}
        assert bad.protocol.state is State.JOINED
        w.loops.charge_input_rejections(TickResult(tick=2, deliveries=[], expired=[],
                                              input_rejections=[(pid, "non_finite", 500)]),
                                   w.clock.now())
        assert bad.protocol.close_label == "invalid_inputs"
        assert good.protocol.state is State.JOINED  # nobody else pays
        kick = [c for c in bad.transport.chunks if c[:1] == b"\x82"][-1]
        frame = pb.ServerFrame.FromString(kick[2:])
        assert frame.kick.label == "invalid_inputs" and not frame.kick.retry
    run(body)


def test_pings_go_out_on_schedule_and_a_silent_peer_is_closed_as_idle():
    def body():
        w = World(players=1, ping_interval_s=1.0, idle_timeout_s=3.0, ping_timeout_s=100)
        conn = w.conns[0]
        for _ in range(4):
            w.clock.advance(1.0)
            w.loops.deliver(w.room.tick(w.clock.now()), w.clock.now())
        assert any(c[:1] == b"\x89" for c in conn.transport.chunks)  # a PING frame
        assert conn.protocol.close_label == "idle"
    run(body)



def test_a_due_ping_rides_in_the_snapshots_write_and_every_byte_is_counted_once():
    """One write per seat per tick, ping included; a skipped seat still gets its ping."""
    def body():
        w = World(players=2, ping_interval_s=1.0, send_high_water=100)
        sending, skipping = w.conns
        w.loops.deliver(w.room.tick(w.clock.now()), w.clock.now())  # join-time frames
        for conn in w.conns:  # answer the first pings: the next are due a second later
            (ping,) = [c for c in conn.transport.chunks if c[:1] == b"\x89"]
            conn.feed_data(client_frame(ping[2:], OP_PONG))
        skipping.transport.buffered = 1000  # over the high-water mark: snapshot skipped
        for conn in w.conns:
            conn.transport.calls.clear()
            conn.transport.chunks.clear()
        counts = w.metrics.counts
        before = (counts.bytes_sent, counts.snapshots_sent, counts.snapshots_skipped)
        w.clock.advance(1.0)
        w.loops.deliver(w.room.tick(w.clock.now()), w.clock.now())
        (call,) = sending.transport.calls
        assert call[0][:1] == b"\x82" and call[-1][:1] == b"\x89"  # snapshot, then PING
        assert [c[:1] for c in skipping.transport.chunks] == [b"\x89"]  # the ping alone
        written = sum(len(c) for conn in w.conns for c in conn.transport.chunks)
        after = (counts.bytes_sent, counts.snapshots_sent, counts.snapshots_skipped)
        assert [b - a for a, b in zip(before, after, strict=True)] == [written, 1, 1]
    run(body)


def test_a_peer_that_sends_inputs_but_never_answers_a_ping_is_closed_at_the_timeout():
    def body():
        w = World(players=1, ping_interval_s=1.0, ping_timeout_s=2.5, idle_timeout_s=100)
        conn = w.conns[0]
        w.loops.deliver(w.room.tick(w.clock.now()), w.clock.now())  # the first ping
        deadline = w.clock.now() + 2.5
        for seq in range(1, 20):
            w.clock.advance(0.5)
            conn.feed_data(client_frame(input_frame(input_cmd(seq))))  # alive, no pong
            w.loops.deliver(w.room.tick(w.clock.now()), w.clock.now())
            if conn.protocol.state is not State.JOINED:
                break
        assert conn.protocol.close_label == "ping_timeout"
        assert deadline < w.clock.now() <= deadline + 0.5
    run(body)
