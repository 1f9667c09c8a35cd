"""The gateway against real clients on 127.0.0.1: routes, mirrors, inputs, hostile frames,
slow readers, liveness and RTT through a delaying proxy."""

from __future__ import annotations

import asyncio
import math
import statistics

import aiohttp
import pytest

from client_demo.client import Client
from proto import codec
from proto import tickwire_pb2 as pb
from server.metrics import parse_metrics
from tests.integration.conftest import RawWebSocket, make_params, wait_until


async def fetch(url: str) -> tuple[int, str]:
    async with aiohttp.ClientSession() as http, http.get(url) as resp:
        return resp.status, await resp.text()


async def test_http_routes_report_health_rooms_and_metrics_functional(start_server):
    running = await start_server()
    async with Client(running.ws_url, "alice") as alice:
        await alice.next_snapshot()
        status, _ = await fetch(running.http_url + "/healthz")
        assert status == 200
        async with aiohttp.ClientSession() as http:
            health = await (await http.get(running.http_url + "/healthz")).json()
            rooms = await (await http.get(running.http_url + "/rooms")).json()
        assert health["status"] == "ok"
        assert health["players"] == 1 and health["rooms"] == 1 and health["tick_rate"] == 30
        assert rooms[0]["players"] == 1 and rooms[0]["capacity"] == 32
        assert rooms[0]["tick"] > 0 and rooms[0]["seats"][0]["player_id"] == alice.player_id
        assert "name" not in rooms[0]["seats"][0]  # names only with the admin token
        _, text = await fetch(running.http_url + "/metrics")
    for name in ("tickwire_tick_duration_seconds", "tickwire_tick_jitter_seconds",
                 "tickwire_tick_overruns_total", "tickwire_ticks_skipped_total",
                 "tickwire_players", "tickwire_snapshot_bytes", "tickwire_bytes_sent_total",
                 "tickwire_snapshots_skipped_total", "tickwire_rtt_seconds",
                 "tickwire_frames_rejected_total", "tickwire_inputs_rejected_total"):
        assert name in text
    samples = parse_metrics(text)
    assert samples["tickwire_snapshots_sent_total"] > 0
    assert samples["tickwire_bytes_sent_total"] > 0


async def test_every_client_mirror_equals_the_server_state_for_the_same_tick_functional(
        start_server):
    running = await start_server()
    clients = [Client(running.ws_url, f"p{i}") for i in range(3)]
    for c in clients:
        await c.connect()
    try:
        for step in range(45):
            for i, c in enumerate(clients):
                angle = step / 7 + i
                await c.send_input(math.cos(angle), math.sin(angle), aim=angle,
                                   fire=step % 10 == i)
            await clients[0].next_snapshot()
        await asyncio.sleep(0.1)
        room = next(iter(running.gateway.lobby.rooms.values()))
        for c in clients:
            common = [t for t in c.mirror.states if room.history.get(t) is not None]
            assert len(common) >= 20, "too few ticks in both the client and the server ring"
            for tick in common:
                assert codec.states_equal(c.mirror.states[tick], room.history.get(tick)), tick
            assert c.stats.decode_errors == 0
            # Once its acks reach the server, the client gets deltas, not keyframes (how
            # many keyframes come first depends on scheduling, so only the end is checked).
            assert c.last_baseline_tick != 0
            assert c.stats.keyframes < c.stats.snapshots / 2
    finally:
        for c in clients:
            await c.close()


