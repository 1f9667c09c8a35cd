"""The peer comparison of /work/shared/SCENARIO-arena.md, run end to end.

    python -m bench.arena --entities 1000 --clients 200 [--duration 20 --warmup 5]
                          [--out FILE] [--procs 1] [--profile FILE.prof] [--allow-partial]
    python -m bench.arena --params bench/scenarios/bigworld.toml --clients 200 [...]

`--entities E` picks the arena scenario file for E; `--params FILE` runs any scenario file
instead (E is its npc.count; the JSON and table have the same keys, with "scenario" the
file's stem, e.g. "bigworld"; results go to bench/results/{stem}-M{M}.json).

The server is started with the caps a load test from one address needs: no cap on
connections per address (`--max-conns-per-ip 0`, default 256) and no limit on the connect
rate (`--connects-per-ip-per-s 0`, default 20/s after a burst of 256). A room holds 250
players (bench/scenarios), so M > 250 runs in several rooms; the table and JSON say how
many, with clients per room and each room's own tick rate. A run where fewer clients
connect than asked FAILS (exit 1, "connected X of M") unless --allow-partial: a row
labelled M must measure M clients.

Theory of operation
-------------------
The server runs as its own process (`tickwire serve --params bench/scenarios/arena*.toml`;
one file per E because `serve` has no per-key override). The M clients run in a second
process tree (`tickwire bots --behavior arena`: one input per tick, a random unit
direction every 60 inputs, a ping per second, no shooting). The bots ramp, warm up and
measure the window themselves, and write the window's bounds (`time.monotonic()`, one
system-wide clock on Linux) in their JSON report.

Meanwhile a sampler thread reads the server's /proc/PID/stat (utime+stime) and
/proc/PID/status (VmRSS) four times a second. Afterwards the CPU over exactly the bots'
window is interpolated from those samples: Δ(utime+stime)/CLK_TCK ÷ wall time = cores.

Results are data, not asserts: JSON in bench/results/arena-E{E}-M{M}.json and a table.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

from client_demo.promtext import fetch_rooms
from server.nodeproc import PYTHON_M_CLI, ServerProcess, free_port
from sim.params import ParamsError, load_params

ROOT = Path(__file__).resolve().parents[1]
SCENARIOS = ROOT / "bench" / "scenarios"
RESULTS = ROOT / "bench" / "results"
PARAMS_BY_E = {1000: SCENARIOS / "arena.toml", 100: SCENARIOS / "arena-e100.toml"}
CLK_TCK = os.sysconf("SC_CLK_TCK")

# Colyseus 0.16 on the same kind of machine (SCENARIO-arena.md): cpu cores, RSS MB,
# KiB/s per client, snapshots/s, interval p50, p99 ms, bytes per entity per snapshot.
PEER = {
    (100, 50): (0.085, 75, 52, 30.15, 33.2, 34.7, 11.7),
    (100, 200): (0.21, 90, 107, 30.15, 32.9, 36.3, 12.0),
    (1000, 50): (0.13, 93, 425, 30.15, 33.1, 36.0, 13.6),
    (1000, 200): (0.28, 95, 482, 30.20, 33.0, 38.3, 13.5),
}


def read_cpu_s(pid: int) -> float:
    """utime + stime of a process, seconds (/proc/PID/stat fields 14 and 15)."""
    with open(f"/proc/{pid}/stat", encoding="ascii") as fh:
        # The command name (field 2) may hold spaces: split after its closing ")".
        rest = fh.read().rsplit(")", 1)[1].split()
    return (int(rest[11]) + int(rest[12])) / CLK_TCK


def read_rss_mb(pid: int) -> float:
    """VmRSS of a process, MiB."""
    with open(f"/proc/{pid}/status", encoding="ascii") as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024.0
    return float("nan")


class RoomsPoller(threading.Thread):
    """Reads the server's /rooms every `every_s` (each read bounded by `timeout_s`) with
    its monotonic time. The bots read /rooms and /metrics at the window's ends with a 2 s
    bound; a saturated server (bigworld at 200 clients before issue 16's vectorisation)
    missed it, and the row said ``rooms: None``. These reads fill the room figures then."""

    def __init__(self, url: str, every_s: float = 1.0, timeout_s: float = 10.0) -> None:
        super().__init__(daemon=True, name="rooms-poller")
        self.url = url
        self.every_s = every_s
        self.timeout_s = timeout_s
        self.samples: list[tuple[float, list[dict]]] = []
        self._halt = threading.Event()

    def run(self) -> None:
        while not self._halt.is_set():
            rooms = fetch_rooms(self.url, timeout=self.timeout_s)
            if rooms is not None:
                self.samples.append((time.monotonic(), rooms))
            self._halt.wait(self.every_s)

    def stop(self) -> None:
        self._halt.set()
        self.join(timeout=self.timeout_s + 2.0)

    def over(self, t0: float, t1: float) -> dict | None:
        """rooms, clients_per_room and tick_rate_per_room from the first and last reads
        inside [t0, t1] (None without two reads there)."""
        inside = [(t, rooms) for t, rooms in self.samples if t0 <= t <= t1]
        if len(inside) < 2:
            return None
        (ta, first), (tb, last) = inside[0], inside[-1]
        tick_then = {r.get("id"): r.get("tick") for r in first}
        rates = []
        for r in last:
            then, now = tick_then.get(r.get("id")), r.get("tick")
            ok = isinstance(then, int | float) and isinstance(now, int | float) and tb > ta
            rates.append(round((now - then) / (tb - ta), 2) if ok else None)
        return {"rooms": len(last), "clients_per_room": [r.get("players") for r in last],
                "tick_rate_per_room": rates}


class ProcSampler(threading.Thread):
    """Samples (monotonic time, cpu seconds, RSS MiB) of one pid every `every_s`."""

    def __init__(self, pid: int, every_s: float = 0.25) -> None:
        super().__init__(daemon=True, name="proc-sampler")
        self.pid = pid
        self.every_s = every_s
        self.samples: list[tuple[float, float, float]] = []
        self._halt = threading.Event()

    def run(self) -> None:
        next_at = time.monotonic()
        while not self._halt.is_set():
            try:
                self.samples.append((time.monotonic(), read_cpu_s(self.pid),
                                     read_rss_mb(self.pid)))
            except (OSError, ValueError, IndexError):
                return  # the process is gone
            next_at += self.every_s
            self._halt.wait(max(0.0, next_at - time.monotonic()))

    def stop(self) -> None:
        self._halt.set()
        self.join(timeout=2.0)

    def over(self, t0: float, t1: float) -> dict[str, float | None]:
        """CPU cores and RSS over [t0, t1], CPU interpolated at both ends."""
        if len(self.samples) < 2 or t1 <= t0:
            return {"cpu_cores": None, "rss_mb": None, "rss_mb_max": None}
        arr = np.array(self.samples)
        cpu0, cpu1 = np.interp([t0, t1], arr[:, 0], arr[:, 1])
        inside = arr[(arr[:, 0] >= t0) & (arr[:, 0] <= t1)]
        rss = inside[:, 2] if len(inside) else arr[-1:, 2]
        return {"cpu_cores": round(float(cpu1 - cpu0) / (t1 - t0), 4),
                "rss_mb": round(float(rss.mean()), 1), "rss_mb_max": round(float(rss.max()), 1)}


#: `tickwire serve` flags for a load test from one address (see the module docstring).
LOAD_TEST_SERVER_ARGS = ["--max-conns-per-ip", "0", "--connects-per-ip-per-s", "0"]
MAX_CLIENTS = 10_000


class PartialRun(RuntimeError):
    """Fewer clients connected than asked; the result is attached."""

    def __init__(self, result: dict) -> None:
        super().__init__(f"connected {result['clients_connected']} of {result['clients']} "
                         "clients asked")
        self.result = result


def start_server(params: Path, port: int, profile: Path | None,
                 server_args: list[str] | None = None) -> ServerProcess:
    """`tickwire serve` for the scenario, under cProfile when `profile` is given; output
    discarded. Stop it with `stop_server` (SIGINT, so cProfile writes its file)."""
    if profile is not None:
        command = [sys.executable, "-m", "cProfile", "-o", str(profile),
                   str(ROOT / "server" / "cli.py")]
    else:
        command = PYTHON_M_CLI
    server = ServerProcess(port=port, command=command, cwd=ROOT,
                           env={**os.environ, "PYTHONPATH": str(ROOT)}, plain_logs=False,
                           extra_args=["--params", str(params), "--log-level", "warning",
                                       *(LOAD_TEST_SERVER_ARGS if server_args is None
                                         else server_args)],
                           health_timeout_s=20.0)
    try:
        return server.start()
    except RuntimeError:
        raise RuntimeError(f"server did not start (exit {server.returncode})") from None


def stop_server(server: ServerProcess) -> None:
    server.stop(signal.SIGINT)  # run_app exits cleanly; cProfile writes its file


def scenario_of(params_path: Path) -> tuple[str, int]:
    """A scenario file's name (its stem) and entity count E (its npc.count), validated as
    `tickwire serve` will read it (a bad file raises ParamsError naming the key)."""
    return params_path.stem, load_params(params_path).npc_count


def run_arena(entities: int, clients: int, duration_s: float = 20.0, warmup_s: float = 5.0,
              procs: int = 1, profile: Path | None = None, ack_only: bool = False,
              allow_partial: bool = False, server_args: list[str] | None = None,
              params_path: Path | None = None) -> dict:
    """One run of the scenario; returns the result dict. Raises PartialRun when fewer
    clients connected than asked (unless `allow_partial`). `server_args` replaces the
    load-test caps (tests use it to make a run partial on purpose). `params_path` runs that
    scenario file instead of the arena's for `entities` (which is then its npc.count)."""
    scenario = "arena"
    if params_path is not None:
        params = params_path
        scenario, entities = scenario_of(params_path)
    else:
        params = PARAMS_BY_E.get(entities)
    if params is None:
        raise ValueError(f"no scenario file for E={entities}; one of {sorted(PARAMS_BY_E)}")
    port = free_port()
    server = start_server(params, port, profile, server_args)
    sampler = ProcSampler(server.pid)
    sampler.start()
    poller = RoomsPoller(f"http://127.0.0.1:{port}/rooms")
    poller.start()
    try:
        with tempfile.TemporaryDirectory() as tmp:
            report_path = Path(tmp) / "bots.json"
            ramp = min(5.0, clients / 20.0)
            cmd = [sys.executable, "-m", "server.cli", "bots", "--url",
                   f"ws://127.0.0.1:{port}/ws", "--count", str(clients), "--behavior", "arena",
                   "--ramp", str(ramp), "--warmup", str(warmup_s), "--duration",
                   str(duration_s), "--procs", str(procs), "--json", str(report_path),
                   "--quiet", "--allow-errors"] + (["--ack-only"] if ack_only else [])
            bound = 30.0 + ramp + warmup_s + duration_s + 20.0
            done = subprocess.run(cmd, cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)},
                                  capture_output=True, text=True, timeout=bound)
            if not report_path.exists():
                raise RuntimeError(f"bots wrote no report (exit {done.returncode}):\n"
                                   f"{done.stdout}\n{done.stderr}")
            bots = json.loads(report_path.read_text())
    finally:
        sampler.stop()
        poller.stop()
        stop_server(server)
    w0, w1 = bots["window_monotonic"]
    proc_figures = sampler.over(w0, w1)
    kib = bots["bytes_in_per_s"] / 1024.0
    tcp = bots["tcp_bytes_in_per_s"]
    srv = bots["server"] or {}
    room_figures = {k: srv.get(k) for k in ("rooms", "clients_per_room", "tick_rate_per_room")}
    rooms_from = "bots"
    if room_figures["rooms"] is None or room_figures["clients_per_room"] is None:
        polled = poller.over(w0, w1)
        if polled is not None:
            room_figures, rooms_from = polled, "arena /rooms poll"
    result = {
        "scenario": scenario,
        "entities": entities,
        "clients": clients,
        "clients_connected": bots["clients_connected"],
        "clients_failed": bots["clients_failed"],
        "rooms": room_figures["rooms"],
        "clients_per_room": room_figures["clients_per_room"],
        "tick_rate_per_room": room_figures["tick_rate_per_room"],
        "rooms_from": rooms_from,
        "window_s": bots["duration_s"],
        "server_cpu_cores": proc_figures["cpu_cores"],
        "server_rss_mb": proc_figures["rss_mb"],
        "server_rss_mb_max": proc_figures["rss_mb_max"],
        "kib_per_s_per_client": round(kib, 2),
        "tcp_kib_per_s_per_client": None if tcp is None else round(tcp / 1024.0, 2),
        "snapshots_per_s": bots["snapshots_per_s"],
        "snapshots_per_s_min": bots["snapshots_per_s_min"],
        "interval_ms": bots["snapshot_interval_ms"],
        "rtt_ms": bots["rtt_ms"],
        "client_rtt_ms": bots["client_rtt_ms"],
        # Steady state holds exactly E NPCs + M players (no shooting, nobody dies).
        "bytes_per_entity_per_snapshot": (
            round(bots["snapshot_payload_bytes_mean"] / (entities + clients), 3)
            if bots["snapshot_payload_bytes_mean"] else None),
        "entities_per_snapshot": bots["entities_mean"],
        "snapshot_payload_bytes_mean": bots["snapshot_payload_bytes_mean"],
        "server": bots["server"],
        "errors": bots["errors"],
        "close_codes": bots["close_codes"],
        "bots_procs": procs,
        "bots_ack_only": ack_only,
        "cpu_count": os.cpu_count(),
        "peer": dict(zip(("cpu_cores", "rss_mb", "kib_per_s_per_client", "snapshots_per_s",
                          "interval_p50_ms", "interval_p99_ms",
                          "bytes_per_entity_per_snapshot"),
                         PEER.get((entities, clients), ()), strict=False)),
    }
    if bots["clients_connected"] < clients and not allow_partial:
        raise PartialRun(result)
    return result


