"""`tickwire bots`: a headless swarm over several processes, a live line, a report.

Theory of operation
-------------------
The parent starts `--procs` worker processes (multiprocessing, spawn), each running a
`client_demo.bots.Swarm` over its share of the bots (round-robin, so every process ramps
over the whole ramp). Workers say `ready` once imported; the parent then fixes a common
start time, and each bot joins at `start + ramp * i / N`.

Workers send raw timestamped samples every 0.5 s over one Queue. The parent prints a
progress line per second and keeps every sample. The *measurement window* starts when
the ramp is over (and every bot has joined or failed, at most `JOIN_SLACK_S` later),
plus `--warmup`, and lasts `--duration`; then the parent tells the workers to stop.
Only samples inside the window enter the report, and percentiles are computed over the
samples of all bots together. /metrics is read at both ends of the window so server
figures are for the window too.

Every run is bounded: a hard deadline (ramp + warmup + duration + grace) after which
workers are terminated, then killed, by their pid.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import multiprocessing as mp
import operator
import os
import queue as queue_mod
import re
import sys
import time
import urllib.error
import urllib.request
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import numpy as np

#: Bot behaviours (implemented in client_demo.bots; named here so registering the
#: subcommand does not import the client stack).
BEHAVIORS = ("wander", "chase", "idle", "spam", "arena")
MAX_BOTS = 10_000
MAX_PROCS = 64
MAX_DURATION_S = 24 * 3600.0
JOIN_SLACK_S = 2.0  # how long the window waits for slow joins after the ramp
GRACE_S = 6.0  # beyond the window: workers closing, last reports
READY_TIMEOUT_S = 30.0  # a worker importing numpy + aiohttp on a busy machine

FAIL_ON_HELP = """\
--fail-on: comma-separated conditions `metric OP number`, OP one of < <= > >=;
the run FAILS (exit 1) when a condition is TRUE. Metrics:
  rtt_p50_ms rtt_p95_ms rtt_p99_ms   server-measured RTT over all bots, ms
  client_rtt_p99_ms                  Ping/Pong RTT at the bots, ms
  snapshots_per_s                    snapshots per second, mean per client
  interval_p99_ms                    p99 time between two snapshots at a client, ms
  bytes_in_per_s                     WebSocket payload bytes received, mean per client
  errors                             errors of every kind (connect, closed, decode, ...)
  clients_failed                     bots that could not join
