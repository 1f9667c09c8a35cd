"""The load tester's figures, sans-I/O: worker messages in, live line and report out.

Theory of operation
-------------------
Workers (local processes or remote `--worker`s) send raw samples every 0.5 s, stamped in
seconds since the run's common start. `Collector` keeps them. Two readers:

- the live line (`Collector.live`) counts only the time every worker has already reported
  up to. Counting "the last second" instead under-counts by the share of that second whose
  samples are still in flight (0.25 s of every second on average with 0.5 s reports, which
  is the ~20% a tester saw);
- the report (`build_report`) cuts the measurement window itself and computes percentiles
  over the samples of all bots together, never averages of percentiles, plus a per-second
  time series of the whole run.

Every distribution is given as p50/p90/p95/p99/max. Thresholds live in
client_demo.thresholds.
"""

from __future__ import annotations

import math
import re
from collections import Counter
from dataclasses import dataclass
from typing import Any

import numpy as np

from client_demo.promtext import labelled
from client_demo.stages import Stage, client_seconds
from client_demo.thresholds import DEFAULT_CONDITIONS, Condition

PCTS = {"p50": 50.0, "p90": 90.0, "p95": 95.0, "p99": 99.0}
SNAP_COLUMNS = 6  # t, server rtt ms, payload bytes, frame bytes, keyframe, live entities

# -- collecting --------------------------------------------------------------------------------

class Collector:
    """Everything the workers reported. Times are seconds since the run's start."""

    def __init__(self, count: int) -> None:
        self.count = count
        self.snap_bot: list[np.ndarray] = []
        self.snap: list[np.ndarray] = []
        self.crtt_bot: list[np.ndarray] = []
        self.crtt: list[np.ndarray] = []
        self.counters: list[tuple[float, np.ndarray]] = []  # (t, rows bot,ws,tcp,decode)
        self.live_state: dict[int, dict] = {}  # worker -> last payload summary
        self.series: dict[int, list[tuple[float, int, int]]] = {}  # (t, connected, errors)
        self.reported_until: dict[int, float] = {}  # worker -> newest report time
        self.connect_messages: list[str] = []
        self.crashes: list[str] = []
        self.lost: list[str] = []
        self.done: set[int] = set()
        self.pids: dict[int, int] = {}
        self.workers: dict[int, str] = {}  # worker -> where it runs (host:pid)
        self.ever_connected: set[int] = set()

    def add(self, kind: str, worker: int, payload: dict) -> None:
        if kind == "ready":
            self.pids[worker] = int(payload.get("pid", 0))
            self.workers[worker] = str(payload.get("where", payload.get("pid", "")))
            return
        if kind == "crash":
            self.crashes.append(str(payload.get("error", "")))
            self.done.add(worker)
            return
        if kind == "lost":
            self.lost.append(f"worker {worker} ({self.workers.get(worker, '?')}): "
                             f"{payload.get('reason', 'lost')}")
            self.done.add(worker)
            self.reported_until.pop(worker, None)
            return
        if "snap" not in payload:
            self.done.add(worker)
            self.reported_until.pop(worker, None)
            return
        self.snap_bot.append(payload["snap_bot"])
        self.snap.append(payload["snap"])
        self.crtt_bot.append(payload["crtt_bot"])
        self.crtt.append(payload["crtt"])
        self.counters.append((payload["t"], payload["counters"]))
        self.ever_connected.update(int(b) for b in payload["counters"][:, 0])
        summary = {k: payload[k] for k in ("connected", "failed", "errors", "close_codes",
                                           "dropped")}
        self.live_state[worker] = summary
        self.series.setdefault(worker, []).append(
            (float(payload["t"]), int(payload["connected"]), int(sum(payload["errors"].values()))))
        self.reported_until[worker] = float(payload["t"])
        for msg in payload["connect_messages"]:
            if msg not in self.connect_messages and len(self.connect_messages) < 3:
                self.connect_messages.append(msg)
        if kind == "done":
            self.done.add(worker)
            self.reported_until.pop(worker, None)

    @property
    def connected(self) -> int:
        return sum(v["connected"] for v in self.live_state.values())

    @property
    def failed(self) -> int:
        return sum(v["failed"] for v in self.live_state.values())

    def errors(self) -> Counter[str]:
        total: Counter[str] = Counter()
        for v in self.live_state.values():
            total.update(v["errors"])
        if self.lost:
            total["worker_lost"] += len(self.lost)
        return total

    def live(self) -> dict[str, Any]:
        """Figures for the live line over the newest second that every running worker has
        fully reported: (complete_s, snapshots_per_s, rtt_p50, rtt_p99)."""
        if not self.reported_until:
            return {"complete_s": None, "snapshots_per_s": 0, "rtt_p50": None,
                    "rtt_p99": None}
        until = min(self.reported_until.values())
        recent = [a for a in self.snap[-8 * max(1, len(self.live_state)):] if len(a)]
        rows = np.concatenate(recent) if recent else np.empty((0, SNAP_COLUMNS))
        rows = rows[(rows[:, 0] >= until - 1.0) & (rows[:, 0] < until)]
        rtt = rows[:, 1][rows[:, 1] > 0]
        p50, p99 = (np.percentile(rtt, [50, 99]) if len(rtt) else (None, None))
        return {"complete_s": until, "snapshots_per_s": len(rows),
                "rtt_p50": None if p50 is None else float(p50),
                "rtt_p99": None if p99 is None else float(p99)}


