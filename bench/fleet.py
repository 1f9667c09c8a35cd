"""The fleet benchmark: matchmaking latency, Redis cost per join, CPU per player.

    python -m bench.fleet [--joins 200 --rate 50] [--bots 200 --duration 20 --warmup 5]
                          [--entities 100] [--out FILE] [--skip-cpu]

Theory of operation
-------------------
1. *Join latency.* A local redis-server (server.redis_server) and 2 nodes
   (`tickwire serve --redis`, started with server.nodeproc). `--joins` players join at
   `--rate` per second on an absolute schedule, alternating the node they ask: each join
   is POST /matchmake and then the WebSocket to the answer's URL until the Welcome. The
   latency of each (p50/p99) is matchmake-to-Welcome as a player sees it.
2. *Redis commands per join.* `CONFIG RESETSTAT` before the joins, `INFO commandstats`
   after: every command Redis ran in that time (the nodes' refreshes included, and the
   commands inside the Lua scripts) divided by the joins, with the breakdown by command;
   and the round trips per join (script calls and connection set-up).
3. *CPU per player.* The arena scenario with rooms of `--bots / 2` players: 2 nodes with
   `--bots` bots from `tickwire bots --matchmake` (matchmaking puts one room on each
   node), against 1 node (no Redis) with the same bots (both rooms on the one node). The
   node processes' utime+stime over the bots' measuring window (bench.arena's sampler),
   and the most players each node seated at once (the spread). Before it, the join
   phase's players are gone and one registry refresh has counted their rooms empty.

Results are data, not asserts: JSON (default bench/results/fleet.json) and a table.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import re
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

import aiohttp
import numpy as np

from bench.arena import LOAD_TEST_SERVER_ARGS, ProcSampler
from client_demo.client import Client
from client_demo.matchmake import matchmake
from server.nodeproc import PYTHON_M_CLI, ServerProcess, free_port
from server.redis_server import RedisServer

ROOT = Path(__file__).resolve().parents[1]
SCENARIOS = ROOT / "bench" / "scenarios"
RESULTS = ROOT / "bench" / "results"
ENV = {**os.environ, "PYTHONPATH": str(ROOT)}
REFRESH_S = 2.0  # the nodes' registry refresh (tickwire serve's default --refresh)


def scenario_params(entities: int, room_size: int, directory: Path) -> Path:
    """The arena scenario file with `npc.count = entities` and rooms of `room_size`."""
    text = (SCENARIOS / "arena.toml").read_text()
    text = re.sub(r"(?m)^max_players = \d+", f"max_players = {room_size}", text)
    text = re.sub(r"(?m)^count = \d+", f"count = {entities}", text)
    path = directory / f"arena-e{entities}-m{room_size}.toml"
    path.write_text(text)
    return path


def start_nodes(n: int, params: Path, redis_url: str | None) -> list[ServerProcess]:
    nodes = []
    try:
        for _ in range(n):
            port = free_port()
            args = ["--params", str(params), "--log-level", "warning",
                    *LOAD_TEST_SERVER_ARGS, "--matchmakes-per-ip-per-s", "0"]
            if redis_url:
                args += ["--redis", redis_url, "--public-url", f"ws://127.0.0.1:{port}"]
            nodes.append(ServerProcess(port=port, command=PYTHON_M_CLI, cwd=ROOT, env=ENV,
                                       plain_logs=False, extra_args=args).start())
    except BaseException:
        for node in nodes:
            node.stop()
        raise
    return nodes


def redis_command_calls(url: str) -> dict[str, int]:
    import redis
    stats = redis.Redis.from_url(url).info("commandstats")
    return {name.removeprefix("cmdstat_"): int(v["calls"]) for name, v in stats.items()}


async def join_phase(nodes: list[ServerProcess], joins: int, rate: float) -> dict:
    """`joins` players at `rate`/s; matchmake-to-Welcome latency of each, seconds."""
    latencies: list[float] = []
    failures: list[str] = []
    clients: list[Client] = []
    connector = aiohttp.TCPConnector(limit=0)
    async with aiohttp.ClientSession(connector=connector) as session:
        async def join(i: int) -> None:
            t0 = time.perf_counter()
            try:
                answer = await matchmake(session, nodes[i % len(nodes)].base_url)
                client = Client(answer["url"], f"j{i}", session=session, ping_interval_s=0)
                await client.connect()
                clients.append(client)
                latencies.append(time.perf_counter() - t0)
            except Exception as exc:  # a failed join is data, not a crash
                failures.append(f"{type(exc).__name__}: {exc}")

        start = time.monotonic()
        tasks = []
        for i in range(joins):
            delay = start + i / rate - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            tasks.append(asyncio.create_task(join(i)))
        await asyncio.wait_for(asyncio.gather(*tasks), 60.0 + joins / rate)
        await asyncio.gather(*(c.close() for c in clients), return_exceptions=True)
    ms = np.array(latencies) * 1000.0
    return {"joins": joins, "rate_per_s": rate, "ok": len(latencies),
            "failed": len(failures), "failures": failures[:3],
            "matchmake_to_welcome_ms": {
                "p50": round(float(np.percentile(ms, 50)), 2) if len(ms) else None,
                "p99": round(float(np.percentile(ms, 99)), 2) if len(ms) else None,
                "max": round(float(ms.max()), 2) if len(ms) else None}}


def node_players(node: ServerProcess) -> int:
    with urllib.request.urlopen(node.base_url + "/healthz", timeout=5) as resp:
        return int(json.loads(resp.read())["players"])


def wait_idle(nodes: list[ServerProcess], refresh_s: float, bound_s: float = 30.0) -> None:
    """Until no node seats anyone, then one registry refresh more (so matchmaking sees the
    rooms empty, and the next phase's bots fill them as a fresh fleet would)."""
    until = time.monotonic() + bound_s
    while any(node_players(n) for n in nodes):
        if time.monotonic() > until:
            raise RuntimeError(f"players still seated {bound_s:g} s after the join phase")
        time.sleep(0.25)
    time.sleep(refresh_s * 1.25)


class PlayerSampler(threading.Thread):
    """The most players each node seated at once (GET /healthz every 0.5 s): shows how
    matchmaking spread the bots."""

    def __init__(self, nodes: list[ServerProcess]) -> None:
        super().__init__(daemon=True, name="player-sampler")
        self.nodes = nodes
        self.most = [0] * len(nodes)
        self._halt = threading.Event()

    def run(self) -> None:
        while not self._halt.wait(0.5):
            for i, node in enumerate(self.nodes):
                with contextlib.suppress(OSError, ValueError, KeyError):
                    self.most[i] = max(self.most[i], node_players(node))

    def stop(self) -> None:
        self._halt.set()
        self.join(timeout=5.0)


def cpu_phase(nodes: list[ServerProcess], bots: int, duration_s: float, warmup_s: float
              ) -> dict:
    """`bots` bots through /matchmake on the first node; CPU of every node over the window."""
    samplers = [ProcSampler(n.pid) for n in nodes]
    players = PlayerSampler(nodes)
    for s in samplers:
        s.start()
    players.start()
    try:
        with tempfile.TemporaryDirectory() as tmp:
            report_path = Path(tmp) / "bots.json"
            ramp = min(5.0, bots / 20.0)
            cmd = [*PYTHON_M_CLI, "bots", "--matchmake", nodes[0].base_url, "--count",
                   str(bots), "--behavior", "arena", "--ramp", str(ramp), "--warmup",
                   str(warmup_s), "--duration", str(duration_s), "--json", str(report_path),
                   "--quiet"]
            done = subprocess.run(cmd, cwd=ROOT, env=ENV, capture_output=True, text=True,
                                  timeout=60.0 + ramp + warmup_s + duration_s)
            if not report_path.exists():
                raise RuntimeError(f"bots wrote no report (exit {done.returncode}):\n"
                                   f"{done.stdout}\n{done.stderr}")
            report = json.loads(report_path.read_text())
    finally:
        for s in samplers:
            s.stop()
        players.stop()
    w0, w1 = report["window_monotonic"]
    per_node = [s.over(w0, w1)["cpu_cores"] for s in samplers]
    cores = sum(c for c in per_node if c is not None)
    return {"nodes": len(nodes), "bots": bots, "connected": report["clients_connected"],
            "players_max_per_node": players.most,
            "cpu_cores_per_node": per_node, "cpu_cores_total": round(cores, 4),
            "cpu_cores_per_player": round(cores / max(1, report["clients_connected"]), 6),
            "snapshots_per_s": report["snapshots_per_s"], "errors": report["errors"]}


def run(args: argparse.Namespace) -> dict:
    result: dict = {"cpu_count": os.cpu_count(), "entities": args.entities}
    with tempfile.TemporaryDirectory() as tmp, RedisServer.start() as redis:
        params = scenario_params(args.entities, max(1, args.bots // 2), Path(tmp))
        nodes = start_nodes(2, params, redis.url)
        try:
            import redis as redis_client
            redis_client.Redis.from_url(redis.url).config_resetstat()
            result["join"] = asyncio.run(join_phase(nodes, args.joins, args.rate))
            calls = redis_command_calls(redis.url)
            calls = {k: v for k, v in calls.items() if k not in ("info", "config|resetstat")}
            ok = max(1, result["join"]["ok"])
            # Commands run inside the Lua scripts are counted too; the round trips are the
            # commands a node sends (script calls, plus connection set-up).
            result["redis_commands_per_join"] = round(sum(calls.values()) / ok, 2)
            sent = sum(v for k, v in calls.items()
                       if k in ("evalsha", "eval", "script|load", "hello")
                       or k.startswith("client|"))
            result["redis_round_trips_per_join"] = round(sent / ok, 2)
            result["redis_commands"] = calls
            if not args.skip_cpu:
                wait_idle(nodes, REFRESH_S)
                result["fleet_2_nodes"] = cpu_phase(nodes, args.bots, args.duration,
                                                    args.warmup)
        finally:
            for node in nodes:
                node.stop()
        if not args.skip_cpu:
            (single,) = start_nodes(1, params, None)
            try:
                result["single_node"] = cpu_phase([single], args.bots, args.duration,
                                                  args.warmup)
            finally:
                single.stop()
    return result


def format_table(r: dict) -> str:
    j = r["join"]
    lines = [f"joins {j['ok']}/{j['joins']} at {j['rate_per_s']:g}/s: matchmake-to-Welcome "
             f"p50 {j['matchmake_to_welcome_ms']['p50']} ms, p99 "
             f"{j['matchmake_to_welcome_ms']['p99']} ms",
             f"redis round trips per join: {r['redis_round_trips_per_join']}; commands "
             f"(inside scripts too) per join: {r['redis_commands_per_join']} "
             f"({', '.join(f'{k} {v}' for k, v in sorted(r['redis_commands'].items()))})"]
    for key in ("fleet_2_nodes", "single_node"):
        if key in r:
            c = r[key]
            lines.append(f"{key}: {c['connected']}/{c['bots']} bots (most seated per node "
                         f"{c['players_max_per_node']}), {c['cpu_cores_total']} "
                         f"cores ({c['cpu_cores_per_node']}), "
                         f"{c['cpu_cores_per_player'] * 1000:.3f} millicores per player")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.fleet", description=__doc__.split(
        "\n\n")[0])
    p.add_argument("--joins", type=int, default=200)
    p.add_argument("--rate", type=float, default=50.0, help="joins per second")
    p.add_argument("--bots", type=int, default=200)
    p.add_argument("--duration", type=float, default=20.0)
    p.add_argument("--warmup", type=float, default=5.0)
    p.add_argument("--entities", type=int, default=100, help="NPCs per room")
    p.add_argument("--skip-cpu", action="store_true", help="only the join measurements")
    p.add_argument("--out", default=str(RESULTS / "fleet.json"))
    args = p.parse_args(argv)
    result = run(args)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    print(format_table(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