example: --fail-on 'rtt_p99_ms>150,snapshots_per_s<28'
exit status: 0 all conditions hold, 1 a condition failed or no bot connected,
2 usage error."""

METRICS: dict[str, Callable[[dict], float | None]] = {
    "rtt_p50_ms": lambda r: r["rtt_ms"]["p50"],
    "rtt_p95_ms": lambda r: r["rtt_ms"]["p95"],
    "rtt_p99_ms": lambda r: r["rtt_ms"]["p99"],
    "client_rtt_p99_ms": lambda r: r["client_rtt_ms"]["p99"],
    "snapshots_per_s": lambda r: r["snapshots_per_s"],
    "interval_p99_ms": lambda r: r["snapshot_interval_ms"]["p99"],
    "bytes_in_per_s": lambda r: r["bytes_in_per_s"],
    "errors": lambda r: float(sum(r["errors"].values())),
    "clients_failed": lambda r: float(r["clients_failed"]),
}
OPS: dict[str, Callable[[float, float], bool]] = {
    "<=": operator.le, ">=": operator.ge, "<": operator.lt, ">": operator.gt,
}
_NUMBER = r"[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?"
_COND = re.compile(r"^\s*([a-z0-9_]+)\s*(<=|>=|<|>)\s*(" + _NUMBER + r")\s*$")


class UsageError(ValueError):
    """A command-line value the run cannot use (exit status 2)."""


@dataclass(frozen=True)
class Condition:
    """One --fail-on condition; the run fails when it is true."""

    metric: str
    op: str
    value: float

    def __str__(self) -> str:
        return f"{self.metric}{self.op}{self.value:g}"

    def failed(self, report: dict) -> tuple[bool, float | None]:
        actual = METRICS[self.metric](report)
        if actual is None or (isinstance(actual, float) and math.isnan(actual)):
            return True, None  # nothing measured cannot pass a threshold
        return OPS[self.op](actual, self.value), actual


def parse_fail_on(text: str | None) -> list[Condition]:
    """Parse `rtt_p99_ms>150,snapshots_per_s<28`; raises UsageError naming the bad part."""
    if not text:
        return []
    out = []
    for part in text.split(","):
        if not part.strip():
            raise UsageError(f"--fail-on: empty condition in {text!r}")
        m = _COND.match(part)
        if m is None:
            raise UsageError(f"--fail-on: cannot parse {part.strip()!r}; expected "
                             "`metric OP number` with OP one of < <= > >=")
        metric, op, number = m.groups()
        if metric not in METRICS:
            raise UsageError(f"--fail-on: unknown metric {metric!r}; one of "
                             f"{', '.join(METRICS)}")
        out.append(Condition(metric, op, float(number)))
    return out


# -- CLI ---------------------------------------------------------------------------------------

def add_bots_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Register `tickwire bots` on the `tickwire` subcommand parser."""
    p = subparsers.add_parser(
        "bots", help="run a swarm of headless bots against a server and report",
        description="Run N headless bots (the shipped Python client with scripted "
                    "behaviour) against one server, print a live progress line and a "
                    "final report, and optionally check thresholds.",
        epilog=FAIL_ON_HELP, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--url", help="server WebSocket URL, ws://HOST:PORT/ws")
    p.add_argument("--matchmake", metavar="http://HOST:PORT",
                   help="instead of --url: each bot asks this node's POST /matchmake for a "
                        "seat and connects where it says (spreads over a fleet)")
    p.add_argument("--mode", help="game mode to matchmake into (default: the fleet's default)")
    p.add_argument("--count", type=int, required=True, metavar="N", help="number of bots")
    p.add_argument("--ramp", type=float, metavar="S",
                   help="spread the joins over this many seconds (default min(5, N/20))")
    p.add_argument("--warmup", type=float, default=0.0, metavar="S",
                   help="seconds after the ramp before measuring (default 0)")
    p.add_argument("--duration", type=float, required=True, metavar="S",
                   help="length of the measurement window, seconds")
    p.add_argument("--procs", type=int, metavar="P",
                   help="worker processes (default ceil(N/100), at most the CPU count)")
    p.add_argument("--behavior", choices=BEHAVIORS, default="wander",
                   help="wander: random walk, occasional fire; chase: toward the nearest "
                        "entity, firing; idle: inputs without movement; spam: inputs at "
                        "2x the tick rate; arena: the SCENARIO-arena client (default wander)")
    p.add_argument("--json", metavar="FILE", help="write the report as JSON to FILE")
    p.add_argument("--fail-on", metavar="CONDS", help="thresholds, see below")
    p.add_argument("--latency-ms", type=float, default=0.0, metavar="X",
                   help="added one-way delay per direction, ms (RTT grows by ~2X)")
    p.add_argument("--jitter-ms", type=float, default=0.0, metavar="Y",
                   help="uniform ±Y ms on each frame's added delay (order kept, as TCP)")
    p.add_argument("--loss", type=float, default=0.0, metavar="P",
                   help="probability of dropping an Input (out) or Snapshot (in) frame")
    p.add_argument("--ack-only", action="store_true",
                   help="measurement mode: ack each delta without decoding it (same server "
                        "load and traffic, a fraction of the bots' CPU); not with chase")
    p.add_argument("--seed", type=int, default=1, help="seed of the bots' behaviour RNGs")
    p.add_argument("--quiet", action="store_true", help="no progress line")
    p.set_defaults(func=run_bots)
    return p


@dataclass
class Plan:
    """A validated run."""

    url: str
    count: int
    ramp_s: float
    warmup_s: float
    duration_s: float
    procs: int
    behavior: str
    conditions: list[Condition]
    latency_ms: float
    jitter_ms: float
    loss: float
    seed: int
    json_path: str | None
    ack_only: bool
    quiet: bool
    matchmake: str | None = None  # http(s)://HOST:PORT: bots get their seats there
    mode: str | None = None
    metrics_url: str = field(init=False)

    def __post_init__(self) -> None:
        self.metrics_url = metrics_url_for(self.url)


def metrics_url_for(ws_url: str) -> str:
    """ws://h:p/ws -> http://h:p/metrics (wss -> https)."""
    parts = urlsplit(ws_url)
    scheme = {"ws": "http", "wss": "https"}[parts.scheme]
    return urlunsplit((scheme, parts.netloc, "/metrics", "", ""))


def _finite(name: str, value: float, lo: float, hi: float) -> float:
    if not (math.isfinite(value) and lo <= value <= hi):
        raise UsageError(f"{name} {value:g} is out of range [{lo:g}, {hi:g}]")
    return value


def plan_from_args(args: argparse.Namespace) -> Plan:
    """Check every value; raises UsageError with the option named."""
    url = args.url
    matchmake = getattr(args, "matchmake", None)
    if bool(url) == bool(matchmake):
        raise UsageError("give --url or --matchmake (one of them)")
    if matchmake:
        mm = urlsplit(matchmake)
        if mm.scheme not in ("http", "https") or not mm.hostname:
            raise UsageError(f"--matchmake {matchmake!r} is not an http:// or https:// URL "
                             f"with a host")
        # The report's server figures come from the node matchmaking was asked.
        url = urlunsplit(({"http": "ws", "https": "wss"}[mm.scheme], mm.netloc, "/ws", "", ""))
    parts = urlsplit(url)
    if parts.scheme not in ("ws", "wss") or not parts.hostname:
        raise UsageError(f"--url {url!r} is not a ws:// or wss:// URL with a host")
    if not 1 <= args.count <= MAX_BOTS:
        raise UsageError(f"--count {args.count} is out of range [1, {MAX_BOTS}]")
    count = args.count
    duration = _finite("--duration", args.duration, 0.1, MAX_DURATION_S)
    ramp = min(5.0, count / 20.0) if args.ramp is None else args.ramp
    ramp = _finite("--ramp", ramp, 0.0, 3600.0)
    warmup = _finite("--warmup", args.warmup, 0.0, 3600.0)
    cpus = os.cpu_count() or 1
    procs = args.procs if args.procs is not None else min(math.ceil(count / 100), cpus)
    if not 1 <= procs <= MAX_PROCS:
        raise UsageError(f"--procs {procs} is out of range [1, {MAX_PROCS}]")
    procs = min(procs, count)
    latency = _finite("--latency-ms", args.latency_ms, 0.0, 10_000.0)
    jitter = _finite("--jitter-ms", args.jitter_ms, 0.0, 10_000.0)
    if not (math.isfinite(args.loss) and 0.0 <= args.loss < 1.0):
        raise UsageError(f"--loss {args.loss:g} is not in [0, 1)")
    if args.ack_only and args.behavior == "chase":
        raise UsageError("--ack-only keeps no decoded world; chase needs one")
    return Plan(url=url, matchmake=matchmake, mode=getattr(args, "mode", None), count=count,
                ramp_s=ramp, warmup_s=warmup, duration_s=duration,
                procs=procs, behavior=args.behavior, conditions=parse_fail_on(args.fail_on),
                latency_ms=latency, jitter_ms=jitter, loss=args.loss, seed=args.seed,
                json_path=args.json, quiet=args.quiet, ack_only=args.ack_only)


def run_bots(args: argparse.Namespace) -> int:
    """The `tickwire bots` command. Returns the exit status (0 pass, 1 fail, 2 usage)."""
    try:
        plan = plan_from_args(args)
    except UsageError as exc:
        print(f"tickwire bots: error: {exc}", file=sys.stderr)
        return 2
    try:
        report = run_plan(plan)
    except KeyboardInterrupt:
        print("\ntickwire bots: interrupted", file=sys.stderr)
        return 1
    print(format_report(report))
    if plan.json_path:
        try:
            with open(plan.json_path, "w", encoding="utf-8") as fh:
                json.dump(report, fh, indent=2, sort_keys=False)
                fh.write("\n")
        except OSError as exc:
            print(f"tickwire bots: cannot write {plan.json_path}: {exc}", file=sys.stderr)
            return 1
    return 0 if report["passed"] else 1


# -- orchestration -------------------------------------------------------------------------------

class Collector:
    """Everything the workers reported, and the live view of it."""

    def __init__(self, count: int) -> None:
        self.count = count
        self.snap_bot: list[np.ndarray] = []
        self.snap: list[np.ndarray] = []
        self.crtt_bot: list[np.ndarray] = []
        self.crtt: list[np.ndarray] = []
        self.counters: list[tuple[float, np.ndarray]] = []  # (t, rows bot,ws,tcp,decode)
        self.live: dict[int, dict] = {}  # worker -> last payload summary
        self.connect_messages: list[str] = []
        self.crashes: list[str] = []
        self.done: set[int] = set()
        self.pids: dict[int, int] = {}
        self.ever_connected: set[int] = set()

    def add(self, kind: str, worker: int, payload: dict) -> None:
        if kind == "ready":
            self.pids[worker] = payload["pid"]
            return
        if kind == "crash":
            self.crashes.append(payload["error"])
            self.done.add(worker)
            return
        if "snap" not in payload:
            self.done.add(worker)
            return
        self.snap_bot.append(payload["snap_bot"])
        self.snap.append(payload["snap"])
        self.crtt_bot.append(payload["crtt_bot"])
        self.crtt.append(payload["crtt"])
        self.counters.append((payload["t"], payload["counters"]))
        self.ever_connected.update(int(b) for b in payload["counters"][:, 0])
        self.live[worker] = {k: payload[k] for k in
                             ("connected", "failed", "errors", "close_codes", "dropped")}
        for msg in payload["connect_messages"]:
            if msg not in self.connect_messages and len(self.connect_messages) < 3:
                self.connect_messages.append(msg)
        if kind == "done":
            self.done.add(worker)

    @property
    def connected(self) -> int:
        return sum(v["connected"] for v in self.live.values())

    @property
    def failed(self) -> int:
        return sum(v["failed"] for v in self.live.values())

    def errors(self) -> Counter[str]:
        total: Counter[str] = Counter()
        for v in self.live.values():
            total.update(v["errors"])
        return total

    def snapshots_since(self, t0: float) -> np.ndarray:
        """Rows of snapshot samples with arrival time >= t0 among the last few reports."""
        recent = [a for a in self.snap[-4 * max(1, len(self.live)):] if len(a)]
        if not recent:
            return np.empty((0, 6))
        rows = np.concatenate(recent)
        return rows[rows[:, 0] >= t0]


def _progress(c: Collector, now: float, phase: str) -> str:
    rows = c.snapshots_since(now - 1.0)
    rate = len(rows)  # over the last second
    if len(rows):
        p50, p99 = np.percentile(rows[:, 1], [50, 99])
        rtt = f"rtt p50 {p50:5.1f} p99 {p99:5.1f} ms"
    else:
        rtt = "rtt p50   -   p99   -   ms"
    errors = sum(c.errors().values())
    return (f"[{phase:>7}] connected {c.connected}/{c.count}  snapshots/s {rate:6d}  "
            f"{rtt}  errors {errors}")


def fetch_metrics(url: str, timeout: float = 2.0) -> dict[str, float] | None:
    """Read /metrics; None when it cannot be reached or parsed."""
    # parse_metrics knows the exposition format and the contract names (lazy import:
    # prometheus_client is only needed here).
    from server.metrics import parse_metrics

    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:  # only the URL given
            return parse_metrics(resp.read().decode("utf-8"))
    except (urllib.error.URLError, OSError, ValueError):
        return None


def run_plan(plan: Plan) -> dict:
    """Start the workers, follow them, build the report. Never raises for a dead server."""
    from client_demo.bots import SwarmConfig, worker_main
    from client_demo.netsim import NetConditions

    ctx = mp.get_context("spawn")
    q: Any = ctx.Queue()
    start_value = ctx.Value("d", 0.0)
    start_event = ctx.Event()
    stop_event = ctx.Event()
    conditions = NetConditions(plan.latency_ms, plan.jitter_ms, plan.loss)
    tty = sys.stdout.isatty() and not plan.quiet
    collector = Collector(plan.count)
    launched = time.monotonic()
    # A bound on the whole run, fixed before anything can hang.
    hard_deadline = (launched + READY_TIMEOUT_S + plan.ramp_s + JOIN_SLACK_S + plan.warmup_s
                     + plan.duration_s + GRACE_S)
    procs = []
    for w in range(plan.procs):
        cfg = SwarmConfig(worker=w, url=plan.url, behavior=plan.behavior,
                          bot_ids=tuple(range(w, plan.count, plan.procs)), total=plan.count,
                          ramp_s=plan.ramp_s, seed=plan.seed, conditions=conditions,
                          ack_only=plan.ack_only, matchmake=plan.matchmake, mode=plan.mode)
        proc = ctx.Process(target=worker_main, name=f"tickwire-bots-{w}", daemon=True,
                           args=(cfg, q, start_value, start_event, stop_event, hard_deadline))
        proc.start()
        procs.append(proc)

    def drain(until: float) -> None:
        while True:
            timeout = until - time.monotonic()
            try:
                msg = q.get(timeout=max(0.0, timeout)) if timeout > 0 else q.get_nowait()
            except queue_mod.Empty:
                return
            collector.add(*msg)

    def say(line: str) -> None:
        if plan.quiet:
            return
        if tty:
            sys.stdout.write("\r" + line + "\x1b[K")
        else:
            sys.stdout.write(line + "\n")
        sys.stdout.flush()

    metrics_start = metrics_end = None
    window = (0.0, 0.0)
    try:
        # Wait for every worker to be importable and ready (bounded).
        ready_by = launched + READY_TIMEOUT_S
        while len(collector.pids) < plan.procs and time.monotonic() < ready_by:
            drain(time.monotonic() + 0.2)
            if all(not p.is_alive() for p in procs):
                break
        start = time.monotonic() + 0.2
        start_value.value = start
        start_event.set()
        hard_deadline = start + plan.ramp_s + JOIN_SLACK_S + plan.warmup_s \
            + plan.duration_s + GRACE_S
        ramp_end = start + plan.ramp_s
        # The window opens once the ramp is over and every bot has joined or failed.
        next_line = start + 1.0
        while True:
            drain(min(next_line, ramp_end + JOIN_SLACK_S))
            now = time.monotonic()
            if now >= next_line:
                say(_progress(collector, now, "ramp"))
                next_line += 1.0
            resolved = len(collector.ever_connected) + collector.failed >= plan.count
            if (now >= ramp_end and resolved) or now >= ramp_end + JOIN_SLACK_S:
                break
            if len(collector.done) == plan.procs:
                break
        warm_end = time.monotonic() + plan.warmup_s
        while time.monotonic() < warm_end and len(collector.done) < plan.procs:
            drain(min(next_line, warm_end))
            if time.monotonic() >= next_line:
                say(_progress(collector, time.monotonic(), "warmup"))
                next_line += 1.0
        window_start = time.monotonic()
        metrics_start = fetch_metrics(plan.metrics_url)
        window_end = window_start + plan.duration_s
        next_line = window_start + 1.0
        while time.monotonic() < window_end and len(collector.done) < plan.procs:
            drain(min(next_line, window_end))
            if time.monotonic() >= next_line:
                say(_progress(collector, time.monotonic(), "measure"))
                next_line += 1.0
        window_end = min(window_end, time.monotonic())
        window = (window_start, window_end)
        metrics_end = fetch_metrics(plan.metrics_url)
        stop_event.set()
        # Final reports; bounded by the hard deadline.
        while len(collector.done) < plan.procs and time.monotonic() < hard_deadline:
            drain(min(hard_deadline, time.monotonic() + 0.5))
            if all(not p.is_alive() for p in procs):
                drain(time.monotonic() + 0.2)
                break
    finally:
        stop_event.set()
        start_event.set()  # a worker still waiting for the start exits at once
        for proc in procs:
            proc.join(timeout=max(0.1, min(3.0, hard_deadline - time.monotonic())))
        for proc in procs:
            if proc.is_alive() and proc.pid is not None:
                proc.terminate()  # SIGTERM to this worker's pid only
                proc.join(timeout=2.0)
            if proc.is_alive():
                proc.kill()
                proc.join(timeout=2.0)
        with contextlib.suppress(Exception):
            drain(time.monotonic())
        q.close()
        if tty:
            sys.stdout.write("\n")
    return build_report(plan, collector, window, metrics_start, metrics_end)


# -- the report ------------------------------------------------------------------------------------

def _pcts(values: np.ndarray, qs: dict[str, float]) -> dict[str, float | None]:
    if len(values) == 0:
        return {k: None for k in qs}
    got = np.percentile(values, list(qs.values()))
    return {k: round(float(v), 3) for k, v in zip(qs, got, strict=True)}


def histogram_quantile(q: float, buckets: list[tuple[float, float]]) -> float | None:
    """Prometheus-style quantile from cumulative (le, count) buckets, linear in a bucket."""
    buckets = sorted(buckets)
    if not buckets or buckets[-1][1] <= 0:
        return None
    rank = q * buckets[-1][1]
    prev_le, prev_count = 0.0, 0.0
    for le, count in buckets:
        if count >= rank:
            if math.isinf(le):
                return prev_le  # beyond the top finite bucket: its bound is all we know
            if count == prev_count:
                return le
            return prev_le + (le - prev_le) * (rank - prev_count) / (count - prev_count)
        prev_le, prev_count = le, count
    return buckets[-1][0]


def server_figures(start: dict[str, float] | None, end: dict[str, float] | None,
                   window_s: float) -> dict | None:
    """Server figures over the window from two /metrics readings."""
    if start is None or end is None:
        return None
    name = "tickwire_tick_duration_seconds"
    pat = re.compile(re.escape(name) + r'_bucket\{le="([^"]+)"\}')
    buckets = []
    for key, value in end.items():
        m = pat.fullmatch(key)
        if m:
            buckets.append((float(m.group(1)), value - start.get(key, 0.0)))
    p99 = histogram_quantile(0.99, buckets)
    ticks = end.get(f"{name}_count", 0.0) - start.get(f"{name}_count", 0.0)
    overruns = (end.get("tickwire_tick_overruns_total", 0.0)
                - start.get("tickwire_tick_overruns_total", 0.0))
    skipped = (end.get("tickwire_ticks_skipped_total", 0.0)
               - start.get("tickwire_ticks_skipped_total", 0.0))
    return {
        "tick_rate": round(ticks / window_s, 2) if window_s > 0 else None,
        "tick_duration_ms_p99": None if p99 is None else round(p99 * 1000.0, 3),
        "overruns": int(overruns),
        "ticks_skipped": int(skipped),
        "players": end.get("tickwire_players"),
    }


def build_report(plan: Plan, c: Collector, window: tuple[float, float],
                 metrics_start: dict | None, metrics_end: dict | None) -> dict:
    """The JSON-able report over the measurement window."""
    w0, w1 = window
    span = max(0.0, w1 - w0)
    snap = np.concatenate(c.snap) if c.snap else np.empty((0, 6))
    bot = np.concatenate(c.snap_bot) if c.snap_bot else np.empty(0, dtype=np.int32)
    inwin = (snap[:, 0] >= w0) & (snap[:, 0] < w1)
    s, b = snap[inwin], bot[inwin]
    # Intervals between consecutive in-window snapshots of the same bot.
    order = np.lexsort((s[:, 0], b))
    s_sorted, b_sorted = s[order], b[order]
    same = b_sorted[1:] == b_sorted[:-1]
    intervals = np.diff(s_sorted[:, 0])[same] * 1000.0 if len(s_sorted) > 1 else np.empty(0)
    crtt = np.concatenate(c.crtt) if c.crtt else np.empty(0)
    # Client RTT samples are stamped with their report time; keep the reports in the window.
    crtt_times = np.concatenate([np.full(len(a), t) for (t, _), a in zip(c.counters, c.crtt,
                                                                         strict=True)]) \
        if c.crtt else np.empty(0)
    crtt = crtt[(crtt_times >= w0) & (crtt_times <= w1 + 0.5)]

    connected = len(c.ever_connected)
    per_client = max(1, connected)
    delta = s[s[:, 4] == 0]
    entity_snapshots = float(delta[:, 5].sum())
    ws_rate, tcp_rate = _counter_rates(c.counters, w0, w1)
    errors = c.errors()
    decode = _decode_errors(c.counters)
    if decode:
        errors["decode"] = decode
    close_codes: Counter[str] = Counter()
    for v in c.live.values():
        close_codes.update(v["close_codes"])
    snaps_per_bot = np.bincount(b, minlength=plan.count)[sorted(c.ever_connected)] \
        if connected else np.empty(0)
    server = server_figures(metrics_start, metrics_end, span)
    report: dict[str, Any] = {
        "url": plan.url,
        "behavior": plan.behavior,
        "procs": plan.procs,
        "ramp_s": plan.ramp_s,
        "warmup_s": plan.warmup_s,
        "ack_only": plan.ack_only,
        "netsim": {"latency_ms": plan.latency_ms, "jitter_ms": plan.jitter_ms,
                   "loss": plan.loss},
        "clients_target": plan.count,
        "clients_connected": connected,
        "clients_failed": c.failed,
        "duration_s": round(span, 3),
        "window_monotonic": [w0, w1],
        "rtt_ms": _pcts(s[:, 1][s[:, 1] > 0], {"p50": 50, "p95": 95, "p99": 99}),
        "client_rtt_ms": _pcts(crtt, {"p50": 50, "p95": 95, "p99": 99}),
        "snapshots_per_s": round(len(s) / span / per_client, 3) if span > 0 else 0.0,
        "snapshots_per_s_min": (round(float(snaps_per_bot.min()) / span, 3)
                                if span > 0 and len(snaps_per_bot) else 0.0),
        "snapshot_interval_ms": {
            **_pcts(intervals, {"p50": 50, "p99": 99}),
            "max": round(float(intervals.max()), 3) if len(intervals) else None,
        },
        "bytes_in_per_s": round(ws_rate / per_client, 1),
        "tcp_bytes_in_per_s": None if tcp_rate is None else round(tcp_rate / per_client, 1),
        "snapshot_payload_bytes_mean": (round(float(delta[:, 2].mean()), 1)
                                        if len(delta) else None),
        "bytes_per_entity_per_snapshot": (round(float(delta[:, 2].sum()) / entity_snapshots, 3)
                                          if entity_snapshots else None),
        "entities_mean": round(float(delta[:, 5].mean()), 1) if len(delta) else None,
        "keyframes": int((s[:, 4] == 1).sum()),
        "keyframes_total": int((snap[:, 4] == 1).sum()),
        "netsim_frames_dropped": sum(v["dropped"] for v in c.live.values()),
        "errors": dict(sorted(errors.items())),
        "close_codes": dict(sorted(close_codes.items())),
        "server": server,
        "notes": [],
    }
    if server is None:
        report["notes"].append(f"server metrics not reachable at {plan.metrics_url}")
    if c.connect_messages:
        report["notes"].append("connect: " + "; ".join(c.connect_messages))
    if c.crashes:
        report["notes"].extend(f"worker crashed: {e}" for e in c.crashes)
    checks = []
    for cond in plan.conditions:
        failed, actual = cond.failed(report)
        checks.append({"condition": str(cond), "actual": actual, "failed": failed})
    report["thresholds"] = checks
    failures = [ch["condition"] for ch in checks if ch["failed"]]
    if connected == 0:
        failures.insert(0, "no bot could connect")
    report["failures"] = failures
    report["passed"] = not failures
    return report


def _counter_rates(counters: list[tuple[float, np.ndarray]], w0: float, w1: float
                   ) -> tuple[float, float | None]:
    """Aggregate bytes/s (WebSocket, TCP) over the window from per-bot cumulative counters:
    for each bot, (last - first reading inside the window) / (time between them)."""
    first: dict[int, tuple[float, int, int]] = {}
    last: dict[int, tuple[float, int, int]] = {}
    for t, rows in counters:
        if not (w0 <= t <= w1 + 0.5):  # the report just after the window end counts
            continue
        for bot, ws, tcp, _ in rows.tolist():
            first.setdefault(bot, (t, ws, tcp))
            last[bot] = (t, ws, tcp)
    ws_rate = 0.0
    tcp_rate = 0.0
    tcp_ok = False
    for bot, (t0, ws0, tcp0) in first.items():
        t1, ws1, tcp1 = last[bot]
        if t1 - t0 < 0.4:
            continue
        ws_rate += (ws1 - ws0) / (t1 - t0)
        if tcp0 >= 0 and tcp1 >= 0:  # TCP_INFO can be missing (not Linux, not TCP)
            tcp_ok = True
            tcp_rate += (tcp1 - tcp0) / (t1 - t0)
    return ws_rate, (tcp_rate if tcp_ok else None)


def _decode_errors(counters: list[tuple[float, np.ndarray]]) -> int:
    latest: dict[int, int] = {}
    for _, rows in counters:
        for bot, _, _, dec in rows.tolist():
            latest[bot] = dec
    return sum(latest.values())


def _fmt(v: object, unit: str = "") -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:.1f}{unit}" if abs(v) >= 10 else f"{v:.2f}{unit}"
    return f"{v}{unit}"