def progress_line(c: Collector, elapsed_s: float, total_s: float | None, phase: str) -> str:
    """The live line: phase, elapsed/remaining time, clients, snapshot rate, RTT, errors."""
    live = c.live()
    if live["rtt_p50"] is not None:
        rtt = f"rtt p50 {live['rtt_p50']:5.1f} p99 {live['rtt_p99']:5.1f} ms"
    else:
        rtt = "rtt p50   -   p99   -   ms"
    left = "" if total_s is None else f" left {_clock(max(0.0, total_s - elapsed_s))}"
    errors = sum(c.errors().values())
    per = live["snapshots_per_s"] / c.connected if c.connected else 0.0
    return (f"[{phase:>7} {_clock(elapsed_s)}{left}] connected {c.connected}/{c.count}  "
            f"snapshots/s {live['snapshots_per_s']:6d} ({per:4.1f}/client)  {rtt}  "
            f"errors {errors}")


def _clock(seconds: float) -> str:
    s = int(seconds)
    return f"{s // 60:d}:{s % 60:02d}"


# -- the report ------------------------------------------------------------------------------

def pcts(values: np.ndarray) -> dict[str, float | None]:
    """p50/p90/p95/p99/max of `values` (None each when empty), rounded to 3 decimals."""
    if len(values) == 0:
        return {**{k: None for k in PCTS}, "max": None}
    got = np.percentile(values, list(PCTS.values()))
    out: dict[str, float | None] = {k: round(float(v), 3)
                                    for k, v in zip(PCTS, got, strict=True)}
    out["max"] = round(float(np.max(values)), 3)
    return out


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


def _delta_labelled(start: dict, end: dict, name: str, label: str) -> dict[str, int]:
    a, b = labelled(start, name, label), labelled(end, name, label)
    out = {k: round(v - a.get(k, 0.0)) for k, v in b.items()}
    return {k: v for k, v in sorted(out.items()) if v}


def _room_rates(rooms_start: list[dict] | None, rooms_end: list[dict] | None,
                window_s: float) -> list[dict] | None:
    if rooms_start is None or rooms_end is None or window_s <= 0:
        return None
    before = {r.get("id"): r for r in rooms_start}
    out = []
    for r in rooms_end:
        b = before.get(r.get("id"))
        rate = None
        if b is not None and isinstance(r.get("tick"), int | float) \
                and isinstance(b.get("tick"), int | float):
            rate = round((r["tick"] - b["tick"]) / window_s, 2)
        out.append({"id": r.get("id"), "players": r.get("players"),
                    "configured_tick_rate": r.get("tick_rate"), "tick_rate": rate})
    return out


def _quantiles_ms(start: dict[str, float], end: dict[str, float],
                  name: str) -> dict[str, float | None]:
    """PCTS of histogram `name` over the window between two /metrics readings, ms."""
    pat = re.compile(re.escape(name) + r'_bucket\{le="([^"]+)"\}')
    buckets = []
    for key, value in end.items():
        m = pat.fullmatch(key)
        if m:
            buckets.append((float(m.group(1)), value - start.get(key, 0.0)))
    out = {}
    for k, q in PCTS.items():
        v = histogram_quantile(q / 100.0, buckets)
        out[k] = None if v is None else round(v * 1000.0, 3)
    return out


