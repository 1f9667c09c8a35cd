"""The bigworld room's tick, phase by phase, before and after a change (issue 16's CPU).

The same in-memory harness runs against two source trees, the working tree and a git ref
(exported with ``bench.room_ab.export``), in alternating fresh processes, so machine load
hits both alike. Each figure is the median over rounds of each run's 20th percentile
(load only ever adds time).

What is measured: a real ``Room`` with the bigworld parameters
(bench/scenarios/bigworld.toml: 8000 x 8000, 10,000 NPCs, interest on), M = 200 seats
each sending one Input a tick (moving, the direction turning every 2 s) and acking
2 ticks back, as the arena's ack-only bots do. Per tick, after a warm-up past the 64-tick
ring:

- ``tick_ms``: one ``Room.tick``, back to back;
- ``cold_tick_ms``: the same with a tick period's sleep (33 ms) before each tick, as on
  a live server (the caches are cold after the sleep: see bench/results/issue12-fixed-cost.md);
- per phase, back to back: ``step_ms`` (the world step), ``quantize_ms``,
  ``interest_ms`` (``InterestRoom.deliveries``), of it ``choose_ms`` (acks, cells,
  removals, schedule), ``schedule_ms`` (``RoomCells.update`` + ``schedule``),
  ``encode_ms`` (the chunk batch), ``finish_ms`` (views, log, personal parts, hand-over);
  and ``frames_ms`` (the room's wrap into Deliveries: header, personal frames);
- ``chunks_encoded`` / ``chunks_sent`` per tick, ``baselines`` (distinct baseline ticks
  among the chunks encoded), ``bytes_per_client`` (snapshot bytes per client per tick).

Run: .venv/bin/python -m bench.interest_ab --before main [--rounds 3] [--profile]
(``--profile`` prints a cProfile summary of 100 ticks per tree instead.) Results are data
for bench/results/issue16-cpu.md, never asserts.
"""

from __future__ import annotations

import json
import math
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench.room_ab import ab_parser, export, print_medians

ROOT = Path(__file__).resolve().parent.parent
BIGWORLD = ROOT / "bench" / "scenarios" / "bigworld.toml"
PLAYERS = 200
LAG = 2
WARMUP_TICKS = 70
MEASURED_TICKS = 120


def _room() -> Any:
    from server.room import Room
    from sim.params import load_params

    room = Room("ab", load_params(BIGWORLD))
    for pid in range(1, PLAYERS + 1):
        room.join(pid, f"bot{pid}", now=0.0)
    return room