def format_report(r: dict) -> str:
    """The plain-text report table."""
    rtt, crtt, iv = r["rtt_ms"], r["client_rtt_ms"], r["snapshot_interval_ms"]
    rows = [
        ("clients", f"{r['clients_connected']}/{r['clients_target']} connected, "
                    f"{r['clients_failed']} failed"),
        ("window", f"{r['duration_s']:.1f} s ({r['behavior']}, {r['procs']} procs)"),
        ("rtt (server) ms", f"p50 {_fmt(rtt['p50'])}  p95 {_fmt(rtt['p95'])}  "
                            f"p99 {_fmt(rtt['p99'])}"),
        ("rtt (ping) ms", f"p50 {_fmt(crtt['p50'])}  p95 {_fmt(crtt['p95'])}  "
                          f"p99 {_fmt(crtt['p99'])}"),
        ("snapshots/s", f"{_fmt(r['snapshots_per_s'])} per client "
                        f"(min {_fmt(r['snapshots_per_s_min'])})"),
        ("interval ms", f"p50 {_fmt(iv['p50'])}  p99 {_fmt(iv['p99'])}  max {_fmt(iv['max'])}"),
        ("bytes in/s", f"{_fmt(r['bytes_in_per_s'])} per client (WebSocket payload), "
                       f"{_fmt(r['tcp_bytes_in_per_s'])} TCP"),
        ("bytes/entity", f"{_fmt(r['bytes_per_entity_per_snapshot'])} per snapshot "
                         f"(deltas; {_fmt(r['entities_mean'])} entities)"),
        ("keyframes", f"{r['keyframes']} in window, {r['keyframes_total']} total"),
        ("errors", ", ".join(f"{k} {v}" for k, v in r["errors"].items()) or "none"),
        ("close codes", ", ".join(f"{k}: {v}" for k, v in r["close_codes"].items()) or "none"),
    ]
    srv = r["server"]
    if srv is None:
        rows.append(("server", "metrics unavailable"))
    else:
        rows.append(("server", f"{_fmt(srv['tick_rate'])} ticks/s, tick p99 "
                               f"{_fmt(srv['tick_duration_ms_p99'])} ms, "
                               f"{srv['overruns']} overruns"))
    for ch in r["thresholds"]:
        rows.append(("threshold", f"{ch['condition']}: {'FAILED' if ch['failed'] else 'ok'}"
                                  f" (actual {_fmt(ch['actual'])})"))
    for note in r["notes"]:
        rows.append(("note", note))
    rows.append(("result", "PASS" if r["passed"] else "FAIL: " + "; ".join(r["failures"])))
    width = max(len(k) for k, _ in rows)
    return "\n".join(f"{k:<{width}}  {v}" for k, v in rows)
