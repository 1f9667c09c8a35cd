"""Room costs before and after a change, measured in one sitting, as ratios.

The same in-memory harness runs against two source trees: the working tree, and a git ref
exported to a temporary directory (``git archive``). Runs alternate (before, after,
before, ...) in fresh processes so machine load hits both alike; each figure is the median
over rounds of each run's 20th percentile (load only ever adds time). Only the Room API
both trees share is used (``Room``, ``join``, ``submit``, ``tick``, ``history.encodes``),
plus ``defer_input_checks`` where the tree has it.

What is measured, all in memory, arena parameters (bench/scenarios/arena.toml):

- ``submit_us``: one ``Room.submit`` of an already parsed ``Input`` (three commands, the
  newest one new, as the shipped clients send), µs per frame, M = 200 seats;
- ``tick_ms``: one ``Room.tick`` at E = 1000 and E = 100 NPCs, M = 200 seats acking the
  tick before the newest (one baseline);
- ``rtt_spread_tick_ms`` / ``rtt_spread_encodes``: the same E = 1000 tick when honest
  seats' acks spread over 8 ticks (RTTs of about 30 to 270 ms), and its encodes per tick;
- ``hostile_tick_ms`` / ``hostile_encodes``: the same E = 1000 tick when 31 of the seats
  each ack their own old tick (3..33 back; issue #11 item 5), and the encodes per tick;
- ``tick_ms_E100_M1``: a room's fixed cost, one ``Room.tick`` at E = 100 with one seat;
- ``cold_tick_ms_E100_M1`` / ``cold_tick_ms_E1000_M200``: the same ticks with a tick
  period's sleep (33 ms) before each, as on a live server. After the sleep the core's
  caches hold other processes' work, and each NumPy call costs 2-3x its back-to-back time,
  so a live tick costs about what these say, not what the back-to-back figures say.

Run: .venv/bin/python -m bench.room_ab --before main [--rounds 3] [--profile]
(``--profile`` prints a cProfile summary of 150 ticks at E = 1000, M = 200 per tree
instead.) Results are data for the closing note, never asserts.
"""

from __future__ import annotations

import argparse
import inspect
import json
import math
import os
import shutil
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
ARENA = ROOT / "bench" / "scenarios" / "arena.toml"
PLAYERS = 200
HOSTILE_LAGS = range(3, 34)  # 31 seats, each acking its own old tick
WARMUP_TICKS = 60
MEASURED_TICKS = 150


# -- the harness (runs inside the tree under test) --------------------------------------------


def _room(entities: int, defer: bool, players: int = PLAYERS) -> Any:  # the tree's Room
    from server.room import Room
    from sim.params import load_params

    params = load_params(ARENA).with_changes({"npc.count": entities})
    kwargs = {}
    if "defer_input_checks" in inspect.signature(Room).parameters:
        kwargs["defer_input_checks"] = defer
    room = Room("ab", params, **kwargs)
    for pid in range(1, players + 1):
        room.join(pid, f"bot{pid}", now=0.0)
    return room


