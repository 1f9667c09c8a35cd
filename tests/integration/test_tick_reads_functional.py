"""Reads at the tick (`server.tickreads`): a seated client's socket is read once per tick,
each read handled at the kernel's arrival time; every close path goes back to reads on
arrival first and leaves no descriptor behind."""

from __future__ import annotations

import asyncio
import os
import socket
import struct
import time

import aiohttp
import pytest

from client_demo.client import Client
from proto import PROTOCOL_VERSION
from proto import tickwire_pb2 as pb
from server.errors import CLOSE_POLICY
from server.tickreads import READ_BYTES, SeatPoller, TickReads
from tests.integration.conftest import RawWebSocket, wait_until


def _open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


@pytest.fixture
def tcp_pair():
    """A connected loopback TCP pair (server side non-blocking, as a transport's is)."""
    listener = socket.create_server(("127.0.0.1", 0))
    client = socket.create_connection(listener.getsockname())
    server, _ = listener.accept()
    server.setblocking(False)
    listener.close()
    yield client, server
    client.close()
    server.close()


# -- TickReads on its own ------------------------------------------------------------------


def test_a_read_returns_the_bytes_with_their_kernel_arrival_on_the_servers_clock(tcp_pair):
    client, server = tcp_pair
    reads = TickReads(server.fileno(), now=100.0)
    try:
        assert reads.read(100.0, time.time()) is None  # nothing waiting
        sent_at = time.time()
        client.sendall(b"hello")
        got = None
        for _ in range(200):  # bounded: loopback delivers at once
            got = reads.read(105.0, time.time())
            if got is not None:
                break
        assert got is not None
        data, arrival = got
        read_at = time.time()
        assert data == b"hello"
        # The arrival is the bytes' age on the wall clock, taken back from the server's
        # `now`: no earlier than when they were sent, no later than when they were read.
        assert 105.0 - (read_at - sent_at) <= arrival <= 105.0
        assert reads.last_arrival == arrival
    finally:
        reads.close()


@pytest.fixture(scope="module", autouse=True)
def _timestamps_kept_on():
    """One socket asking for receive timestamps for the whole module, and the wait until
    the kernel gives them. The kernel turns them on and off for the whole system (a static
    key switched by deferred work), a few milliseconds after the first socket asks and
    after the last one is closed. Without this, a test reading through the gateway could
    run before they are on and see every arrival as "now" (held 0)."""
    listener = socket.create_server(("127.0.0.1", 0))
    client = socket.create_connection(listener.getsockname())
    server, _ = listener.accept()
    listener.close()
    server.setblocking(False)
    keeper = TickReads(server.fileno(), now=0.0)
    try:
        _until_timestamped(client, keeper)
        yield
    finally:
        keeper.close()
        client.close()
        server.close()


def _until_timestamped(client: socket.socket, reads: TickReads) -> None:
    """Wait (bounded) until reads carry the kernel's time: the kernel turns receive
    timestamps on a moment after the first socket asks (a deferred static key); until
    then a read is taken as arriving at `now`."""
    for _ in range(250):  # 5 s
        client.sendall(b"w")
        time.sleep(0.01)  # the wall clock read after the bytes arrived
        reads.last_arrival = 0.0  # an untimed read took `now`: it must not hold the next
        while (got := reads.read(1000.0, time.time())) is None:
            pass
        if got[1] < 1000.0:
            reads.last_arrival = 0.0
            return
        time.sleep(0.01)
    raise AssertionError("no receive timestamps within 5 s")


def test_a_stepped_wall_clock_never_moves_an_arrival_before_the_last_nor_after_now(
        tcp_pair):
    client, server = tcp_pair
    reads = TickReads(server.fileno(), now=50.0)
    try:
        _until_timestamped(client, reads)
        reads.last_arrival = 50.0
        client.sendall(b"a")
        while (got := reads.read(60.0, time.time() + 3600.0)) is None:  # clock stepped on
            pass
        assert got == (b"a", 50.0)  # an hour "old": held at the previous arrival
        client.sendall(b"b")
        while (got := reads.read(70.0, time.time() - 3600.0)) is None:  # stepped back
            pass
        assert got == (b"b", 70.0)  # "from the future": taken as arriving now
    finally:
        reads.close()


