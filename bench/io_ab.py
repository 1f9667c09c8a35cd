"""The gateway's per-frame, per-seat and per-tick costs before and after a change, as ratios.

The companion of ``bench.room_ab`` for what lies outside ``Room.tick``: the same
in-memory harness runs against the working tree and a git ref exported with ``git
archive``, in alternating fresh processes (before, after, before, ...) so machine load
hits both alike; each figure is the median over rounds of each run's 20th percentile.

- ``feed_us``: one masked input frame from the bytes a browser writes to the room's
  buffers through ``Connection.feed_data`` (the shell, ``ConnectionProtocol.receive_data``,
  ``Room.submit``), one frame per read, commands checked per tick as the gateway does;
- ``deliver_us_per_seat``: ``RoomLoops.deliver`` of a 200-seat arena tick into transports
  that only count bytes, per seat;
- ``flush_us_per_tick``: ``Metrics.flush`` of what such a tick counted (200 snapshot
  sizes, 7 RTT samples, the counters);
- ``socket_recv_us``: the whole receive path from raw socket bytes: CPU time of the
  event loop's thread per input frame, for 100 real loopback TCP clients of a real
  gateway (``build_app`` on uvloop, the HTTP upgrade, a Join each) that each send one
  masked input frame per 1/30 s, each at its own phase (spread over the 1/30 s, as real
  clients are; until round five all 100 were sent in one burst), from another process:
  epoll, the read syscall, aiohttp's protocol, ``Connection.feed_data`` through
  ``Room.submit``. The room's tick loop is stopped once everyone has joined, so nothing
  is sent back and the figure is the receive side alone. The gateway reads on arrival
  (``--reads arrival``);
- ``tick_recv_us``: the same clients and frames read at the tick (``--reads tick``, the
  default): a 30 Hz task in place of the tick loop calls ``RoomLoops.read_seats`` and
  nothing else, so the figure is the sleep and wake-up per tick, one ``recvmsg`` per seat
  and the same receive path, per frame;
- ``loop_us_per_tick``: CPU time of ``tickloop.run_ticks`` itself per tick (sleeping until
  each deadline, waking, recording), with an empty tick at 128 Hz on uvloop and the real
  clock for 0.5 s a run.

Run: .venv/bin/python -m bench.io_ab --before main [--rounds 5]
Results are data for the report, never asserts.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.room_ab import export, print_medians

ROOT = Path(__file__).resolve().parent.parent
SEATS = 200
FRAMES = 1000
REPEATS = 40


def _low(samples: list[float]) -> float:
    # Other processes only ever add time: a low percentile is the steadier estimate.
    return statistics.quantiles(samples, n=5)[0]


def _feed_us() -> float:
    import asyncio

    from bench.conftest import ARENA
    from bench.test_bench_receive import CountingTransport, Seating, input_frames, masked
    from proto import PROTOCOL_VERSION
    from proto import tickwire_pb2 as pb
    from server.clock import ManualClock
    from server.connection import Connection
    from server.metrics import Metrics
    from server.protocol import ConnectionProtocol
    from server.session import Session, SessionLimits
    from sim.params import load_params

    params = load_params(ARENA)
    frames = input_frames(FRAMES)
    join = masked(pb.ClientFrame(join=pb.Join(protocol_version=PROTOCOL_VERSION,
                                              name="ab")).SerializeToString())
    limits = SessionLimits.for_tick_rate(params.tick_rate)

    class Hooks:
        def on_joined(self, conn: Connection, event: object) -> None:
            pass

    async def one_run() -> float:
        clock = ManualClock(0.0)
        metrics = Metrics()
        proto = ConnectionProtocol(Session.open(limits, 0.0), Seating(params), metrics.counts)
        conn = Connection(CountingTransport(), proto, Hooks(), clock, 2.0)
        conn.feed_data(join)
        feed = conn.feed_data
        t0 = time.perf_counter()
        for data in frames:
            clock.advance(1 / 30)
            feed(data)
        elapsed = time.perf_counter() - t0
        assert proto.close_code is None
        return elapsed / FRAMES

    return _low([asyncio.run(one_run()) for _ in range(REPEATS)]) * 1e6


def _deliver_us() -> float:
    from bench.conftest import ARENA
    from bench.test_bench_receive import deliver_world
    from sim.params import load_params

    loops, result, _ = deliver_world(load_params(ARENA), SEATS)
    samples = []
    for _ in range(REPEATS * 5):
        t0 = time.perf_counter()
        loops.deliver(result, 12 / 30)
        samples.append((time.perf_counter() - t0) / SEATS)
    return _low(samples) * 1e6


def _flush_us() -> float:
    from server.metrics import Metrics

    metrics = Metrics()
    counts = metrics.counts
    samples = []
    for _ in range(REPEATS * 5):
        counts.snapshot_sizes[1317] = 150
        counts.snapshot_sizes[1402] = 50
        counts.rtt_samples.extend([0.004, 0.006, 0.005, 0.012, 0.004, 0.007, 0.005])
        counts.bytes_sent += 200 * 1350
        counts.snapshots_sent += 200
        t0 = time.perf_counter()
        metrics.flush()
        samples.append(time.perf_counter() - t0)
    return _low(samples) * 1e6


SOCKET_CLIENTS = 100
SOCKET_ROUNDS = 45  # 1.5 s of inputs at 30 Hz per run


def _socket_clients(port: int, frames: list[bytes], join: bytes, go: Any) -> None:
    """The clients of ``socket_recv_us``, in their own process (no GIL shared with the
    server's loop): connect, upgrade and join, then on ``go`` one frame of each round per
    client every 1/30 s."""
    import base64
    import socket

    socks = []
    for i in range(SOCKET_CLIENTS):
        sock = socket.create_connection(("127.0.0.1", port), timeout=10.0)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        key = base64.b64encode(i.to_bytes(16, "big")).decode()
        sock.sendall(f"GET /ws HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
                     "Upgrade: websocket\r\nConnection: Upgrade\r\n"
                     f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n"
                     .encode())
        head = b""
        while b"\r\n\r\n" not in head:
            chunk = sock.recv(4096)
            if not chunk:
                raise RuntimeError("the server closed during the upgrade")
            head += chunk
        if not head.startswith(b"HTTP/1.1 101"):
            raise RuntimeError(f"upgrade refused: {head[:80]!r}")
        sock.sendall(join)
        socks.append(sock)
    if not go.wait(30.0):
        return
    start = time.monotonic()
    for r, frame in enumerate(frames):
        for i, sock in enumerate(socks):
            # Each client at its own phase of the 1/30 s, as real clients send: the
            # server sees the arrivals spread over the tick, not one burst.
            time.sleep(max(0.0, start + (r + i / SOCKET_CLIENTS) / 30 - time.monotonic()))
            sock.sendall(frame)
    time.sleep(1.0)  # the server reads the last frames before the sockets close
    for sock in socks:
        sock.close()


def _socket_recv_us() -> float:
    return _recv_us(reads_at_tick=False)


def _tick_recv_us() -> float:
    return _recv_us(reads_at_tick=True)


def _recv_us(*, reads_at_tick: bool) -> float:
    import asyncio
    import multiprocessing

    import uvloop
    from aiohttp import web

    from bench.conftest import ARENA
    from bench.test_bench_receive import input_frames, masked
    from proto import PROTOCOL_VERSION
    from proto import tickwire_pb2 as pb
    from server.config import GatewayConfig
    from server.gateway import GATEWAY_KEY, build_app
    from server.session import SessionLimits
    from sim.params import load_params

    params = load_params(ARENA)
    frames = input_frames(SOCKET_ROUNDS)
    join = masked(pb.ClientFrame(join=pb.Join(protocol_version=PROTOCOL_VERSION,
                                              name="ab")).SerializeToString())
    spawn = multiprocessing.get_context("spawn")

    try:
        from server.tickreads import SeatPoller
        seats = SeatPoller()
    except ImportError:  # a tree from before the room's poller: read_seats reads every seat
        seats = None

    async def read_at_ticks(gateway: Any, stop: asyncio.Event) -> None:
        loop = asyncio.get_running_loop()
        rooms = list(gateway.lobby.rooms.values())
        next_at = loop.time()
        while not stop.is_set():
            now = gateway.clock.now()
            if seats is None:
                for room in rooms:
                    gateway.loops.read_seats(room, now)
            else:
                wall_now = time.time()
                for conn in seats.ready():
                    conn.read_at_tick(now, wall_now)
            next_at += 1 / 30
            await asyncio.sleep(max(0.0, next_at - loop.time()))

    async def one_run() -> float:
        try:  # a tree from before reads at the tick has no such setting: it reads on arrival
            config = GatewayConfig(params=params, reads_at_tick=reads_at_tick,
                                   limits=SessionLimits.for_tick_rate(params.tick_rate))
        except TypeError:
            if reads_at_tick:
                return float("nan")
            config = GatewayConfig(params=params,
                                   limits=SessionLimits.for_tick_rate(params.tick_rate))
        app = build_app(config)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", 0).start()
        gateway = app[GATEWAY_KEY]
        go = spawn.Event()
        clients = spawn.Process(target=_socket_clients,
                                args=(runner.addresses[0][1], frames, join, go))
        clients.start()
        try:
            for _ in range(3000):  # bounded: 30 s
                if len(gateway.connections) == SOCKET_CLIENTS:
                    break
                await asyncio.sleep(0.01)
            else:
                raise RuntimeError(f"{len(gateway.connections)} of {SOCKET_CLIENTS} joined")
            await gateway.loops.stop()  # no ticks from here: nothing is sent back
            if reads_at_tick:
                # These clients never read, so the pings of the room's first ticks go
                # unanswered, and a connection waiting for its pong is read on arrival
                # (Connection.time_pong): back to the tick, as after a pong.
                for conn in gateway.connections.values():
                    conn.stop_tick_reads()
                    if seats is None:
                        conn.start_tick_reads()
                    else:
                        conn.start_tick_reads(seats)
            stop_reads = asyncio.Event()
            reader = (asyncio.create_task(read_at_ticks(gateway, stop_reads))
                      if reads_at_tick else None)
            counts = gateway.metrics.counts
            want = counts.bytes_received + SOCKET_CLIENTS * sum(map(len, frames))
            cpu0 = time.thread_time()
            go.set()
            for _ in range(400):  # bounded: 20 s; a few wake-ups a run, not per frame
                if counts.bytes_received >= want:
                    break
                await asyncio.sleep(0.05)
            cpu = time.thread_time() - cpu0
            stop_reads.set()
            if reader is not None:
                await reader
            if counts.bytes_received < want:
                raise RuntimeError("not every input frame arrived")
            if len(gateway.connections) != SOCKET_CLIENTS:
                raise RuntimeError("a client was closed during the run")
        finally:
            go.set()
            await asyncio.get_running_loop().run_in_executor(None, clients.join, 15.0)
            if clients.is_alive():
                clients.kill()
                clients.join(5.0)
            await runner.cleanup()
        return cpu / (SOCKET_CLIENTS * len(frames))

    return _low([uvloop.run(one_run()) for _ in range(5)]) * 1e6


def _loop_us() -> float:
    import asyncio

    import uvloop

    from server.clock import MonotonicClock
    from server.tickloop import TickSchedule, run_ticks

    async def one_run() -> float:
        clock = MonotonicClock()
        schedule = TickSchedule(128, clock.now())
        stop = asyncio.Event()
        asyncio.get_running_loop().call_later(0.5, stop.set)
        cpu0 = time.thread_time()
        await run_ticks(schedule, clock, lambda now: None, stop)
        return (time.thread_time() - cpu0) / max(1, schedule.ticks_run)

    return _low([uvloop.run(one_run()) for _ in range(8)]) * 1e6


def harness() -> dict[str, float]:
    return {"feed_us": _feed_us(), "socket_recv_us": _socket_recv_us(),
            "tick_recv_us": _tick_recv_us(),
            "deliver_us_per_seat": _deliver_us(),
            "flush_us_per_tick": _flush_us(), "loop_us_per_tick": _loop_us()}


def run_in(tree: Path) -> dict[str, float]:
    # The tree first (its server/, sim/, proto/), then this checkout for bench/ itself.
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(tree), str(ROOT)])}
    done = subprocess.run([sys.executable, "-m", "bench.io_ab", "--harness"], env=env,
                          cwd=tempfile.gettempdir(), check=True, capture_output=True,
                          text=True, timeout=600)
    return json.loads(done.stdout)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--before", default="main", help="git ref to compare against")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--harness", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.harness:
        import server.roomloops

        print(f"measuring {server.roomloops.__file__}", file=sys.stderr)
        print(json.dumps(harness()))
        return 0
    with tempfile.TemporaryDirectory() as tmp:
        trees = {f"before ({args.before})": export(args.before, Path(tmp)), "after": ROOT}
        results: dict[str, list[dict[str, float]]] = {name: [] for name in trees}
        for r in range(args.rounds):
            for name, tree in trees.items():
                results[name].append(run_in(tree))
            print(f"round {r + 1}/{args.rounds}: done", file=sys.stderr)
    print_medians(results, f"before ({args.before})", width=28)
    return 0


if __name__ == "__main__":
    sys.exit(main())