async def test_inputs_move_the_sending_players_entity_and_no_other_functional(start_server):
    running = await start_server(make_params(**{"npc.count": 0}))
    async with Client(running.ws_url, "mover") as mover, Client(running.ws_url, "still") as still:
        await mover.next_snapshot()
        mover_start, still_start = mover.own_position(), still.own_position()
        direction = -1.0 if mover_start[0] > 500 else 1.0
        for _ in range(20):
            await mover.send_input(direction, 0.0)
            await still.send_input(0.0, 0.0)
            await mover.next_snapshot()
        await wait_until(lambda: mover.last_input_seq >= 20)
        await mover.next_snapshot()
        moved = mover.own_position()
        assert (moved[0] - mover_start[0]) * direction > 20.0  # units, ~0.6 s at speed
        assert moved[1] == pytest.approx(mover_start[1], abs=0.5)
        assert mover.mirror.position(still.entity) == still_start
        # Both players see the same world for the same tick.
        common = set(still.mirror.states) & set(mover.mirror.states)
        assert common
        tick = max(common)
        assert codec.states_equal(still.mirror.states[tick], mover.mirror.states[tick])


def _cmd(seq: int, **values: float) -> pb.InputCmd:
    return pb.InputCmd(seq=seq, **values)


async def _garbage(c: Client) -> None:
    await c.send_raw(b"\xff\xff\xff\xff")


async def _empty(c: Client) -> None:
    await c.send_raw(b"")


async def _text(c: Client) -> None:
    await c.ws.send_str("hello")


async def _oversize(c: Client) -> None:
    await c.send_raw(pb.ClientFrame(join=pb.Join(name="x" * 6000)).SerializeToString())


async def _second_join(c: Client) -> None:
    await c.send_raw(pb.ClientFrame(join=pb.Join(protocol_version=1, name="again"))
                     .SerializeToString())


async def _non_finite_inputs(c: Client) -> None:
    for seq in range(1, 200):
        bad = _cmd(seq, move_x=float("nan"), aim=float("inf"))
        if not await _try_send(c, pb.ClientFrame(input=pb.Input(cmds=[bad]))):
            return
        await asyncio.sleep(0.01)


async def _try_send(c: Client, frame: pb.ClientFrame) -> bool:
    """Send unless the server already closed us (the point of these tests)."""
    if c.closed.is_set() or c.ws.closed:
        return False
    try:
        await c.send_raw(frame.SerializeToString())
    except aiohttp.ClientConnectionResetError:
        return False
    return True


async def _flood(c: Client) -> None:
    frame = pb.ClientFrame(ping=pb.Ping(client_time=1.0))
    for _ in range(5000):
        if not await _try_send(c, frame):
            return


BAD_INPUT = [
    # (name, action, expected close code, frames_rejected / inputs_rejected label)
    ("garbage", _garbage, 1007, 'tickwire_frames_rejected_total{reason="invalid_protobuf"}'),
    ("empty", _empty, 1008, 'tickwire_frames_rejected_total{reason="empty_frame"}'),
    ("text", _text, 1003, 'tickwire_frames_rejected_total{reason="text_frame"}'),
    ("oversize", _oversize, 1009, 'tickwire_frames_rejected_total{reason="too_big"}'),
    ("second_join", _second_join, 1008, 'tickwire_frames_rejected_total{reason="already_joined"}'),
    ("non_finite", _non_finite_inputs, 1008,
     'tickwire_inputs_rejected_total{reason="non_finite"}'),
    ("flood", _flood, 1008, 'tickwire_frames_rejected_total{reason="rate_limited"}'),
]


@pytest.mark.parametrize(("case", "action", "code", "counter"), BAD_INPUT,
                         ids=[c[0] for c in BAD_INPUT])
async def test_bad_input_closes_only_the_sender_with_a_code_and_a_counted_reason_functional(
        start_server, case, action, code, counter):
    running = await start_server()
    async with Client(running.ws_url, "bystander") as bystander, \
            Client(running.ws_url, "hostile", ping_interval_s=0) as hostile:
        await bystander.next_snapshot()
        before = bystander.stats.snapshots
        await action(hostile)
        got_code, reason = await hostile.wait_closed(timeout=10)
        assert got_code == code
        assert reason, "the close carries a reason"
        assert await running.metric(counter) >= 1
        # The bystander keeps receiving snapshots and stays connected.
        for _ in range(10):
            await bystander.send_input(0.0, 0.0)
            await bystander.next_snapshot()
        assert bystander.stats.snapshots >= before + 10
        assert not bystander.closed.is_set()
    assert await running.metric("tickwire_tick_errors_total") == 0