def server_figures(start: dict[str, float] | None, end: dict[str, float] | None,
                   window_s: float, rooms_start: list[dict] | None = None,
                   rooms_end: list[dict] | None = None,
                   rooms_span_s: float | None = None) -> dict | None:
    """Server figures over the window from two /metrics readings (and two of /rooms,
    `rooms_span_s` apart; default the window).

    `ticks_per_s_all_rooms` is the sum over rooms; `tick_rate_per_room` is each room's own
    rate (from /rooms tick numbers, else the sum divided by the room count).
    """
    if start is None or end is None:
        return None
    name = "tickwire_tick_duration_seconds"

    def diff(key: str) -> float:
        return end.get(key, 0.0) - start.get(key, 0.0)

    ticks = diff(f"{name}_count")
    all_rate = round(ticks / window_s, 2) if window_s > 0 else None
    rooms = _room_rates(rooms_start, rooms_end,
                        window_s if rooms_span_s is None else rooms_span_s)
    n_rooms = len(rooms) if rooms is not None else int(end.get("tickwire_rooms", 0.0))
    if rooms and all(r["tick_rate"] is not None for r in rooms):
        per_room = [r["tick_rate"] for r in rooms]
    elif all_rate is not None and n_rooms > 0:
        per_room = [round(all_rate / n_rooms, 2)] * n_rooms
    else:
        per_room = []
    inputs_rejected = _delta_labelled(start, end, "tickwire_inputs_rejected_total", "reason")
    return {
        "rooms": n_rooms,
        "clients_per_room": ([r["players"] for r in rooms] if rooms is not None else None),
        "tick_rate_per_room": per_room,
        "tick_rate_per_room_min": min(per_room) if per_room else None,
        "ticks_per_s_all_rooms": all_rate,
        "rooms_detail": rooms,
        "tick_duration_ms": _quantiles_ms(start, end, name),
        # Of that, the time the server's thread was not running (other processes had the
        # CPU): a tail here and not in the CPU time is a starved server, not slow code.
        "tick_off_cpu_ms": _quantiles_ms(start, end, "tickwire_tick_off_cpu_seconds"),
        "overruns": int(diff("tickwire_tick_overruns_total")),
        "ticks_skipped": int(diff("tickwire_ticks_skipped_total")),
        "players": end.get("tickwire_players"),
        "inputs_rejected": inputs_rejected,
        "inputs_rejected_total": float(sum(inputs_rejected.values())),
        "frames_rejected": _delta_labelled(start, end, "tickwire_frames_rejected_total",
                                           "reason"),
        "handshakes_rejected": _delta_labelled(start, end,
                                               "tickwire_handshakes_rejected_total", "reason"),
        "disconnects": _delta_labelled(start, end, "tickwire_disconnects_total", "code"),
    }


@dataclass
class ReportContext:
    """What a report needs to know about the run besides the samples."""

    url: str
    count: int
    behavior: str
    stages: tuple[Stage, ...]
    conditions: list[Condition]
    default_fail: bool = True
    procs: int = 1
    ramp_s: float = 0.0
    warmup_s: float = 0.0
    ack_only: bool = False
    netsim: dict | None = None
    metrics_url: str = ""
    mode: str = "local"
    interrupted: str | None = None  # the signal's name when the run was cut short
    start_monotonic: float | None = None  # local runs: the start on this host's clock