def _frames(room: Any, seq: int) -> list:
    """One Input per seat: command `seq`, ack LAG ticks behind the next tick."""
    from proto import tickwire_pb2 as pb

    out = []
    for pid in range(1, PLAYERS + 1):
        angle = (pid * 0.618 + seq // 60) % (2 * math.pi)
        cmd = pb.InputCmd(seq=seq, client_tick=seq, move_x=math.cos(angle),
                          move_y=math.sin(angle), aim=angle)
        out.append(pb.Input(ack_tick=max(0, room.tick_number + 1 - LAG), cmds=[cmd]))
    return out


class _Timers:
    """Wraps methods so each call's wall time adds to a named phase of the current tick."""

    def __init__(self) -> None:
        self.tick: dict[str, float] = defaultdict(float)
        self.on = True

    def wrap(self, owner: Any, name: str, label: str) -> None:
        inner = getattr(owner, name)
        timers = self

        def timed(*args: Any, **kwargs: Any) -> Any:
            if not timers.on:
                return inner(*args, **kwargs)
            t0 = time.perf_counter()
            try:
                return inner(*args, **kwargs)
            finally:
                timers.tick[label] += time.perf_counter() - t0

        setattr(owner, name, timed)


def _drive(room: Any, ticks: int, gap_s: float, each: Callable[[Any, float], None]) -> None:
    for _ in range(ticks):
        frames = _frames(room, room.tick_number + 1)
        for pid, frame in enumerate(frames, start=1):
            room.submit(pid, frame)
        if gap_s:
            time.sleep(gap_s)
        t0 = time.perf_counter()
        result = room.tick((room.tick_number + 1) / room.params.tick_rate)
        each(result, time.perf_counter() - t0)


def run_in(tree: Path, *args: str) -> str:
    """This harness in a fresh process against `tree`'s server/, sim/ and proto/."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(tree), str(ROOT)])}
    done = subprocess.run([sys.executable, "-m", "bench.interest_ab", "--harness", *args],
                          env=env, cwd=tempfile.gettempdir(), check=True,
                          capture_output=True, text=True, timeout=600)
    return done.stdout


def _low(samples: list[float]) -> float:
    return statistics.quantiles(samples, n=5)[0]


def harness() -> dict[str, float]:
    import server.room as room_mod
    from server import interestroom
    from sim import interest

    timers = _Timers()
    room = _room()
    ir = room.interest
    timers.wrap(room_mod, "step", "step_ms")
    timers.wrap(room, "_quantize", "quantize_ms")
    timers.wrap(ir, "deliveries", "interest_ms")
    timers.wrap(ir, "_choose", "choose_ms")
    timers.wrap(ir, "_encode", "encode_ms")
    timers.wrap(ir, "_finish", "finish_ms")
    timers.wrap(ir.cells, "update", "schedule_ms")
    timers.wrap(ir.cells, "schedule", "schedule_ms")
    timers.wrap(room, "_interest_deliveries", "frames_ms")
    baselines: list[int] = []
    encode_chunks = interestroom.chunkcodec.encode_chunks

    def counting(cells: Any, elapsed: Any, *args: Any, **kwargs: Any) -> Any:
        baselines.append(len(set((elapsed[elapsed > 0]).tolist())))
        return encode_chunks(cells, elapsed, *args, **kwargs)

    interestroom.chunkcodec.encode_chunks = counting
    del interest  # imported so the tree's sim.interest is the one measured
    samples: dict[str, list[float]] = defaultdict(list)
    counts: dict[str, list[float]] = defaultdict(list)

    def warm(result: Any, dt: float) -> None:
        timers.tick.clear()

    def measure(result: Any, dt: float) -> None:
        samples["tick_ms"].append(dt)
        phases = dict(timers.tick)
        phases["frames_ms"] = phases.get("frames_ms", 0.0) - phases.get("interest_ms", 0.0)
        for label, value in phases.items():
            samples[label].append(value)
        timers.tick.clear()
        sizes = [len(d.snapshot_shared) + sum(map(len, d.chunks or ()))
                 + len(d.snapshot_personal) for d in result.deliveries]
        counts["bytes_per_client"].append(statistics.mean(sizes) if sizes else 0.0)

    _drive(room, WARMUP_TICKS, 0.0, warm)
    enc0, sent0, base0 = ir.encodes, ir.chunks_sent, len(baselines)
    _drive(room, MEASURED_TICKS, 0.0, measure)
    counts["chunks_encoded"].append((ir.encodes - enc0) / MEASURED_TICKS)
    counts["chunks_sent"].append((ir.chunks_sent - sent0) / MEASURED_TICKS)
    counts["baselines"].append(statistics.mean(baselines[base0:]))
    cold: list[float] = []
    timers.on = False
    _drive(room, 60, 1.0 / room.params.tick_rate, lambda r, dt: cold.append(dt))
    out = {label: _low(values) * 1e3 for label, values in samples.items()}
    out["cold_tick_ms"] = _low(cold) * 1e3
    out.update({label: statistics.mean(values) for label, values in counts.items()})
    return out


def profile() -> None:
    import cProfile
    import pstats

    room = _room()
    _drive(room, WARMUP_TICKS, 0.0, lambda r, dt: None)
    prof = cProfile.Profile()
    prof.enable()
    _drive(room, 100, 0.0, lambda r, dt: None)
    prof.disable()
    pstats.Stats(prof).sort_stats("tottime").print_stats(30)


def main(argv: list[str] | None = None) -> int:
    args = ab_parser(__doc__).parse_args(argv)
    if args.harness:
        if args.profile:
            profile()
        else:
            print(json.dumps(harness()))
        return 0
    with tempfile.TemporaryDirectory() as tmp:
        before_tree = export(args.before, Path(tmp))
        variants = {f"before ({args.before})": before_tree, "after": ROOT}
        if args.profile:
            for name, tree in variants.items():
                print(f"==== {name}")
                print(run_in(tree, "--profile"))
            return 0
        results: dict[str, list[dict[str, float]]] = {name: [] for name in variants}
        for r in range(args.rounds):
            for name, tree in variants.items():
                results[name].append(json.loads(run_in(tree)))
                print(f"round {r + 1}/{args.rounds} {name}: done", file=sys.stderr)
    print_medians(results, f"before ({args.before})", width=28)
    return 0


if __name__ == "__main__":
    sys.exit(main())
