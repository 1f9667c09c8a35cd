"""What one ``Room.tick`` does, phase by phase: calls made, and time after a tick's sleep.

A live room sleeps a tick period (33 ms) between ticks while other processes use the
core, so each tick starts with cold caches and every distinct call it makes costs 2-3x its
back-to-back time (bench/results/issue12-fixed-cost.md). This harness shows where those
calls are. It wraps the room's phases (whichever of the names below the tree has: the
input flush, input apply, the sim step, quantise, the history push, the encodes, the
deliveries) and reports per phase:

- ``py``: Python function calls, ``c``: calls of C functions and methods (NumPy's
  ``nonzero``, ``take``, ``tobytes``, protobuf's ``SerializeToString``...), ``lines``:
  Python lines executed (``sys.settrace``), over one tick, as the mean of 30 ticks. Array
  operators (``a + b``, ``a[m]``) are not calls, so ``lines`` is the closest count of them;
- ``distinct``: distinct Python functions and C callables the phase ran (ufuncs called
  through operators are not seen). After a sleep a tick pays mostly for each distinct
  function's first run, not for the number of calls;
- ``cold_us``: the phase's time with a 33 ms sleep before each tick (median of 150 ticks),
  ``warm_us`` back to back, and ``code_warm_us`` with the sleep but a twin room (the same
  scenario, other arrays) ticked right before the measured one: the same code, warm, on
  cold data. ``cold_us - code_warm_us`` is what the phase's code costs cold,
  ``code_warm_us - warm_us`` what its own data does.

Scenario: arena parameters, E NPCs and M seats, each seat sending one Input per tick (the
newest command and the two before it, acking the tick before the newest), gateway mode
(``defer_input_checks``). Data for the write-up, never asserts.

Run: .venv/bin/python -m bench.tick_calls [--entities 100 --clients 50] [--before main]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench.room_ab import _frames, _room, export, run_in

# (phase label, attribute of the room or of its module) in the order a tick runs them;
# a name the tree lacks is skipped. "encode" is inside "deliveries" (reported apart).
PHASES = (
    ("flush", "room._flush_inputs"),
    ("apply", "room._apply_inputs"),
    ("step", "module.step"),
    ("quantize", "room._quantize"),
    ("push", "history.push"),
    ("encode", "history.payload_for"),
    ("deliveries", "room._deliveries"),
)
WARMUP_TICKS = 60
COUNTED_TICKS = 30
TIMED_TICKS = 150
PERIOD_S = 1.0 / 30


class Phases:
    """Wraps a room's phases: times each call and tracks which phase is running."""

    def __init__(self, room: Any) -> None:
        import server.room as module

        self.stack: list[str] = ["tick"]
        self.times: dict[str, list[float]] = {}
        owners = {"room": room, "module": module, "history": room.history}
        for label, path in PHASES:
            owner_name, attr = path.split(".")
            owner = owners[owner_name]
            if hasattr(owner, attr):
                setattr(owner, attr, self._wrap(label, getattr(owner, attr)))
                self.times[label] = []

    def _wrap(self, label: str, fn: Callable[..., Any]) -> Callable[..., Any]:
        stack, times = self.stack, self.times
        clock = time.perf_counter

        def timed(*args: Any, **kwargs: Any) -> Any:
            stack.append(label)
            t0 = clock()
            try:
                return fn(*args, **kwargs)
            finally:
                times[label].append(clock() - t0)
                stack.pop()
        return timed

    def take_tick(self) -> dict[str, float]:
        """Seconds per phase of the tick just run (deliveries without its encodes)."""
        out = {label: sum(v) for label, v in self.times.items()}
        if "deliveries" in out and "encode" in out:
            out["deliveries"] -= out["encode"]
        for v in self.times.values():
            v.clear()
        return out


def _submit_all(room: Any, frames: list) -> None:
    for pid, frame in enumerate(frames, start=1):
        room.submit(pid, frame)