def build_report(ctx: ReportContext, c: Collector, window: tuple[float, float],
                 metrics_start: dict | None, metrics_end: dict | None,
                 rooms_start: list[dict] | None = None,
                 rooms_end: list[dict] | None = None,
                 rooms_span_s: float | None = None) -> dict:
    """The JSON-able report over the measurement window (seconds since the start)."""
    w0, w1 = window
    span = max(0.0, w1 - w0)
    snap = np.concatenate(c.snap) if c.snap else np.empty((0, SNAP_COLUMNS))
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
    crtt_times = (np.concatenate([np.full(len(a), t) for (t, _), a
                                  in zip(c.counters, c.crtt, strict=True)])
                  if c.crtt else np.empty(0))
    crtt = crtt[(crtt_times >= w0) & (crtt_times <= w1 + 0.5)]

    connected = len(c.ever_connected)
    # Client-seconds in the window, from the schedule of the bots that connected: with
    # ramp stages the number of clients changes, so "per client" means per client-second.
    client_s = client_seconds(ctx.stages, sorted(c.ever_connected), w0, w1)
    delta = s[s[:, 4] == 0]
    entity_snapshots = float(delta[:, 5].sum())
    ws_rate, tcp_rate = counter_rates(c.counters, w0, w1)
    clients_in_window = max(1.0, client_s / span) if span > 0 else 1.0
    errors = c.errors()
    decode = decode_errors(c.counters)
    if decode:
        errors["decode"] = decode
    close_codes: Counter[str] = Counter()
    for v in c.live_state.values():
        close_codes.update(v["close_codes"])
    snaps_per_bot = (np.bincount(b, minlength=ctx.count)[sorted(c.ever_connected)]
                     if connected else np.empty(0))
    server = server_figures(metrics_start, metrics_end, span, rooms_start, rooms_end,
                            rooms_span_s)
    report: dict[str, Any] = {
        "url": ctx.url,
        "mode": ctx.mode,
        "behavior": ctx.behavior,
        "procs": ctx.procs,
        "workers": {str(k): v for k, v in sorted(c.workers.items())},
        "stages": [{"duration_s": st.duration_s, "target": st.target} for st in ctx.stages],
        "ramp_s": ctx.ramp_s,
        "warmup_s": ctx.warmup_s,
        "ack_only": ctx.ack_only,
        "netsim": ctx.netsim or {},
        "interrupted": ctx.interrupted is not None,
        "clients_target": ctx.count,
        "clients_connected": connected,
        "clients_failed": c.failed,
        "duration_s": round(span, 3),
        "window_s": [round(w0, 3), round(w1, 3)],
        "window_monotonic": (None if ctx.start_monotonic is None else
                             [ctx.start_monotonic + w0, ctx.start_monotonic + w1]),
        "rtt_ms": pcts(s[:, 1][s[:, 1] > 0]),
        "client_rtt_ms": pcts(crtt),
        "snapshots_per_s": round(len(s) / client_s, 3) if client_s > 0 else 0.0,
        "snapshots_per_s_min": (round(float(snaps_per_bot.min()) / span, 3)
                                if span > 0 and len(snaps_per_bot) else 0.0),
        "snapshot_interval_ms": pcts(intervals),
        "bytes_in_per_s": round(ws_rate / clients_in_window, 1),
        "tcp_bytes_in_per_s": (None if tcp_rate is None
                               else round(tcp_rate / clients_in_window, 1)),
        "snapshot_payload_bytes_mean": (round(float(delta[:, 2].mean()), 1)
                                        if len(delta) else None),
        "bytes_per_entity_per_snapshot": (round(float(delta[:, 2].sum()) / entity_snapshots, 3)
                                          if entity_snapshots else None),
        "entities_mean": round(float(delta[:, 5].mean()), 1) if len(delta) else None,
        "keyframes": int((s[:, 4] == 1).sum()),
        "keyframes_total": int((snap[:, 4] == 1).sum()),
        "netsim_frames_dropped": sum(v["dropped"] for v in c.live_state.values()),
        "errors": dict(sorted(errors.items())),
        "close_codes": dict(sorted(close_codes.items())),
        "server": server,
        "timeseries": timeseries(c, snap, max(w1, _last_time(c))),
        "notes": [],
    }
    if server is None:
        report["notes"].append(f"server metrics not reachable at {ctx.metrics_url}")
    if c.connect_messages:
        report["notes"].append("connect: " + "; ".join(c.connect_messages))
    report["notes"].extend(f"worker crashed: {e}" for e in c.crashes)
    report["notes"].extend(f"worker lost: {e}" for e in c.lost)
    conditions = list(ctx.conditions)
    if not conditions and ctx.default_fail:
        conditions = list(DEFAULT_CONDITIONS)
    checks = []
    for cond in conditions:
        failed, actual = cond.failed(report)
        checks.append({"condition": str(cond), "actual": actual, "failed": failed,
                       "default": not ctx.conditions})
    report["thresholds"] = checks
    failures = [ch["condition"] for ch in checks if ch["failed"]]
    if connected == 0:
        failures.insert(0, "no bot could connect")
    if ctx.interrupted is not None:
        failures.insert(0, f"interrupted by {ctx.interrupted}")
    report["failures"] = failures
    report["passed"] = not failures
    return report


def _last_time(c: Collector) -> float:
    return max((t for t, _ in c.counters), default=0.0)