def test_one_read_takes_at_most_read_bytes_and_the_rest_waits(tcp_pair):
    client, server = tcp_pair
    client.setblocking(False)
    reads = TickReads(server.fileno(), now=0.0)
    try:
        sent = 0
        try:
            while sent < 3 * READ_BYTES:
                sent += client.send(b"x" * (3 * READ_BYTES - sent))
        except BlockingIOError:
            pass
        assert sent > READ_BYTES
        while (got := reads.read(1.0, time.time())) is None:
            pass
        assert 0 < len(got[0]) <= READ_BYTES
        assert reads.read(1.0, time.time()) is not None  # more is waiting
    finally:
        reads.close()


def test_end_of_stream_reads_empty_and_a_reset_raises(tcp_pair):
    client, server = tcp_pair
    reads = TickReads(server.fileno(), now=0.0)
    try:
        client.shutdown(socket.SHUT_WR)
        while (got := reads.read(1.0, time.time())) is None:
            pass
        assert got[0] == b""
    finally:
        reads.close()
    listener = socket.create_server(("127.0.0.1", 0))
    other = socket.create_connection(listener.getsockname())
    accepted, _ = listener.accept()
    listener.close()
    accepted.setblocking(False)
    reads = TickReads(accepted.fileno(), now=0.0)
    try:
        other.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        other.close()  # linger 0: a reset
        with pytest.raises(OSError):
            for _ in range(1000):
                if reads.read(1.0, time.time()) is not None:
                    break
    finally:
        reads.close()
        accepted.close()


def test_closing_the_reads_closes_only_their_duplicate_descriptor(tcp_pair):
    client, server = tcp_pair
    before = _open_fds()
    reads = TickReads(server.fileno(), now=0.0)
    assert _open_fds() == before + 1
    reads.close()
    assert _open_fds() == before
    client.sendall(b"still open")
    server.setblocking(True)
    server.settimeout(5.0)
    assert server.recv(64) == b"still open"


# -- SeatPoller: which seats have bytes waiting ---------------------------------------------


def _eventually_ready(poller: SeatPoller, want: list) -> list:
    """poller.ready() once it reports `want` (loopback delivers at once; bounded)."""
    got: list = []
    for _ in range(200):
        got = poller.ready()
        if got == want:
            break
        time.sleep(0.001)
    return got


def test_the_poller_reports_only_the_seats_with_bytes_waiting_until_they_are_read():
    pairs = [socket.socketpair() for _ in range(3)]
    poller: SeatPoller[str] = SeatPoller()
    reads = [TickReads(ours.fileno(), 0.0, poller, f"seat{i}")
             for i, (ours, _) in enumerate(pairs)]
    try:
        assert len(poller) == 3
        assert poller.ready() == []
        pairs[1][1].sendall(b"input")
        assert _eventually_ready(poller, ["seat1"]) == ["seat1"]
        assert poller.ready() == ["seat1"]  # level-triggered: still there until read
        assert reads[1].read(1.0, time.time())[0] == b"input"
        assert poller.ready() == []
        pairs[2][1].close()  # end of stream is something to read too
        assert _eventually_ready(poller, ["seat2"]) == ["seat2"]
        assert reads[2].read(1.0, time.time())[0] == b""
    finally:
        for r in reads:
            r.close()
        poller.close()
        for ours, theirs in pairs:
            ours.close()
            theirs.close()


def test_a_closed_read_leaves_the_poller_though_its_socket_stays_open(tcp_pair):
    """epoll keys a registration by the open file, which the transport's descriptor keeps
    open: a duplicate closed while registered would still be reported. close() removes
    it first."""
    client, server = tcp_pair
    poller: SeatPoller[str] = SeatPoller()
    reads = TickReads(server.fileno(), 0.0, poller, "seat")
    reads.close()
    assert len(poller) == 0
    client.sendall(b"after the close")
    time.sleep(0.01)  # loopback: the bytes are in; a stale registration would now fire
    assert poller.ready() == []
    assert server.recv(64) == b"after the close"  # the transport's descriptor still reads
    poller.close()


