"""The per-frame receive path and the per-seat delivery loop, in memory.

* µs per input frame, from the masked WebSocket bytes a browser writes to the room's
  buffers: `ConnectionProtocol.receive_data` (frame parser, budget, protobuf parse, state
  rules, `Room.submit`), one frame per read as at 30 Hz, with the commands checked once
  per tick as the gateway's rooms do (`defer_input_checks`; the per-tick check is in
  `room_tick`). Divide the round by FRAMES.
* µs per seat for delivery: `RoomLoops.deliver` over a 200-player tick of the arena
  scenario, into transports that only count bytes. Divide by the number of seats.
* µs per tick for exporting what one such tick counted (`Metrics.flush`: 200 snapshots
  into the snapshot-size histogram, 7 RTT samples, the byte and snapshot counters).

Figures are data, never asserts (bench/README.md).

Run: .venv/bin/pytest bench/test_bench_receive.py --benchmark-enable --benchmark-only
"""

from __future__ import annotations

import asyncio
import math
import os
import struct

import pytest
from pytest_benchmark.fixture import BenchmarkFixture

from proto import PROTOCOL_VERSION
from proto import tickwire_pb2 as pb
from server.clock import ManualClock
from server.connection import Connection
from server.lobby import Lobby
from server.metrics import Metrics, parse_metrics
from server.protocol import ConnectionProtocol, Joined
from server.room import Room, TickResult
from server.roomloops import RoomLoops
from server.session import Session, SessionLimits
from sim.params import Params

FRAMES = 1000


def masked(payload: bytes) -> bytes:
    """One masked binary frame, as a browser writes it."""
    mask = os.urandom(4)
    header = struct.pack("!BB", 0x82, 0x80 | len(payload))
    return header + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(payload))


class Seating:
    def __init__(self, params: Params) -> None:
        # As the gateway builds it: commands checked once per tick (deferred).
        self.lobby = Lobby(params, defer_input_checks=True)
        self.draining = False


def input_frames(n: int) -> list[bytes]:
    """What the arena bot sends: one command per tick, the ack, a unit direction."""
    out = []
    for seq in range(1, n + 1):
        angle = seq / 60.0
        msg = pb.ClientFrame(input=pb.Input(ack_tick=0, cmds=[pb.InputCmd(
            seq=seq, client_tick=seq, move_x=math.cos(angle), move_y=math.sin(angle),
            aim=angle % (2 * math.pi) - math.pi)]))
        out.append(masked(msg.SerializeToString()))
    return out


def test_bench_receive_input_frame(benchmark: BenchmarkFixture, arena_params: Params) -> None:
    frames = input_frames(FRAMES)
    join = masked(pb.ClientFrame(join=pb.Join(protocol_version=PROTOCOL_VERSION,
                                              name="bench")).SerializeToString())
    metrics = Metrics()
    limits = SessionLimits.for_tick_rate(arena_params.tick_rate)

    def setup() -> tuple[tuple, dict]:
        seating = Seating(arena_params)
        conn = ConnectionProtocol(Session.open(limits, 0.0), seating, metrics.counts)
        conn.receive_data(join, 0.0)
        return (conn,), {}

    def feed(conn: ConnectionProtocol) -> ConnectionProtocol:
        dt = 1.0 / 30
        now = 0.0
        receive = conn.receive_data
        for data in frames:  # one frame per read, a tick period apart
            now += dt
            receive(data, now)
        return conn

    conn = benchmark.pedantic(feed, setup=setup, rounds=30, iterations=1)
    seat = conn.room.seats[conn.session.player_id]
    assert seat.queue  # validates and queues what the frames buffered (deferred checks)
    assert seat.last_queued_seq == FRAMES and conn.close_code is None  # all accepted
    assert not conn.room.inputs_rejected
    benchmark.extra_info["frames_per_round"] = FRAMES
    if benchmark.stats:  # None when benchmarks are disabled (the test suite's smoke run)
        benchmark.extra_info["us_per_frame"] = round(
            benchmark.stats.stats.median / FRAMES * 1e6, 3)