async def test_protocol_violations_before_join_are_refused_with_1008_functional(start_server):
    running = await start_server()
    cases = [
        (pb.ClientFrame(input=pb.Input(ack_tick=0)), "before Join"),
        (pb.ClientFrame(join=pb.Join(protocol_version=99, name="x")), "protocol version"),
        (pb.ClientFrame(join=pb.Join(protocol_version=1, name="   ")), "name"),
        (pb.ClientFrame(resume=pb.Resume(protocol_version=1, token=b"\x00" * 20)), "resume"),
    ]
    async with aiohttp.ClientSession() as http:
        for frame, expected in cases:
            ws = await http.ws_connect(running.ws_url)
            await ws.send_bytes(frame.SerializeToString())
            kick = None
            while True:
                msg = await ws.receive(timeout=5)
                if msg.type == aiohttp.WSMsgType.BINARY:
                    parsed = pb.ServerFrame()
                    parsed.ParseFromString(msg.data)
                    kick = parsed.kick
                else:
                    break
            assert ws.close_code == 1008
            assert kick is not None and kick.code == 1008 and expected in kick.reason
            assert expected in msg.extra


async def test_a_socket_that_never_joins_is_closed_after_the_join_deadline_functional(
        start_server):
    running = await start_server(join_timeout_s=0.3)
    raw = await RawWebSocket.connect(running.port)
    code, reason = await raw.read_close(timeout=5)
    assert code == 1008 and "Join" in reason
    raw.abort()


async def test_a_client_that_answers_no_pings_is_closed_and_its_seat_kept_for_resume_functional(
        start_server):
    running = await start_server(ping_interval_s=0.1, ping_timeout_s=0.5)
    raw = await RawWebSocket.connect(running.port)
    raw.send(pb.ClientFrame(join=pb.Join(protocol_version=1, name="mute"))
             .SerializeToString())
    code, reason = await raw.read_close(timeout=5)  # reads (and ignores) pings
    assert code == 1001 and "pong" in reason
    raw.abort()
    room = next(iter(running.gateway.lobby.rooms.values()))
    await wait_until(lambda: all(not s.connected for s in room.seats.values()))
    assert len(room.seats) == 1  # kept for the resume grace period


@pytest.mark.parametrize("high_water", [16 * 1024, 256 * 1024], ids=["16KiB", "default"])
async def test_a_reader_that_stops_reading_skips_snapshots_is_closed_and_slows_nobody_functional(
        start_server, high_water):
    # 1000 NPCs make every keyframe ~7 KiB; the stalled client never acks, so it gets one
    # keyframe per tick until its socket buffers fill up. With the default mark (256 KiB)
    # asyncio has long paused writing (at 64 KiB): the close must not wait for a drain.
    params = make_params(**{"npc.count": 1000, "world.capacity": 2048})
    running = await start_server(params, send_high_water=high_water, stall_timeout_s=1.0,
                                 socket_send_buffer=16 * 1024)
    async with Client(running.ws_url, "reader") as reader:
        slow = await RawWebSocket.connect(running.port, rcvbuf=4096)
        slow.stop_reading()
        slow.send(pb.ClientFrame(join=pb.Join(protocol_version=1, name="slow"))
                  .SerializeToString())
        await slow.writer.drain()
        await wait_until(lambda: len(running.gateway.connections) == 2)
        first = len(reader.stats.snapshot_ticks)
        reader_conn = running.gateway.connections[reader.player_id]
        await wait_until(lambda: len(running.gateway.connections) == 1, timeout=20)
        for _ in range(15):  # the reader plays on after the close
            await reader.send_input(0.0, 0.0)
            await reader.next_snapshot()
        # Nobody slowed down: the reader got every tick the room ran, none skipped for it.
        ticks = reader.stats.snapshot_ticks[first:]
        assert ticks == list(range(ticks[0], ticks[0] + len(ticks)))
        assert reader_conn.session.outbound.skipped == 0
        # The stalled seat waits for a resume like any dropped player, and its task is gone.
        room = next(iter(running.gateway.lobby.rooms.values()))
        slow_seat = next(s for s in room.seats.values() if s.name == "slow")
        assert not slow_seat.connected
        assert running.gateway.per_ip.open["127.0.0.1"] == 1
        slow.abort()
    assert await running.metric('tickwire_snapshots_skipped_total{reason="backpressure"}') > 0
    assert await running.metric('tickwire_disconnects_total{code="1008"}') >= 1


