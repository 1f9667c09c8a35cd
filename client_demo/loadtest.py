"""`tickwire bots`: a headless swarm over several processes (or hosts), a live line, a report.

Theory of operation
-------------------
The parent runs a *fleet* of workers, each a `client_demo.bots.Swarm` over its share of
the bots (round-robin, so every worker ramps over the whole ramp):

- `LocalFleet`: `--procs` worker processes on this host (multiprocessing, spawn);
- `client_demo.botfleet.RedisFleet`: `--master`, whose workers are `tickwire bots
  --worker` processes on any host, taking orders and returning samples through Redis.

Workers say `ready`; the parent then fixes a common start, and from it each bot joins and
leaves as the load shape says (`--count/--ramp`, or k6-style `--stages`). Workers send raw
samples stamped in seconds since the start every 0.5 s; the parent prints a live line a
second and keeps every sample. The *measurement window* is, for a plain run, from the end
of the ramp (once every bot has joined or failed, at most `JOIN_SLACK_S` later) plus
`--warmup`, for `--duration`; with `--stages`, the whole run. /metrics and /rooms are read
at both ends of the window so server figures are for the window too.

A run where no bot connected by the end of the connect phase gives up then. SIGINT and
SIGTERM end the run early: the workers are stopped, and the summary and JSON of what was
measured are still written, marked interrupted. Every run is bounded: a hard deadline
after which local workers are terminated, then killed, by their pid.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import multiprocessing as mp
import os
import queue as queue_mod
import signal
import sys
import time
from dataclasses import dataclass, field
from typing import Any, Protocol
from urllib.parse import urlsplit, urlunsplit

from client_demo.behaviors import BEHAVIORS
from client_demo.loadreport import (
    Collector,
    ReportContext,
    build_report,
    format_report,
    progress_line,
)
from client_demo.promtext import fetch_metrics, fetch_rooms, http_url_for
from client_demo.runlimits import (
    GRACE_S,
    JOIN_SLACK_S,
    MAX_BOTS,
    MAX_DURATION_S,
    MAX_PROCS,
    READY_TIMEOUT_S,
)
from client_demo.stages import Stage, StageError, parse_stages, peak, ramp_stages, total_s
from client_demo.thresholds import FAIL_ON_HELP, Condition, UsageError, parse_fail_on

INTERRUPT_GRACE_S = 5.0  # after a signal: how long the final reports may take


# -- CLI ---------------------------------------------------------------------------------------

def add_bots_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Register `tickwire bots` on the `tickwire` subcommand parser."""
    p = subparsers.add_parser(
        "bots", help="run a swarm of headless bots against a server and report",
        description="Run N headless bots (the shipped Python client with scripted "
                    "behaviour) against one server, print a live progress line and a "
                    "final report, and check thresholds. With --master/--worker the bots "
                    "run on several hosts (the Locust model): workers take orders from "
                    "one master through Redis, and the master prints the one report.",
        epilog=FAIL_ON_HELP, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--url", help="server WebSocket URL, ws://HOST:PORT/ws")
    p.add_argument("--matchmake", metavar="http://HOST:PORT",
                   help="instead of --url: each bot asks this node's POST /matchmake for a "
                        "seat and connects where it says (spreads over a fleet)")
    p.add_argument("--mode", dest="game_mode",
                   help="game mode to matchmake into (default: the fleet's default)")
    p.add_argument("--count", type=int, metavar="N", help="number of bots")
    p.add_argument("--ramp", type=float, metavar="S",
                   help="spread the joins over this many seconds (default min(5, N/20))")
    p.add_argument("--warmup", type=float, metavar="S",
                   help="seconds after the ramp before measuring (default 0)")
    p.add_argument("--duration", type=float, metavar="S",
                   help="length of the measurement window, seconds")
    p.add_argument("--stages", metavar="D:N[,D:N]",
                   help="ramp stages instead of --count/--ramp/--duration, as k6: "
                        "10s:50,30s:50,10s:0 goes to 50 bots in 10 s, holds 30 s, and back "
                        "to 0 in 10 s; the whole run is measured")
    p.add_argument("--procs", type=int, metavar="P",
                   help="worker processes (default ceil(N/100), at most the CPU count)")
    p.add_argument("--behavior", choices=BEHAVIORS, default="wander",
                   help="wander: random walk, occasional fire; chase: toward the nearest "
                        "entity, firing; idle: inputs without movement; spam: inputs at "
                        "2x the tick rate; arena: the SCENARIO-arena client (default wander)")
    p.add_argument("--json", metavar="FILE", help="write the report as JSON to FILE")
    p.add_argument("--csv", metavar="FILE", help="write the per-second time series as CSV")
    p.add_argument("--html", metavar="FILE",
                   help="write an HTML report: charts of the time series and the summary")
    p.add_argument("--fail-on", metavar="CONDS", help="thresholds, see below")
    p.add_argument("--allow-errors", action="store_true",
                   help="without --fail-on, pass even with errors or failed clients")
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
    dist = p.add_argument_group("bots on several hosts (Redis)")
    role = dist.add_mutually_exclusive_group()
    role.add_argument("--master", action="store_true",
                      help="hand the bots to --workers remote workers and report")
    role.add_argument("--worker", action="store_true",
                      help="wait for a master's orders and run its bots (until SIGTERM)")
    dist.add_argument("--redis", metavar="URL", default=os.environ.get("TICKWIRE_REDIS_URL"),
                      help="redis://HOST:PORT/DB both sides use (default: "
                           "$TICKWIRE_REDIS_URL; a password is better given there than on "
                           "the command line, which every local user can read)")
    dist.add_argument("--workers", type=int, default=1, metavar="K",
                      help="master: how many workers to wait for (default 1)")
    dist.add_argument("--workers-wait", type=float, default=30.0, metavar="S",
                      help="master: how long to wait for them (default 30)")
    dist.add_argument("--prefix", default="tickwire:bots", metavar="KEY",
                      help="Redis key prefix, to keep fleets apart (default tickwire:bots)")
    p.set_defaults(func=run_bots)
    return p


@dataclass
class Plan:
    """A validated run."""

    url: str
    count: int
    stages: tuple[Stage, ...]
    open_end: bool  # plain run: the last target holds until the window is over
    ramp_s: float
    warmup_s: float
    duration_s: float
    procs: int
    behavior: str
    conditions: list[Condition]
    latency_ms: float = 0.0
    jitter_ms: float = 0.0
    loss: float = 0.0
    seed: int = 1
    json_path: str | None = None
    ack_only: bool = False
    quiet: bool = True
    default_fail: bool = True
    csv_path: str | None = None
    html_path: str | None = None
    mode: str = "local"  # local | master
    redis_url: str | None = None
    workers: int = 1
    workers_wait_s: float = 30.0
    prefix: str = "tickwire:bots"
    matchmake: str | None = None  # http(s)://HOST:PORT: bots get their seats there
    game_mode: str | None = None  # the mode they matchmake into
    metrics_url: str = field(init=False)
    rooms_url: str = field(init=False)

    def __post_init__(self) -> None:
        self.metrics_url = http_url_for(self.url, "/metrics")
        self.rooms_url = http_url_for(self.url, "/rooms")

    @property
    def connect_phase_s(self) -> float:
        """When a run with no bot connected gives up: the end of the first rise."""
        t = 0.0
        for st in self.stages:
            t += st.duration_s
            if st.target > 0:
                return t + JOIN_SLACK_S
        return t + JOIN_SLACK_S

    @property
    def run_s(self) -> float:
        """Planned length from the start to the stop (the join slack not included)."""
        if self.open_end:
            return self.ramp_s + self.warmup_s + self.duration_s
        return total_s(self.stages)


def metrics_url_for(ws_url: str) -> str:
    """ws://h:p/ws -> http://h:p/metrics (wss -> https)."""
    return http_url_for(ws_url, "/metrics")


def _finite(name: str, value: float, lo: float, hi: float) -> float:
    if not (math.isfinite(value) and lo <= value <= hi):
        raise UsageError(f"{name} {value:g} is out of range [{lo:g}, {hi:g}]")
    return value


def plan_from_args(args: argparse.Namespace) -> Plan:
    """Check every value; raises UsageError with the option named."""
    url, matchmake = args.url, getattr(args, "matchmake", None)
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
    if args.stages is not None:
        for name in ("count", "ramp", "duration", "warmup"):
            if getattr(args, name) is not None:
                raise UsageError(f"--{name} does not go with --stages (the stages say it)")
        try:
            stages = parse_stages(args.stages, MAX_BOTS)
        except StageError as exc:
            raise UsageError(str(exc)) from None
        count, open_end = peak(stages), False
        ramp, warmup, duration = stages[0].duration_s, 0.0, total_s(stages)
    else:
        if args.count is None or args.duration is None:
            raise UsageError("give --count and --duration, or --stages")
        if not 1 <= args.count <= MAX_BOTS:
            raise UsageError(f"--count {args.count} is out of range [1, {MAX_BOTS}]")
        count = args.count
        duration = _finite("--duration", args.duration, 0.1, MAX_DURATION_S)
        ramp = min(5.0, count / 20.0) if args.ramp is None else args.ramp
        ramp = _finite("--ramp", ramp, 0.0, 3600.0)
        warmup = _finite("--warmup", 0.0 if args.warmup is None else args.warmup, 0.0, 3600.0)
        stages, open_end = ramp_stages(count, ramp), True
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
    mode = "master" if getattr(args, "master", False) else "local"
    if mode == "master":
        if not args.redis:
            raise UsageError("--master needs --redis URL")
        if not 1 <= args.workers <= MAX_PROCS:
            raise UsageError(f"--workers {args.workers} is out of range [1, {MAX_PROCS}]")
        _finite("--workers-wait", args.workers_wait, 0.0, 3600.0)
    return Plan(url=url, matchmake=matchmake, game_mode=getattr(args, "game_mode", None),
                count=count, stages=stages, open_end=open_end, ramp_s=ramp,
                warmup_s=warmup, duration_s=duration, procs=procs, behavior=args.behavior,
                conditions=parse_fail_on(args.fail_on), latency_ms=latency, jitter_ms=jitter,
                loss=args.loss, seed=args.seed, json_path=args.json, quiet=args.quiet,
                ack_only=args.ack_only, default_fail=not args.allow_errors,
                csv_path=args.csv, html_path=args.html, mode=mode, redis_url=args.redis,
                workers=args.workers, workers_wait_s=args.workers_wait, prefix=args.prefix)


def run_bots(args: argparse.Namespace) -> int:
    """The `tickwire bots` command. Returns the exit status (0 pass, 1 fail, 2 usage,
    128+N interrupted by signal N)."""
    if getattr(args, "worker", False):
        from client_demo.botfleet import run_worker_command
        return run_worker_command(args)
    try:
        plan = plan_from_args(args)
    except UsageError as exc:
        print(f"tickwire bots: error: {exc}", file=sys.stderr)
        return 2
    if plan.mode == "master":
        from client_demo.botfleet import RedisFleet, RedisUnreachable
        try:
            fleet: Fleet = RedisFleet.connect(plan)
        except RedisUnreachable as exc:
            print(f"tickwire bots: {exc}", file=sys.stderr)
            return 1
    else:
        fleet = LocalFleet(plan)
    stopper = Interrupts()
    try:
        with stopper.installed():
            report = Orchestrator(plan, fleet, stopper).run()
    except RuntimeError as exc:  # botfleet.FleetError: no worker came
        print(f"tickwire bots: {exc}", file=sys.stderr)
        return 1
    print(format_report(report))
    status = 0 if report["passed"] else 1
    if stopper.signum is not None:
        status = 128 + stopper.signum
    return write_outputs(plan, report) or status


def write_outputs(plan: Plan, report: dict) -> int:
    """JSON, CSV and HTML as asked; 1 (and one line each) for a file that cannot be
    written, else 0."""
    status = 0
    outputs = [(plan.json_path, lambda fh: (json.dump(report, fh, indent=2), fh.write("\n")))]
    if plan.csv_path or plan.html_path:
        from client_demo import loadhtml
        outputs += [(plan.csv_path, lambda fh: loadhtml.write_csv(report, fh)),
                    (plan.html_path, lambda fh: fh.write(loadhtml.render_html(report)))]
    for path, write in outputs:
        if not path:
            continue
        try:
            with open(path, "w", encoding="utf-8", newline="") as fh:
                write(fh)
        except OSError as exc:
            print(f"tickwire bots: cannot write {path}: {exc}", file=sys.stderr)
            status = 1
    return status


# -- signals ---------------------------------------------------------------------------------

class Interrupts:
    """SIGINT/SIGTERM turn into a flag the orchestrator checks (never an exception in the
    middle of a read); a second signal while the report is written is ignored."""

    def __init__(self) -> None:
        self.signum: int | None = None

    @property
    def name(self) -> str | None:
        return None if self.signum is None else signal.Signals(self.signum).name

    def _handle(self, signum: int, _frame: object) -> None:
        if self.signum is None:
            self.signum = signum

    @contextlib.contextmanager
    def installed(self) -> Any:
        old = {s: signal.signal(s, self._handle) for s in (signal.SIGINT, signal.SIGTERM)}
        try:
            yield self
        finally:
            for s, h in old.items():
                signal.signal(s, h)


# -- fleets ------------------------------------------------------------------------------------

class Fleet(Protocol):
    """Where the swarms run. Messages are (kind, worker, payload) as client_demo.bots
    emits them; a fleet may add ("lost", worker, {"reason"}) for a worker gone silent."""

    where: str

    @property
    def size(self) -> int: ...

    def launch(self) -> None: ...
    def begin(self, start: float) -> float: ...
    def receive(self, until: float) -> list[tuple]: ...
    def lost(self) -> list[tuple]: ...
    def stop(self) -> None: ...
    def close(self, deadline: float) -> None: ...


class LocalFleet:
    """`plan.procs` worker processes on this host; messages through one Queue."""

    where = "local"

    def __init__(self, plan: Plan) -> None:
        self.plan = plan
        self.ctx = mp.get_context("spawn")
        self.q: Any = self.ctx.Queue()
        self.start_value = self.ctx.Value("d", 0.0)
        self.start_event = self.ctx.Event()
        self.stop_event = self.ctx.Event()
        self.procs: list[Any] = []
        self.reported_lost: set[int] = set()
        self.finished: set[int] = set()
        self.hard_deadline = 0.0
        self._leftover: list[tuple] = []
        self._closed = False

    def launch(self) -> None:
        from client_demo.bots import SwarmConfig, worker_main
        from client_demo.netsim import NetConditions

        plan = self.plan
        self.hard_deadline = (time.monotonic() + READY_TIMEOUT_S + plan.run_s + JOIN_SLACK_S
                              + GRACE_S)
        conditions = NetConditions(plan.latency_ms, plan.jitter_ms, plan.loss)
        for w in range(plan.procs):
            cfg = SwarmConfig(worker=w, url=plan.url, behavior=plan.behavior,
                              bot_ids=tuple(range(w, plan.count, plan.procs)),
                              total=plan.count,
                              stages=tuple((s.duration_s, s.target) for s in plan.stages),
                              seed=plan.seed, conditions=conditions, ack_only=plan.ack_only,
                              matchmake=plan.matchmake, mode=plan.game_mode)
            proc = self.ctx.Process(target=worker_main, name=f"tickwire-bots-{w}", daemon=True,
                                    args=(cfg, self.q, self.start_value, self.start_event,
                                          self.stop_event, self.hard_deadline))
            proc.start()
            self.procs.append(proc)

    @property
    def size(self) -> int:
        return len(self.procs)

    def begin(self, start: float) -> float:
        self.start_value.value = start
        self.start_event.set()
        return self.hard_deadline

    def receive(self, until: float) -> list[tuple]:
        out, self._leftover = self._leftover, []
        if self._closed:
            return out
        while True:
            timeout = until - time.monotonic()
            try:
                msg = self.q.get(timeout=timeout) if timeout > 0 else self.q.get_nowait()
            except (queue_mod.Empty, OSError, ValueError):
                return out
            if msg[0] in ("done", "crash"):
                self.finished.add(msg[1])
            out.append(msg)
            until = min(until, time.monotonic())  # then only what is already there

    def lost(self) -> list[tuple]:
        out = []
        for w, proc in enumerate(self.procs):
            if (not proc.is_alive() and w not in self.finished and w not in self.reported_lost
                    and proc.exitcode not in (None, 0)):
                self.reported_lost.add(w)
                out.append(("lost", w, {"reason": f"exited with {proc.exitcode}"}))
        return out

    def stop(self) -> None:
        self.stop_event.set()
        self.start_event.set()  # a worker still waiting for the start exits at once

    def close(self, deadline: float) -> None:
        self.stop()
        for proc in self.procs:
            proc.join(timeout=max(0.1, min(3.0, deadline - time.monotonic())))
        for proc in self.procs:
            if proc.is_alive() and proc.pid is not None:
                proc.terminate()  # SIGTERM to this worker's pid only
                proc.join(timeout=2.0)
            if proc.is_alive():
                proc.kill()
                proc.join(timeout=2.0)
        # What the workers sent while they were closing is still read afterwards.
        self._leftover.extend(self.receive(time.monotonic()))
        self._closed = True
        self.q.close()


# -- orchestration ------------------------------------------------------------------------------

class Orchestrator:
    """Drives one run over a fleet: ready, start, phases, window, stop, report."""

    def __init__(self, plan: Plan, fleet: Any, interrupts: Interrupts | None = None) -> None:
        self.plan = plan
        self.fleet = fleet
        self.interrupts = interrupts or Interrupts()
        self.collector = Collector(plan.count)
        self.tty = sys.stdout.isatty() and not plan.quiet
        self.start = 0.0
        self.next_line = 0.0
        self.phase = "start"

    # what stops a phase early
    def _cut(self) -> bool:
        c = self.collector
        return self.interrupts.signum is not None or (len(c.done) >= self.fleet.size > 0)

    def _pump(self, until: float) -> None:
        """Take messages until `until` (monotonic), print the live line each second."""
        while True:
            now = time.monotonic()
            stop_at = min(until, self.next_line) if not self.plan.quiet else until
            for msg in self.fleet.receive(min(stop_at, now + 0.25)):
                self.collector.add(*msg)
            for msg in self.fleet.lost():
                self.collector.add(*msg)
            now = time.monotonic()
            if not self.plan.quiet and now >= self.next_line and self.start:
                self._say(progress_line(self.collector, now - self.start, self.plan.run_s,
                                        self.phase))
                self.next_line += 1.0
            if now >= until or self._cut():
                return

    def _say(self, line: str) -> None:
        if self.tty:
            sys.stdout.write("\r" + line + "\x1b[K")
        else:
            sys.stdout.write(line + "\n")
        sys.stdout.flush()

    def _gave_up(self, now: float) -> bool:
        c = self.collector
        return (now - self.start >= self.plan.connect_phase_s and not c.ever_connected
                and c.failed > 0)

    def run(self) -> dict:
        plan, c, fleet = self.plan, self.collector, self.fleet
        metrics = [None, None]
        rooms: list[tuple] = [(None, 0.0), (None, 0.0)]
        window = (0.0, 0.0)
        early: tuple = (None, (None, 0.0))
        gave_up = False
        hard_deadline = time.monotonic() + READY_TIMEOUT_S + plan.run_s + JOIN_SLACK_S \
            + GRACE_S
        if hasattr(fleet, "cancelled"):
            fleet.cancelled = lambda: self.interrupts.signum is not None
        try:
            fleet.launch()
            ready_by = time.monotonic() + READY_TIMEOUT_S
            while len(c.pids) < fleet.size and time.monotonic() < ready_by and not self._cut():
                self._pump(time.monotonic() + 0.2)
            self.start = time.monotonic() + 0.5
            hard_deadline = fleet.begin(self.start)
            self.next_line = self.start + 1.0
            early = self._server_state()  # for a run cut short before its window
            self._pump(self.start)
            # Connect phase (plain run: the ramp; stages: the first rise).
            self.phase = "ramp"
            if plan.open_end:
                ramp_end = self.start + plan.ramp_s
                while not self._cut():
                    self._pump(min(ramp_end + JOIN_SLACK_S, time.monotonic() + 0.5))
                    now = time.monotonic()
                    resolved = len(c.ever_connected) + c.failed >= plan.count
                    if (now >= ramp_end and resolved) or now >= ramp_end + JOIN_SLACK_S:
                        break
                gave_up = self._gave_up(time.monotonic()) or (
                    not c.ever_connected and c.failed >= plan.count)
                if not gave_up and not self._cut():
                    self.phase = "warmup"
                    self._pump(time.monotonic() + plan.warmup_s)
                w0 = time.monotonic()
                w1_planned = w0 + plan.duration_s
            else:
                w0 = self.start
                w1_planned = self.start + total_s(plan.stages)
            if not gave_up and not self._cut():
                metrics[0], rooms[0] = self._server_state()
                self.phase = "measure" if plan.open_end else "stages"
                while not self._cut() and time.monotonic() < w1_planned:
                    self._pump(min(w1_planned, time.monotonic() + 0.5))
                    if self._gave_up(time.monotonic()):
                        gave_up = True
                        break
            w1 = min(w1_planned, time.monotonic())
            if self.interrupts.signum is not None:
                # Cut short: report everything measured since the start.
                w0 = self.start
                metrics[0], rooms[0] = early
            window = (w0 - self.start, max(w0, w1) - self.start)
            if metrics[0] is not None:
                metrics[1], rooms[1] = self._server_state()
            fleet.stop()
            # Final reports: bounded by the hard deadline, and shorter after a signal.
            final_by = hard_deadline
            if self.interrupts.signum is not None:
                final_by = min(final_by, time.monotonic() + INTERRUPT_GRACE_S)
            self.phase = "stop"
            while len(c.done) < fleet.size and time.monotonic() < final_by:
                self._pump(min(final_by, time.monotonic() + 0.5))
                if self.interrupts.signum is not None and time.monotonic() >= final_by:
                    break
        finally:
            fleet.stop()
            fleet.close(time.monotonic() + 3.0)
            with contextlib.suppress(Exception):
                for msg in fleet.receive(time.monotonic()):
                    c.add(*msg)
            if self.tty:
                sys.stdout.write("\n")
        ctx = ReportContext(
            url=plan.url, count=plan.count, behavior=plan.behavior, stages=plan.stages,
            conditions=plan.conditions, default_fail=plan.default_fail,
            procs=fleet.size, ramp_s=plan.ramp_s, warmup_s=plan.warmup_s,
            ack_only=plan.ack_only, mode=plan.mode, metrics_url=plan.metrics_url,
            netsim={"latency_ms": plan.latency_ms, "jitter_ms": plan.jitter_ms,
                    "loss": plan.loss},
            interrupted=self.interrupts.name,
            start_monotonic=self.start if plan.mode == "local" else None)
        report = build_report(ctx, c, window, metrics[0], metrics[1], rooms[0][0], rooms[1][0],
                              rooms[1][1] - rooms[0][1])
        if gave_up:
            report["notes"].append("gave up after the connect phase: no bot connected")
        report["notes"].extend(getattr(fleet, "notes", []))
        return report

    def _server_state(self) -> tuple[dict | None, tuple[list | None, float]]:
        """(/metrics, (/rooms, when /rooms was read)): room tick rates are over the time
        between two /rooms reads, not the window's."""
        metrics = fetch_metrics(self.plan.metrics_url)
        rooms = fetch_rooms(self.plan.rooms_url)
        return metrics, (rooms, time.monotonic())