def _join(values: list | None) -> str:
    return "-" if not values else ", ".join(str(v) for v in values)


def format_rows(results: list[dict]) -> str:
    head = ("| E | M | who | connected | rooms (clients each) | ticks/s per room | CPU cores "
            "| RSS MB | KiB/s/client (TCP) | snapshots/s (min) | interval p50/p99 ms "
            "| RTT p50/p99 ms | B/entity/snapshot |")
    lines = [head, "|" + "---|" * 13]
    for r in results:
        iv, rtt = r["interval_ms"], r["rtt_ms"]
        tcp = r["tcp_kib_per_s_per_client"]
        lines.append(
            f"| {r['entities']} | {r['clients']} | tickwire | {r['clients_connected']} "
            f"| {r['rooms']} ({_join(r['clients_per_room'])}) | {_join(r['tick_rate_per_room'])} "
            f"| {r['server_cpu_cores']} "
            f"| {r['server_rss_mb']} | {r['kib_per_s_per_client']} ({tcp}) "
            f"| {r['snapshots_per_s']} ({r['snapshots_per_s_min']}) "
            f"| {iv['p50']} / {iv['p99']} | {rtt['p50']} / {rtt['p99']} "
            f"| {r['bytes_per_entity_per_snapshot']} |")
        peer = PEER.get((r["entities"], r["clients"]))
        if peer:
            lines.append(f"| {r['entities']} | {r['clients']} | peer | - | - | - | {peer[0]} "
                         f"| {peer[1]} "
                         f"| {peer[2]} | {peer[3]} | {peer[4]} / {peer[5]} | - | {peer[6]} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.arena", description=__doc__.split(
                                    "Theory of operation")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    which = p.add_mutually_exclusive_group(required=True)
    which.add_argument("--entities", type=int, choices=sorted(PARAMS_BY_E),
                       help="the arena scenario with E NPCs (bench/scenarios/arena*.toml)")
    which.add_argument("--params", metavar="FILE.toml",
                       help="any scenario file, e.g. bench/scenarios/bigworld.toml")
    p.add_argument("--clients", type=int, required=True)
    p.add_argument("--duration", type=float, default=20.0, help="window, s (default 20)")
    p.add_argument("--warmup", type=float, default=5.0, help="after the ramp, s (default 5)")
    p.add_argument("--procs", type=int, default=1,
                   help="bot processes (default 1: the scenario puts the clients in one)")
    p.add_argument("--ack-only", action="store_true",
                   help="bots ack deltas without decoding them (see tickwire bots --help)")
    p.add_argument("--allow-partial", action="store_true",
                   help="keep a run where fewer clients connected than asked (marked in the "
                        "JSON and table) instead of failing")
    p.add_argument("--out", help="JSON file (default bench/results/arena-E{E}-M{M}.json)")
    p.add_argument("--profile", metavar="FILE.prof",
                   help="run the server under cProfile and write its stats there")
    p.add_argument("--reads", choices=("tick", "arrival"), default="tick",
                   help="the server's --reads (default tick, the server's default): "
                        "arrival is the A/B contrast for reads at the tick")
    args = p.parse_args(argv)
    if not 1 <= args.clients <= MAX_CLIENTS:
        p.error(f"--clients must be in [1, {MAX_CLIENTS}]")
    params_path = Path(args.params) if args.params else None
    name = "arena"
    if params_path is not None:
        try:
            name, args.entities = scenario_of(params_path)
        except (OSError, ParamsError) as exc:
            p.error(f"--params: {exc}")
    try:
        result = run_arena(args.entities, args.clients, args.duration, args.warmup, args.procs,
                           Path(args.profile) if args.profile else None, args.ack_only,
                           allow_partial=args.allow_partial, params_path=params_path,
                           server_args=[*LOAD_TEST_SERVER_ARGS, "--reads", args.reads])
    except PartialRun as exc:
        print(format_rows([exc.result]))
        print(f"bench.arena: FAILED: {exc} (--allow-partial keeps such a run)",
              file=sys.stderr)
        return 1
    default = (f"arena-E{args.entities}-M{args.clients}.json" if params_path is None
               else f"{name}-M{args.clients}.json")
    out = Path(args.out) if args.out else RESULTS / default
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(format_rows([result]))
    print(f"written {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