def measure(entities: int, clients: int, *, timed_ticks: int = TIMED_TICKS,
            counted_ticks: int = COUNTED_TICKS) -> dict[str, dict[str, float]]:
    room = _room(entities, True, clients)
    # The same room again, ticked right after the sleep in the "code warmed" figure: its
    # tick runs the same code on other data, so what the measured tick still pays over its
    # back-to-back time is for its own data (arrays, objects), the rest was code.
    twin = _room(entities, True, clients)
    phases = Phases(room)
    n = 0

    def one_tick(sleep: bool, warm_code: bool = False) -> float:
        nonlocal n
        n += 1
        _submit_all(room, _frames(room, n, {}, clients))
        if warm_code:
            _submit_all(twin, _frames(twin, n, {}, clients))
        if sleep:
            time.sleep(PERIOD_S)
        if warm_code:
            twin.tick((twin.tick_number + 1) / twin.params.tick_rate)
            phases.take_tick()  # the twin shares the module-level step wrapper
        t0 = time.perf_counter()
        room.tick((room.tick_number + 1) / room.params.tick_rate)
        return time.perf_counter() - t0

    for _ in range(WARMUP_TICKS):
        one_tick(False)
    phases.take_tick()

    # Counts: a profile hook for calls, a trace hook for lines, one tick at a time.
    counts: dict[str, Counter[str]] = {}
    stack = phases.stack

    def count(kind: str) -> None:
        counts.setdefault(stack[-1], Counter())[kind] += 1

    # Distinct code: what a cold tick pays for is mostly each distinct function's first
    # run (its machine code, its data), not the number of calls (issue12-fixed-cost.md).
    distinct: dict[str, set[object]] = {}
    everywhere: set[object] = set()

    def seen(key: object) -> None:
        distinct.setdefault(stack[-1], set()).add(key)
        everywhere.add(key)

    def profiler(frame: Any, event: str, arg: Any) -> None:
        if event == "call":
            count("py")
            seen(frame.f_code)
        elif event == "c_call":
            count("c")
            seen(getattr(arg, "__qualname__", None) or repr(arg))

    def tracer(frame: Any, event: str, arg: Any) -> Any:
        if event == "line":
            count("lines")
        return tracer

    for _ in range(counted_ticks):
        n += 1
        _submit_all(room, _frames(room, n, {}, clients))
        sys.setprofile(profiler)
        sys.settrace(tracer)
        room.tick((room.tick_number + 1) / room.params.tick_rate)
        sys.settrace(None)
        sys.setprofile(None)
    phases.take_tick()

    result: dict[str, dict[str, float]] = {}
    for label, kinds in counts.items():
        if label in phases.stack[:1]:
            label = "tick (own)"
        result.setdefault(label, {}).update(
            {k: kinds[k] / counted_ticks for k in ("py", "c", "lines")})
        result[label]["distinct"] = len(distinct.get(label if label != "tick (own)"
                                                     else phases.stack[0], ()))
    for sleep, warm_code, key in ((True, False, "cold_us"), (False, False, "warm_us"),
                                  (True, True, "code_warm_us")):
        per_phase: dict[str, list[float]] = {}
        totals = []
        if warm_code:  # the twin catches up to the room's tick (the same inputs)
            while twin.tick_number < room.tick_number:
                _submit_all(twin, _frames(twin, twin.tick_number + 1, {}, clients))
                twin.tick((twin.tick_number + 1) / twin.params.tick_rate)
            phases.take_tick()
        for _ in range(timed_ticks):
            total = one_tick(sleep, warm_code)
            totals.append(total)
            by_phase = phases.take_tick()
            for label, s in by_phase.items():
                per_phase.setdefault(label, []).append(s)
            # What the tick does outside the wrapped phases (expiry, roster, the result),
            # tick by tick: a sum of medians is not the median of the sums (cold ticks
            # are skewed), so the difference of the medians would not be this part.
            per_phase.setdefault("tick (own)", []).append(total - sum(by_phase.values()))
        for label, values in per_phase.items():
            result.setdefault(label, {})[key] = statistics.median(values) * 1e6
        result.setdefault("total", {})[key] = statistics.median(totals) * 1e6
    for kind in ("py", "c", "lines"):
        result["total"][kind] = sum(v.get(kind, 0.0) for k, v in result.items()
                                    if k != "total")
    result["total"]["distinct"] = len(everywhere)
    return result


def table(results: dict[str, dict[str, float]]) -> str:
    rows = ["| phase | py calls | C calls | distinct functions | lines | warm µs "
            "| after 33 ms sleep µs | after the sleep, code warmed µs |",
            "|---|---|---|---|---|---|---|---|"]
    order = [label for label, _ in PHASES] + ["tick (own)", "total"]
    for label in order:
        r = results.get(label)
        if r is None:
            continue
        rows.append(f"| {label} | {r.get('py', 0):.0f} | {r.get('c', 0):.0f} | "
                    f"{r.get('distinct', 0):.0f} | {r.get('lines', 0):.0f} | "
                    f"{r.get('warm_us', 0):.0f} | "
                    f"{r.get('cold_us', 0):.0f} | {r.get('code_warm_us', 0):.0f} |")
    return "\n".join(rows)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--entities", type=int, default=100)
    ap.add_argument("--clients", type=int, default=50)
    ap.add_argument("--before", help="also measure this git ref (runs alternate)")
    ap.add_argument("--rounds", type=int, default=3,
                    help="runs per tree; each figure is the median over them")
    ap.add_argument("--harness", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.harness:
        print(json.dumps(measure(args.entities, args.clients)))
        return 0
    point = ["--entities", str(args.entities), "--clients", str(args.clients)]
    trees = {"this tree": Path(__file__).resolve().parent.parent}
    with tempfile.TemporaryDirectory() as tmp:
        if args.before:
            trees = {args.before: export(args.before, Path(tmp)), **trees}
        runs: dict[str, list[dict[str, dict[str, float]]]] = {name: [] for name in trees}
        for _ in range(args.rounds):
            for name, tree in trees.items():
                runs[name].append(json.loads(run_in(tree, *point, module="bench.tick_calls")))
    for name, outs in runs.items():
        median = {label: {key: statistics.median(o[label][key] for o in outs)
                          for key in outs[0][label]} for label in outs[0]}
        print(f"#### {name}: E{args.entities}/M{args.clients}, median of {len(outs)} runs\n"
              f"{table(median)}\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
