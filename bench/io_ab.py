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

from bench.room_ab import export

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
    return {"feed_us": _feed_us(), "deliver_us_per_seat": _deliver_us(),
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
    keys = list(next(iter(results.values()))[0])
    medians = {name: {k: statistics.median(run[k] for run in runs) for k in keys}
               for name, runs in results.items()}
    base = medians[f"before ({args.before})"]
    print(f"{'figure':24}" + "".join(f"{name:>24}" for name in medians))
    for k in keys:
        cells = [f"{m[k]:>14.3f} ({m[k] / base[k]:4.2f}x)" for m in medians.values()]
        print(f"{k:24}" + "".join(f"{c:>24}" for c in cells))
    print(json.dumps(medians))
    return 0


if __name__ == "__main__":
    sys.exit(main())