def test_a_room_closed_first_leaves_its_seats_closable_and_refuses_new_ones(tcp_pair):
    _, server = tcp_pair
    poller: SeatPoller[str] = SeatPoller()
    reads = TickReads(server.fileno(), 0.0, poller, "seat")
    poller.close()  # the room was disposed of before its last seat left
    before = _open_fds()
    reads.close()
    assert _open_fds() == before - 1  # its duplicate, nothing else
    with pytest.raises(ValueError):
        TickReads(server.fileno(), 0.0, poller, "late")
    assert _open_fds() == before - 1  # the refused one's duplicate is closed too


# -- through the gateway -------------------------------------------------------------------


async def _join(ws: aiohttp.ClientWebSocketResponse, name: str) -> None:
    join = pb.ClientFrame(join=pb.Join(protocol_version=PROTOCOL_VERSION, name=name))
    await ws.send_bytes(join.SerializeToString())


async def _frames(ws: aiohttp.ClientWebSocketResponse, kind: str,
                  timeout: float = 5.0) -> pb.ServerFrame:
    """The next ServerFrame of `kind` (bounded wait)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        msg = await ws.receive(timeout=max(0.01, deadline - loop.time()))
        assert msg.type == aiohttp.WSMsgType.BINARY, msg
        frame = pb.ServerFrame.FromString(msg.data)
        if frame.WhichOneof("kind") == kind:
            return frame


@pytest.mark.parametrize("reads_at_tick", [True, False])
async def test_a_pong_says_how_long_the_ping_waited_for_the_tick_functional(
        start_server, reads_at_tick):
    """Read at the tick, a Ping is handled at its arrival (`server_time`) and answered
    when the room's loop reads it: arrival + `held` is the time of that read, the
    pre-read up to a third of a period before the tick whose snapshot follows the Pong,
    or that tick's own read. Read on arrival, nothing waits."""
    # One server ping, answered before the Pings below: while ours is out, the socket is
    # read on arrival (its pong is timed exactly), and no other comes for 60 s.
    running = await start_server(config_overrides={"reads_at_tick": reads_at_tick},
                                 ping_interval_s=60.0)
    async with aiohttp.ClientSession() as http, http.ws_connect(running.ws_url) as ws:
        await _join(ws, "pinger")
        welcome = (await _frames(ws, "welcome")).welcome
        conn = running.gateway.connections[welcome.player_id]
        assert conn.reads_at_tick is reads_at_tick
        period = 1.0 / running.gateway.config.params.tick_rate
        pings = conn.session.pings
        while pings.outstanding or not pings.rtt.samples:  # aiohttp pongs as it reads
            await _frames(ws, "snapshot")
        # The pong is in: back to reads at the tick (the socket is not watched).
        assert conn.transport.is_reading() is not reads_at_tick
        for _ in range(3):
            await _frames(ws, "snapshot")  # just after a tick: the ping waits for the next
            await ws.send_bytes(pb.ClientFrame(ping=pb.Ping(client_time=1.5))
                                .SerializeToString())
            pong = (await _frames(ws, "pong")).pong
            snapshot = (await _frames(ws, "snapshot")).snapshot
            assert pong.client_time == 1.5
            if reads_at_tick:
                assert pong.held > 0.0
                read_at = pong.server_time + pong.held
                # 2 ms: the event loop's timers have whole-millisecond resolution.
                assert snapshot.server_time - period / 3 - 0.002 <= read_at
                assert read_at <= snapshot.server_time + 1e-9
            else:
                assert pong.held == 0.0
                assert pong.server_time <= snapshot.server_time


@pytest.mark.parametrize("how", ["fin", "reset"])
async def test_a_peer_gone_while_read_at_the_tick_frees_its_connection_functional(
        start_server, how):
    running = await start_server()
    gateway = running.gateway
    raw = await RawWebSocket.connect(running.port)
    raw.send(pb.ClientFrame(join=pb.Join(protocol_version=PROTOCOL_VERSION, name="gone"))
             .SerializeToString())
    await raw.read_frame()  # Welcome
    await wait_until(lambda: len(gateway.connections) == 1)
    (player_id, conn), = gateway.connections.items()
    assert conn.reads_at_tick
    if how == "reset":
        sock = raw.writer.get_extra_info("socket")
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        raw.abort()
    else:
        raw.writer.close()
    await wait_until(lambda: player_id not in gateway.connections)
    await wait_until(lambda: conn.done.done())
    assert not conn.reads_at_tick