class CountingTransport:
    """Stands in for an asyncio transport: takes bytes, never backs up."""

    def __init__(self) -> None:
        self.bytes = 0

    def write(self, data: bytes) -> None:
        self.bytes += len(data)

    def writelines(self, chunks) -> None:
        for chunk in chunks:
            self.bytes += len(chunk)

    def get_write_buffer_size(self) -> int:
        return 0

    def is_closing(self) -> bool:
        return False

    def abort(self) -> None:
        pass

    def close(self) -> None:
        pass


def deliver_world(params: Params, players: int) -> tuple[RoomLoops, TickResult, Metrics]:
    """`players` joined connections over counting transports, and the 12th tick's result
    of their room (every seat acks two ticks back, as in the arena): what `deliver` gets."""
    clock = ManualClock(0.0)
    metrics = Metrics()
    lobby = Lobby(params.with_changes({"room.max_players": players}), defer_input_checks=True)
    connections: dict[int, Connection] = {}
    seating = Seating(params)
    seating.lobby = lobby
    limits = SessionLimits.for_tick_rate(params.tick_rate, ping_interval_s=1e9)

    class Hooks:
        def on_joined(self, conn: Connection, event: Joined) -> None:
            connections[event.player_id] = conn

    async def build() -> tuple[Room, RoomLoops]:
        loops = RoomLoops(lobby, clock, metrics, connections)
        join = pb.ClientFrame(join=pb.Join(protocol_version=PROTOCOL_VERSION, name="b"))
        for _ in range(players):
            proto = ConnectionProtocol(Session.open(limits, 0.0), seating, metrics.counts)
            conn = Connection(CountingTransport(), proto, Hooks(), clock, 2.0)
            conn.feed_data(masked(join.SerializeToString()))
        return next(iter(lobby.rooms.values())), loops

    room, loops = asyncio.run(build())
    for tick in range(1, 12):  # everyone acks two ticks back, as in the arena
        for pid in list(room.seats):
            room.submit(pid, pb.Input(ack_tick=max(0, tick - 2), cmds=[pb.InputCmd(
                seq=tick, client_tick=tick, move_x=1.0)]))
        result = room.tick(tick / 30)
    return loops, result, metrics


@pytest.mark.parametrize("players", [200])
def test_bench_deliver_per_seat(benchmark: BenchmarkFixture, arena_params: Params,
                                players: int) -> None:
    loops, result, metrics = deliver_world(arena_params, players)
    benchmark.pedantic(loops.deliver, args=(result, 12 / 30), rounds=200, iterations=1)
    assert len(result.deliveries) == players
    assert metrics.counts.snapshots_sent and metrics.counts.snapshots_sent % players == 0
    benchmark.extra_info["seats"] = players
    if benchmark.stats:
        benchmark.extra_info["us_per_seat"] = round(
            benchmark.stats.stats.median / players * 1e6, 3)


def test_bench_metrics_flush_per_tick(benchmark: BenchmarkFixture) -> None:
    metrics = Metrics()
    counts = metrics.counts

    def one_tick() -> tuple[tuple, dict]:
        # What a 200-seat tick leaves: two snapshot sizes (two baselines), ~200/30 pongs.
        counts.snapshot_sizes[1317] = 150
        counts.snapshot_sizes[1402] = 50
        counts.rtt_samples.extend([0.004, 0.006, 0.005, 0.012, 0.004, 0.007, 0.005])
        counts.bytes_sent += 200 * 1350
        counts.bytes_received += 200 * 40
        counts.snapshots_sent += 200
        return (), {}

    benchmark.pedantic(metrics.flush, setup=one_tick, rounds=300, iterations=1)
    assert not counts.snapshot_sizes and not counts.rtt_samples
    samples = parse_metrics(metrics.render()[0].decode())
    ticks = samples["tickwire_snapshots_sent_total"] / 200
    assert samples["tickwire_snapshot_bytes_count"] == 200 * ticks
    assert samples["tickwire_rtt_seconds_count"] == 7 * ticks