def timeseries(c: Collector, snap: np.ndarray, end_s: float) -> list[dict]:
    """One row per whole second of the run: clients connected (at the second's end, from
    each worker's last report), snapshots received per second, their server RTT p50/p99,
    snapshot bytes received, and new errors."""
    n = max(0, math.ceil(end_s))
    if n == 0:
        return []
    t = snap[:, 0]
    keep = (t >= 0) & (t < n)
    sec = t[keep].astype(np.int64)
    counts = np.bincount(sec, minlength=n)
    nbytes = np.bincount(sec, weights=snap[keep, 3], minlength=n)
    rtt = snap[keep, 1]
    order = np.argsort(sec, kind="stable")
    bounds = np.searchsorted(sec[order], np.arange(n + 1))
    clients = np.zeros(n, dtype=np.int64)
    errors_cum = np.zeros(n, dtype=np.int64)
    for rows in c.series.values():
        arr = np.array(rows, dtype=np.float64).reshape(-1, 3)
        # The last report at or before the end of each second (0 before the first).
        idx = np.searchsorted(arr[:, 0], np.arange(1, n + 1), side="right") - 1
        ok = idx >= 0
        clients[ok] += arr[idx[ok], 1].astype(np.int64)
        errors_cum[ok] += arr[idx[ok], 2].astype(np.int64)
    new_errors = np.diff(errors_cum, prepend=0)
    out = []
    for k in range(n):
        r = rtt[order[bounds[k]:bounds[k + 1]]]
        r = r[r > 0]
        p50, p99 = (np.percentile(r, [50, 99]) if len(r) else (None, None))
        out.append({
            "t_s": k + 1,
            "clients": int(clients[k]),
            "snapshots_per_s": int(counts[k]),
            "rtt_p50_ms": None if p50 is None else round(float(p50), 3),
            "rtt_p99_ms": None if p99 is None else round(float(p99), 3),
            "bytes_in": int(nbytes[k]),
            "errors": int(max(0, new_errors[k])),
        })
    return out


def counter_rates(counters: list[tuple[float, np.ndarray]], w0: float, w1: float
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


def decode_errors(counters: list[tuple[float, np.ndarray]]) -> int:
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


def fmt_pcts(d: dict) -> str:
    return "  ".join(f"{k} {_fmt(d.get(k))}" for k in (*PCTS, "max"))


def report_rows(r: dict) -> list[tuple[str, str]]:
    """The report as (label, text) rows: the text table and the HTML table."""
    rows = [
        ("clients", f"{r['clients_connected']}/{r['clients_target']} connected, "
                    f"{r['clients_failed']} failed"),
        ("window", f"{r['duration_s']:.1f} s ({r['behavior']}, {r['procs']} "
                   f"{'workers via Redis' if r['mode'] == 'master' else 'procs'})"),
        ("rtt (server) ms", fmt_pcts(r["rtt_ms"])),
        ("rtt (ping) ms", fmt_pcts(r["client_rtt_ms"])),
        ("snapshots/s", f"{_fmt(r['snapshots_per_s'])} per client "
                        f"(min {_fmt(r['snapshots_per_s_min'])})"),
        ("interval ms", fmt_pcts(r["snapshot_interval_ms"])),
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
        per_room = ", ".join(_fmt(x) for x in srv["tick_rate_per_room"]) or "-"
        cpr = srv["clients_per_room"]
        rows.append(("server rooms", f"{srv['rooms']} rooms, clients per room "
                                     f"{'-' if cpr is None else ', '.join(map(str, cpr))}"))
        rows.append(("server ticks/s", f"{per_room} per room "
                                       f"({_fmt(srv['ticks_per_s_all_rooms'])} all rooms)"))
        rows.append(("server tick ms", fmt_pcts(srv["tick_duration_ms"]) +
                     f"  ({srv['overruns']} overruns, {srv['ticks_skipped']} skipped)"))
        if srv.get("tick_off_cpu_ms"):  # absent from a server before the metric
            rows.append(("  of it off-CPU ms", fmt_pcts(srv["tick_off_cpu_ms"])))
        rej = srv["inputs_rejected"]
        rows.append(("inputs rejected", ", ".join(f"{k} {v}" for k, v in rej.items())
                     or "none"))
        if srv["frames_rejected"]:
            rows.append(("frames rejected", ", ".join(
                f"{k} {v}" for k, v in srv["frames_rejected"].items())))
        if srv["handshakes_rejected"]:
            rows.append(("upgrades refused", ", ".join(
                f"{k} {v}" for k, v in srv["handshakes_rejected"].items())))
    for ch in r["thresholds"]:
        label = "default check" if ch.get("default") else "threshold"
        rows.append((label, f"{ch['condition']}: {'FAILED' if ch['failed'] else 'ok'}"
                            f" (actual {_fmt(ch['actual'])})"))
    for note in r["notes"]:
        rows.append(("note", note))
    rows.append(("result", "PASS" if r["passed"] else "FAIL: " + "; ".join(r["failures"])))
    return rows


def format_report(r: dict) -> str:
    """The plain-text report table."""
    rows = report_rows(r)
    width = max(len(k) for k, _ in rows)
    return "\n".join(f"{k:<{width}}  {v}" for k, v in rows)
