"""Soak: churn bots against a real server for a while and check that nothing leaks.

    python -m bench.soak --minutes 2 [--bots 30] [--out bench/results/soak.json]

Theory of operation
-------------------
1. Start `tickwire serve` on a free loopback port; read the baseline RSS, open file
   descriptors and asyncio tasks from /healthz (its "process" key).
2. Run `--bots` churning bots for `--minutes`: each one joins, plays for 1-5 s (an input
   per tick, sometimes firing), then leaves with a close frame, or drops its TCP
   connection without one (the seat then waits out the resume grace), or resumes after a
   drop; and again, until the time is up.
3. Wait for the server to settle (no connections, no seats, no rooms: empty rooms are
   disposed of after 30 s), bounded by `--settle-timeout`.
4. Read the same numbers again and compare: RSS within +20 MB, fds and tasks back to the
   baseline +- a few. Print a verdict, write JSON, exit 0 (pass) or 1 (fail).

Not part of the test run: it takes minutes by design. Figures are data; the verdict's
tolerances are generous on purpose (an allocator keeps some memory after a peak).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import random
import signal
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import aiohttp

from client_demo.client import Client, ClientError
from server.nodeproc import ServerProcess, free_port

REPO = Path(__file__).resolve().parent.parent
RSS_TOLERANCE_MB = 20.0
FD_TOLERANCE = 5
TASK_TOLERANCE = 5


async def health(base_url: str) -> dict:
    async with aiohttp.ClientSession() as http, \
            http.get(base_url + "/healthz", timeout=aiohttp.ClientTimeout(total=5)) as resp:
        return await resp.json()


def _abort(client: Client) -> None:
    """Drop the TCP connection without a close frame (a lost network)."""
    conn = getattr(client.ws, "_conn", None) if client.ws is not None else None
    if conn is not None and conn.transport is not None:
        conn.transport.abort()


async def bot(index: int, ws_url: str, deadline: float, counts: Counter,
              session: aiohttp.ClientSession) -> None:
    rng = random.Random(index)
    while time.monotonic() < deadline:
        client = Client(ws_url, f"soak{index}", session=session, ping_interval_s=1.0)
        dropped = False  # our own abort: its 1006 is not an error
        try:
            await client.connect()
            counts["joins"] += 1
            for _ in range(2):  # a drop may be followed by a resume on the same seat
                dropped = False
                play_s = rng.uniform(1.0, 5.0)
                period = 1.0 / client.tick_rate
                end = time.monotonic() + play_s
                k = 0
                while time.monotonic() < end and not client.closed.is_set():
                    await client.send_input(rng.uniform(-1, 1), rng.uniform(-1, 1),
                                            aim=rng.uniform(0, 6.28), fire=rng.random() < 0.05)
                    k += 1
                    await asyncio.sleep(max(0.0, end - play_s + k * period - time.monotonic()))
                counts["snapshots"] += client.stats.snapshots
                ending = rng.random()
                if ending < 0.5:
                    counts["leaves"] += 1
                    break
                _abort(client)
                dropped = True
                counts["drops"] += 1
                await asyncio.wait_for(client.closed.wait(), 5)
                if ending < 0.75 or time.monotonic() >= deadline:
                    break
                await client.resume()
                counts["resumes"] += 1
        except (ClientError, aiohttp.ClientError, ConnectionError, TimeoutError) as exc:
            counts[f"error:{type(exc).__name__}"] += 1
            await asyncio.sleep(0.5)
        finally:
            await client.close()
            if client.close_code not in (None, 1000) and not dropped:
                counts[f"close:{client.close_code}"] += 1


async def soak(minutes: float, bots: int, settle_timeout_s: float) -> dict:
    port = free_port()
    base_url = f"http://127.0.0.1:{port}"
    log_path = Path(tempfile.gettempdir()) / f"tickwire-soak-server-{port}.log"
    log_path.unlink(missing_ok=True)  # a fresh log, not one left by an earlier run
    server = ServerProcess(port=port, log_path=log_path, extra_args=["--log-level", "warning"],
                           cwd=REPO, host=None, plain_logs=False, health_timeout_s=20.0)
    try:
        await asyncio.to_thread(server.start)
    except RuntimeError as exc:
        raise SystemExit(f"soak: {exc}") from None
    try:
        await asyncio.sleep(1.0)
        baseline = (await health(base_url))["process"]
        print(f"soak: server pid {server.pid} on port {port} (log {log_path}); "
              f"baseline {baseline}", flush=True)
        counts: Counter = Counter()
        started = time.monotonic()
        deadline = started + minutes * 60.0
        peak = dict(baseline)
        async with aiohttp.ClientSession() as session:
            tasks = [asyncio.create_task(bot(i, f"ws://127.0.0.1:{port}/ws", deadline, counts,
                                             session)) for i in range(bots)]
            while not all(t.done() for t in tasks):
                await asyncio.wait(tasks, timeout=10.0)
                now = await health(base_url)
                for key, value in now["process"].items():
                    peak[key] = max(peak.get(key, 0), value)
                print(f"soak: {time.monotonic() - started:5.0f} s  players {now['players']:3d}"
                      f"  rooms {now['rooms']}  {now['process']}  joins {counts['joins']}",
                      flush=True)
                if time.monotonic() > deadline + 60:
                    for t in tasks:
                        t.cancel()
            for t in tasks:
                with contextlib.suppress(asyncio.CancelledError):
                    exc = t.exception() if not t.cancelled() else None
                    if exc is not None:
                        counts[f"bot_crash:{type(exc).__name__}"] += 1
        settle_started = time.monotonic()
        while True:
            now = await health(base_url)
            if now["connections"] == 0 and now["players"] == 0 and now["rooms"] == 0:
                break
            if time.monotonic() - settle_started > settle_timeout_s:
                counts["settle_timeout"] += 1
                break
            await asyncio.sleep(1.0)
        settled_s = time.monotonic() - settle_started
        await asyncio.sleep(1.0)
        after = (await health(base_url))["process"]
    finally:
        server.stop(signal.SIGTERM, timeout=15)
    delta = {k: round(after.get(k, 0) - baseline.get(k, 0), 1) for k in baseline}
    checks = {
        "rss_mb": delta.get("rss_mb", 0) <= RSS_TOLERANCE_MB,
        "open_fds": abs(delta.get("open_fds", 0)) <= FD_TOLERANCE,
        "asyncio_tasks": abs(delta.get("asyncio_tasks", 0)) <= TASK_TOLERANCE,
        "settled": counts["settle_timeout"] == 0,
    }
    return {
        "minutes": minutes, "bots": bots, "baseline": baseline, "peak": peak, "after": after,
        "delta": delta, "settle_s": round(settled_s, 1), "counts": dict(counts),
        "tolerance": {"rss_mb": RSS_TOLERANCE_MB, "open_fds": FD_TOLERANCE,
                      "asyncio_tasks": TASK_TOLERANCE},
        "checks": checks, "pass": all(checks.values()),
        "server_exit_code": server.returncode,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.soak", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--minutes", type=float, default=2.0, help="churn time (default 2)")
    parser.add_argument("--bots", type=int, default=30, help="concurrent bots (default 30)")
    parser.add_argument("--settle-timeout", type=float, default=120.0, metavar="S",
                        help="longest wait for rooms to empty after the churn (default 120)")
    parser.add_argument("--out", type=Path, default=REPO / "bench" / "results" / "soak.json")
    args = parser.parse_args(argv)
    result = asyncio.run(soak(args.minutes, args.bots, args.settle_timeout))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    verdict = "PASS" if result["pass"] else "FAIL"
    print(f"soak: {verdict}  baseline {result['baseline']}  after {result['after']}  "
          f"delta {result['delta']}  peak {result['peak']}")
    print(f"soak: counts {result['counts']}  settled in {result['settle_s']} s  "
          f"checks {result['checks']}  -> {args.out}")
    return 0 if result["pass"] else 1


if __name__ == "__main__":
    sys.exit(main())