class DelayProxy:
    """A TCP proxy on 127.0.0.1 that delays every chunk by `delay_s` in each direction."""

    def __init__(self, target_port: int, delay_s: float) -> None:
        self.target_port = target_port
        self.delay_s = delay_s
        self.server: asyncio.base_events.Server | None = None
        self.tasks: set[asyncio.Task] = set()

    async def start(self) -> int:
        self.server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        return self.server.sockets[0].getsockname()[1]

    async def close(self) -> None:
        for task in self.tasks:
            task.cancel()
        if self.server is not None:
            self.server.close()

    async def _accept(self, reader, writer) -> None:
        up_r, up_w = await asyncio.open_connection("127.0.0.1", self.target_port)
        for src, dst in ((reader, up_w), (up_r, writer)):
            task = asyncio.create_task(self._pipe(src, dst))
            self.tasks.add(task)

    async def _pipe(self, src, dst) -> None:
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue = asyncio.Queue()

        async def release() -> None:
            while True:
                due, chunk = await queue.get()
                await asyncio.sleep(max(0.0, due - loop.time()))
                if not chunk:
                    dst.close()
                    return
                dst.write(chunk)

        sender = asyncio.create_task(release())
        self.tasks.add(sender)
        while True:
            chunk = await src.read(65536)
            queue.put_nowait((loop.time() + self.delay_s, chunk))
            if not chunk:
                return


async def test_rtt_reported_by_the_server_matches_delay_added_by_a_proxy_functional(
        start_server):
    running = await start_server(ping_interval_s=0.1)
    proxy = DelayProxy(running.port, delay_s=0.040)
    port = await proxy.start()
    try:
        async with Client(f"ws://127.0.0.1:{port}/ws", "far") as far:
            for _ in range(60):  # 2 s at 30 Hz: ~20 pings
                await far.send_input(0.0, 0.0)
                await far.next_snapshot()
            reported = far.stats.server_rtt_ms[-10:]
    finally:
        await proxy.close()
    # 40 ms each way: the round trip is never less than the 80 ms the proxy adds (how
    # much more is a timing, measured in bench/test_bench_rtt.py, not asserted here).
    assert statistics.median(reported) >= 79.0
    rtt_count = await running.metric("tickwire_rtt_seconds_count")
    assert rtt_count >= 10


async def test_after_the_upgrade_reads_skip_aiohttp_and_a_close_still_reaches_it_functional(
        start_server):
    """Once upgraded, the transport's protocol hands each read straight to the
    connection's `feed_data`; aiohttp's handler still hears of the lost transport, so
    the request ends and the registry forgets the player."""
    running = await start_server()
    gateway = running.gateway
    alice = Client(running.ws_url, "alice")
    await alice.connect()
    conn = gateway.connections[alice.player_id]
    reads = conn.transport.get_protocol()
    assert reads.data_received == conn.feed_data  # no aiohttp layer per read
    room = conn.room
    assert room is not None
    acked_before = room.seats[alice.player_id].acked_tick
    for _ in range(5):
        await alice.send_input(1.0, 0.0)
        await alice.next_snapshot()
    await wait_until(lambda: room.seats[alice.player_id].acked_tick > acked_before)
    await alice.close()
    await wait_until(lambda: alice.player_id not in gateway.connections)
    await wait_until(lambda: conn.done.done())
    assert conn not in gateway.sockets