async def test_a_server_close_while_read_at_the_tick_ends_tcp_and_leaks_no_descriptor_functional(
        start_server):
    """The duplicate descriptor the tick reads hold must not keep the TCP connection
    open after the server closes it: the client sees the Close, then end of stream."""
    running = await start_server()
    gateway = running.gateway
    raw = await RawWebSocket.connect(running.port)
    raw.send(pb.ClientFrame(join=pb.Join(protocol_version=PROTOCOL_VERSION, name="kicked"))
             .SerializeToString())
    await raw.read_frame()
    await wait_until(lambda: len(gateway.connections) == 1)
    conn = next(iter(gateway.connections.values()))
    assert conn.reads_at_tick
    seated = _open_fds()  # the room (and its seats' poller) stays open after the close
    conn.close(CLOSE_POLICY, "kicked by a test", label="kicked")
    assert not conn.reads_at_tick  # back to reads on arrival for the closing handshake
    code, reason = await raw.read_close()
    assert (code, reason) == (CLOSE_POLICY, "kicked by a test")
    raw.send(struct.pack("!H", 1000), opcode=0x8)  # our Close: the handshake completes
    assert await asyncio.wait_for(raw.reader.read(), 5.0) == b""  # then FIN
    raw.writer.close()
    await wait_until(lambda: conn.done.done())
    await wait_until(lambda: _open_fds() <= seated - 2)  # the socket and its duplicate


async def test_a_flood_read_at_the_tick_is_still_closed_as_a_flood_functional(start_server):
    """Every frame read at the tick is charged to the budget as on arrival: a client
    sending far more than its frame rate is closed 1008 and counted; another player in
    the room keeps its snapshots."""
    running = await start_server()
    async with Client(running.ws_url, "calm") as calm:
        raw = await RawWebSocket.connect(running.port)
        raw.send(pb.ClientFrame(join=pb.Join(protocol_version=PROTOCOL_VERSION,
                                             name="flooder")).SerializeToString())
        await raw.read_frame()
        ping = pb.ClientFrame(ping=pb.Ping(client_time=0.0)).SerializeToString()
        for _ in range(2000):
            raw.send(ping)
        code, _ = await raw.read_close(timeout=10.0)
        assert code == CLOSE_POLICY
        raw.abort()
        for _ in range(5):
            await calm.next_snapshot()  # raises if none comes within its bounded wait
    assert await running.metric('tickwire_frames_rejected_total{reason="rate_limited"}') > 0


async def test_a_rooms_seats_are_read_before_the_deadline_too_functional(start_server):
    """Once a seat is read at the tick, the room's loop reads it a few milliseconds before
    each deadline as well (its running duration is measured); stopping the loops cancels
    the next pre-read and closes the room's poller."""
    running = await start_server()
    gateway = running.gateway
    async with Client(running.ws_url, "early"):
        await wait_until(lambda: len(gateway.connections) == 1)
        (conn,) = gateway.connections.values()
        assert conn.reads_at_tick
        entry = gateway.loops._loops[conn.room.room_id]
        assert len(entry.seats) == 1
        await wait_until(lambda: entry.pre_read_s > 0.0)
        await wait_until(lambda: entry.pre_read is not None)
        timer = entry.pre_read
        await gateway.loops.stop()
        assert timer.cancelled()
        assert len(entry.seats) == 0


async def test_a_room_that_cannot_open_its_poller_reads_its_seats_on_arrival_functional(
        start_server, monkeypatch):
    """A full descriptor table when a room opens (epoll_create fails with EMFILE) must
    not fail the join: the room's seats are read on arrival, and play goes on."""
    import errno
    import select

    def no_descriptor_left() -> None:
        raise OSError(errno.EMFILE, "Too many open files")

    running = await start_server()
    monkeypatch.setattr(select, "epoll", no_descriptor_left)
    async with Client(running.ws_url, "crowded") as client:
        await wait_until(lambda: len(running.gateway.connections) == 1)
        (conn,) = running.gateway.connections.values()
        assert not conn.reads_at_tick
        assert running.gateway.loops.seat_poller(conn.room.room_id) is None
        seq = await client.send_input(move_x=1.0)
        await wait_until(lambda: client.last_input_seq >= seq)  # read, applied, acked