def _frames(room: Any, seq: int, lags: dict[int, int], players: int = PLAYERS) -> list:
    """One Input per seat: commands seq-2..seq, ack `lag` ticks behind the next tick."""
    from proto import tickwire_pb2 as pb

    out = []
    for pid in range(1, players + 1):
        angle = (pid * 0.618 + seq // 60) % (2 * math.pi)
        cmds = [pb.InputCmd(seq=s, client_tick=s, move_x=math.cos(angle),
                            move_y=math.sin(angle), aim=angle)
                for s in range(max(1, seq - 2), seq + 1)]
        ack = max(0, room.tick_number + 1 - lags.get(pid, 2))
        out.append(pb.Input(ack_tick=ack, cmds=cmds))
    return out


def _run(entities: int, defer: bool, lags: dict[int, int], players: int = PLAYERS,
         gap_s: float = 0.0) -> dict[str, float]:
    """`gap_s`: sleep that long before each tick's inputs (untimed), as a live server waits
    a tick period between ticks."""
    room = _room(entities, defer, players)
    submit_s, tick_s, encodes = [], [], []
    for n in range(1, WARMUP_TICKS + MEASURED_TICKS + 1):
        frames = _frames(room, n, lags, players)
        if gap_s:
            time.sleep(gap_s)
        t0 = time.perf_counter()
        for pid, frame in enumerate(frames, start=1):
            room.submit(pid, frame)
        t1 = time.perf_counter()
        before = room.history.encodes
        room.tick((room.tick_number + 1) / room.params.tick_rate)
        t2 = time.perf_counter()
        if n > WARMUP_TICKS:
            submit_s.append((t1 - t0) / players)
            tick_s.append(t2 - t1)
            encodes.append(room.history.encodes - before)
    # The 20th percentile, not the median: on a shared machine other processes only ever
    # add time, so a low percentile is the steadier estimate of what the code costs.
    return {"submit_us": _low(submit_s) * 1e6,
            "tick_ms": _low(tick_s) * 1e3,
            "encodes": statistics.mean(encodes)}


def _low(samples: list[float]) -> float:
    return statistics.quantiles(samples, n=5)[0]


def harness(defer: bool) -> dict[str, float]:
    hostile = {PLAYERS - i: lag for i, lag in enumerate(HOSTILE_LAGS)}
    spread = {pid: 2 + pid % 8 for pid in range(1, PLAYERS + 1)}  # honest RTTs ~30-270 ms
    e1000 = _run(1000, defer, {})
    e100 = _run(100, defer, {})
    wide = _run(1000, defer, spread)
    bad = _run(1000, defer, hostile)
    period = 1.0 / 30  # the arena's tick rate
    one = _run(100, defer, {}, players=1)
    one_cold = _run(100, defer, {}, players=1, gap_s=period)
    full_cold = _run(1000, defer, {}, gap_s=period)
    return {
        "tick_ms_E100_M1": one["tick_ms"],
        "cold_tick_ms_E100_M1": one_cold["tick_ms"],
        "cold_tick_ms_E1000_M200": full_cold["tick_ms"],
        "submit_us": e1000["submit_us"],
        "tick_ms_E1000_M200": e1000["tick_ms"],
        "tick_ms_E100_M200": e100["tick_ms"],
        "honest_encodes": e1000["encodes"],
        "rtt_spread_tick_ms_E1000_M200": wide["tick_ms"],
        "rtt_spread_encodes": wide["encodes"],
        "hostile_tick_ms_E1000_M200": bad["tick_ms"],
        "hostile_encodes": bad["encodes"],
    }


def profile(defer: bool) -> None:
    import cProfile
    import pstats

    room = _room(1000, defer)
    frames = [_frames(room, n, {}) for n in range(1, 211)]
    for n in range(60):
        for pid, frame in enumerate(frames[n], start=1):
            room.submit(pid, frame)
        room.tick((room.tick_number + 1) / room.params.tick_rate)
    prof = cProfile.Profile()
    prof.enable()
    for n in range(60, 210):
        for pid, frame in enumerate(frames[n], start=1):
            room.submit(pid, frame)
        room.tick((room.tick_number + 1) / room.params.tick_rate)
    prof.disable()
    pstats.Stats(prof).sort_stats("tottime").print_stats(14)


# -- the driver -------------------------------------------------------------------------------


def print_medians(results: dict[str, list[dict[str, float]]], base_name: str, *,
                  width: int = 24) -> None:
    """The A/B table of the ``*_ab`` tools: each figure's median over the rounds, per
    tree, with its ratio to `base_name`'s; then the medians as one JSON line. A figure a
    tree did not report counts as 0 there."""
    keys = list(next(iter(results.values()))[0])
    medians = {name: {k: statistics.median(run.get(k, 0.0) for run in runs) for k in keys}
               for name, runs in results.items()}
    base = medians[base_name]
    print(f"{'figure':{width}}" + "".join(f"{name:>{width - 4}}" for name in medians))
    for k in keys:
        cells = []
        for m in medians.values():
            ratio = m[k] / base[k] if base[k] else float("nan")
            cells.append(f"{m[k]:>{width - 14}.3f} ({ratio:4.2f}x)")
        print(f"{k:{width}}" + "".join(f"{c:>{width - 4}}" for c in cells))
    print(json.dumps(medians))


def export(ref: str, into: Path) -> Path:
    """The ref's server/, sim/ and proto/ (the Room and what it imports) under `into`."""
    archive = into / "tree.tar"
    with archive.open("wb") as out:
        subprocess.run(["git", "-C", str(ROOT), "archive", "--format=tar", ref, "server",
                        "sim", "proto"], check=True, stdout=out)
    with tarfile.open(archive) as tar:
        tar.extractall(into / "tree", filter="data")
    # The generated protobuf module is not in git: the ref gets this checkout's, which is
    # right only while both have the same tickwire.proto.
    tree_proto = into / "tree" / "proto"
    if (tree_proto / "tickwire.proto").read_bytes() != (ROOT / "proto" / "tickwire.proto"
                                                       ).read_bytes():
        raise SystemExit(f"{ref} has another proto/tickwire.proto: compare by hand")
    shutil.copy(ROOT / "proto" / "tickwire_pb2.py", tree_proto / "tickwire_pb2.py")
    return into / "tree"


def run_in(tree: Path, *args: str, module: str = "bench.room_ab") -> str:
    """`module`'s harness run on `tree`'s code; its stdout."""
    # The tree first (its server/, sim/, proto/), then this checkout for bench/ itself.
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(tree), str(ROOT)])}
    done = subprocess.run([sys.executable, "-m", module, "--harness", *args],
                          env=env, cwd=tempfile.gettempdir(), check=True,
                          capture_output=True, text=True, timeout=600)
    return done.stdout


def ab_parser(doc: str) -> argparse.ArgumentParser:
    """The options every ``*_ab`` tool takes (``--harness``: the run inside a tree)."""
    ap = argparse.ArgumentParser(description=doc.splitlines()[0])
    ap.add_argument("--before", default="main", help="git ref to compare against")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--profile", action="store_true")
    ap.add_argument("--harness", action="store_true", help=argparse.SUPPRESS)
    return ap


def main(argv: list[str] | None = None) -> int:
    ap = ab_parser(__doc__)
    ap.add_argument("--defer", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.harness:
        import server.room

        print(f"measuring {server.room.__file__}", file=sys.stderr)
        if args.profile:
            profile(args.defer)
        else:
            print(json.dumps(harness(args.defer)))
        return 0

    with tempfile.TemporaryDirectory() as tmp:
        before_tree = export(args.before, Path(tmp))
        variants = {f"before ({args.before})": (before_tree, []),
                    "after, checked at once": (ROOT, []),
                    "after, deferred": (ROOT, ["--defer"])}
        if args.profile:
            for name, (tree, extra) in variants.items():
                print(f"==== {name}")
                print(run_in(tree, "--profile", *extra))
            return 0
        results: dict[str, list[dict[str, float]]] = {name: [] for name in variants}
        for r in range(args.rounds):
            for name, (tree, extra) in variants.items():
                results[name].append(json.loads(run_in(tree, *extra)))
                print(f"round {r + 1}/{args.rounds} {name}: done", file=sys.stderr)
    print_medians(results, f"before ({args.before})", width=30)
    return 0


if __name__ == "__main__":
    sys.exit(main())
