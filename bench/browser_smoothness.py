"""Browser smoothness probe: the demo client in headless Chromium behind a delaying proxy.

    python -m bench.browser_smoothness [--rtt-ms 150 --jitter-ms 30 --seconds 10]
                                       [--out bench/results/browser-smoothness.json]

Theory of operation
-------------------
1. Start `tickwire serve` on a free loopback port, and `DelayProxy` (below) in front of
   it: every chunk read from one side is written to the other `rtt/2 ± jitter` later,
   in each direction, never before the chunk read before it (TCP keeps order, so a late
   chunk holds back the ones behind it, as a real late segment would).
2. Open the demo client through the proxy in headless Chromium (so the page, the
   WebSocket and the server's RTT pings all see the delay). Instrument the page from
   outside: a requestAnimationFrame sampler copies `window.tickwire.sample` (what each
   frame drew: our own predicted player and one interpolated NPC), and thin wrappers
   around `interp.push` and `predictor.reconcile` record every snapshot's arrival and
   every prediction correction.
3. Hold movement keys (towards the far wall, release, back, ...) for `--seconds`.
4. Report, as data (nothing is asserted):
   * own player: frame-to-frame step (mean, p99, max) while moving, and corrections
     (prediction error found at a reconcile) larger than 2 units;
   * one NPC: per-frame rendered speed, mean and p99 absolute deviation from its median
     (0 = perfectly even motion; NPCs move at a constant speed between turns);
   * snapshots: received, tick gaps (ticks never seen by the interpolator), late ones
     (arrived after the render clock had already passed their tick) and the share of
     frames drawn past the newest snapshot (the interpolator starved and extrapolated).

Not part of the test run. JSON goes to `--out`, keyed by the network condition, so runs
at different conditions accumulate in one file.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import json
import math
import random
import socket
import statistics
import sys
import time
from pathlib import Path

from server.nodeproc import ServerProcess, free_port

REPO = Path(__file__).resolve().parent.parent
CHROMIUM = Path("/usr/bin/chromium")
DEFAULT_OUT = REPO / "bench" / "results" / "browser-smoothness.json"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                 "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync",
                 # keep rAF and timers at full rate in a headless, never-focused window
                 "--disable-background-timer-throttling",
                 "--disable-renderer-backgrounding",
                 "--disable-backgrounding-occluded-windows"]
CORRECTION_UNITS = 2.0
NPC_KIND = 2


# -- the delaying proxy ---------------------------------------------------------------------

class DelayProxy:
    """A TCP proxy on 127.0.0.1 delaying each chunk by `one_way_s ± jitter_s`, per
    direction, order preserved (a chunk is never released before the one read before it)."""

    def __init__(self, target_port: int, one_way_s: float, jitter_s: float,
                 seed: int = 1) -> None:
        self.target_port = target_port
        self.one_way_s = one_way_s
        self.jitter_s = jitter_s
        self.rng = random.Random(seed)
        self.server: asyncio.base_events.Server | None = None
        self.tasks: set[asyncio.Task] = set()
        self.chunks = 0

    async def start(self) -> int:
        self.server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        return self.server.sockets[0].getsockname()[1]

    async def close(self) -> None:
        if self.server is not None:
            self.server.close()
        for task in list(self.tasks):
            task.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)

    def _spawn(self, coro) -> None:
        task = asyncio.create_task(coro)
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    def _delay(self) -> float:
        j = self.rng.uniform(-self.jitter_s, self.jitter_s) if self.jitter_s > 0 else 0.0
        return max(0.0, self.one_way_s + j)

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            up_r, up_w = await asyncio.open_connection("127.0.0.1", self.target_port)
        except OSError:
            writer.close()
            return
        for sock in (writer, up_w):
            with contextlib.suppress(OSError, AttributeError):
                sock.get_extra_info("socket").setsockopt(socket.IPPROTO_TCP,
                                                         socket.TCP_NODELAY, 1)
        self._spawn(self._pipe(reader, up_w))
        self._spawn(self._pipe(up_r, writer))

    async def _pipe(self, src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[tuple[float, bytes]] = asyncio.Queue()
        last_due = 0.0

        async def release() -> None:
            try:
                while True:
                    due, chunk = await queue.get()
                    await asyncio.sleep(max(0.0, due - loop.time()))
                    if not chunk:
                        break
                    dst.write(chunk)
                    await dst.drain()
            except (OSError, ConnectionError):
                pass
            finally:
                dst.close()

        self._spawn(release())
        try:
            while True:
                try:
                    chunk = await src.read(65536)
                except (OSError, ConnectionError):
                    chunk = b""
                due = max(loop.time() + self._delay(), last_due)
                last_due = due
                queue.put_nowait((due, chunk))
                if not chunk:
                    return
                self.chunks += 1
        except asyncio.CancelledError:
            queue.put_nowait((0.0, b""))
            raise


# -- page instrumentation -----------------------------------------------------------------

INSTRUMENT = """() => {
  const g = window.tickwireGame, tw = window.tickwire;
  const rec = { frames: [], arrivals: [], corrections: [], running: true };
  window.__probe = rec;
  // Every snapshot handed to the interpolator: its tick, local arrival time, and where the
  // render clock stood then (renderTick > tick: it came after it was needed).
  const push = g.interp.push.bind(g.interp);
  g.interp.push = (tick, words, nowS) => {
    rec.arrivals.push([tick, nowS, g.interp.renderTick(nowS)]);
    return push(tick, words, nowS);
  };
  // Every reconcile: how far the re-predicted state is from the previous prediction.
  const reconcile = g.predictor.reconcile.bind(g.predictor);
  g.predictor.reconcile = (auth, seq, dead) => {
    const before = g.predictor.state ? { ...g.predictor.state } : null;
    const out = reconcile(auth, seq, dead);
    const after = g.predictor.state;
    if (before && after) rec.corrections.push(
      [performance.now() / 1000, Math.hypot(after.x - before.x, after.y - before.y)]);
    return out;
  };
  let lastT = null;
  const sample = () => {
    if (!rec.running) return;
    const s = tw.sample;
    if (s && s.t !== lastT) {
      lastT = s.t;
      const n = s.firstNpc;
      rec.frames.push([s.t, s.renderTick, s.newestTick,
                       s.me ? s.me.x : null, s.me ? s.me.y : null,
                       n ? n.slot : null, n ? n.id : null, n ? n.x : null, n ? n.y : null,
                       n ? (n.dead ? 1 : 0) : null,
                       g.keys.size]);
    }
    requestAnimationFrame(sample);
  };
  requestAnimationFrame(sample);
}"""

COLLECT = """() => {
  const r = window.__probe; r.running = false;
  return { frames: r.frames, arrivals: r.arrivals, corrections: r.corrections,
           tickRate: window.tickwireGame.tickRate, rttMs: window.tickwire.rttMs,
           pingRttMs: window.tickwire.pingRttMs, decodeErrors: window.tickwire.decodeErrors,
           predictorCorrections: window.tickwireGame.predictor.corrections,
           interpDelayMs: window.tickwireGame.interp.delayS * 1000 };
}"""


# -- statistics ---------------------------------------------------------------------------

def pct(values: list[float], q: float) -> float | None:
    if not values:
        return None
    v = sorted(values)
    k = (len(v) - 1) * q
    lo, hi = math.floor(k), math.ceil(k)
    return v[lo] + (v[hi] - v[lo]) * (k - lo)


def summary(values: list[float]) -> dict:
    if not values:
        return {"n": 0, "mean": None, "p99": None, "max": None}
    return {"n": len(values), "mean": statistics.fmean(values), "p99": pct(values, 0.99),
            "max": max(values)}


def analyse(raw: dict) -> dict:
    frames = raw["frames"]
    rate = raw["tickRate"] or 30
    dts = [b[0] - a[0] for a, b in itertools.pairwise(frames)]

    # Own player: steps between consecutive frames (both positions known), split into
    # frames while a key is held (moving) and all frames.
    steps_all, steps_moving, own_speed = [], [], []
    for a, b in itertools.pairwise(frames):
        if a[3] is None or b[3] is None:
            continue
        d = math.hypot(b[3] - a[3], b[4] - a[4])
        steps_all.append(d)
        if a[10] and b[10]:
            steps_moving.append(d)
            if b[0] > a[0]:
                own_speed.append(d / (b[0] - a[0]))

    # One NPC: per-frame rendered speed over runs of the same entity (slot and id), alive.
    npc_speeds: list[float] = []
    npc_switches = 0
    for a, b in itertools.pairwise(frames):
        if a[5] is None or b[5] is None or (a[5], a[6]) != (b[5], b[6]):
            if b[5] is not None:
                npc_switches += 1
            continue
        if a[9] or b[9]:
            continue
        dt = b[0] - a[0]
        if dt <= 0:
            continue
        npc_speeds.append(math.hypot(b[7] - a[7], b[8] - a[8]) / dt)
    npc_med = statistics.median(npc_speeds) if npc_speeds else None
    npc_dev = [abs(v - npc_med) for v in npc_speeds] if npc_speeds else []

    # Snapshots.
    arrivals = raw["arrivals"]
    ticks = [a[0] for a in arrivals]
    gaps = sum(max(0, b - a - 1) for a, b in itertools.pairwise(ticks))
    late = [a for a in arrivals if a[2] > a[0]]
    lateness_ms = [(a[2] - a[0]) / rate * 1000 for a in late]
    interarrival_ms = [(b[1] - a[1]) * 1000 for a, b in itertools.pairwise(arrivals)]
    starved = sum(1 for f in frames if f[2] is not None and f[1] > f[2])

    corrections = [c[1] for c in raw["corrections"]]
    big = [c for c in corrections if c > CORRECTION_UNITS]
    return {
        "frames": len(frames),
        "fps": (len(frames) - 1) / (frames[-1][0] - frames[0][0]) if len(frames) > 1 else None,
        "frame_dt_ms": {k: (v * 1000 if isinstance(v, float) else v)
                        for k, v in summary(dts).items()},
        "own_step_units": summary(steps_moving),
        "own_step_units_all_frames": summary(steps_all),
        "own_speed_median_units_s": statistics.median(own_speed) if own_speed else None,
        "corrections": {"reconciles": len(corrections),
                        f"over_{CORRECTION_UNITS:g}_units": len(big),
                        "max_units": max(corrections) if corrections else None,
                        "client_counter_over_0.1": raw["predictorCorrections"]},
        "npc": {"frames": len(npc_speeds), "entity_switches": npc_switches,
                "median_speed_units_s": npc_med,
                "abs_dev_mean_units_s": statistics.fmean(npc_dev) if npc_dev else None,
                "abs_dev_p99_units_s": pct(npc_dev, 0.99),
                "abs_dev_max_units_s": max(npc_dev) if npc_dev else None},
        "snapshots": {"received": len(arrivals),
                      "expected": (ticks[-1] - ticks[0] + 1) if ticks else 0,
                      "tick_gaps": gaps,
                      "late": len(late),
                      "late_by_ms_max": max(lateness_ms) if lateness_ms else 0.0,
                      "interarrival_ms": summary(interarrival_ms),
                      "frames_past_newest": starved,
                      "frames_past_newest_share": starved / len(frames) if frames else None},
        "interp_delay_ms": raw["interpDelayMs"],
        "server_rtt_ms": raw["rttMs"],
        "ping_rtt_ms": raw["pingRttMs"],
        "decode_errors": raw["decodeErrors"],
    }


# -- the run ------------------------------------------------------------------------------

async def drive(page, seconds: float) -> None:
    """Hold D or A towards the far wall for ~1.5 s, release for 0.5 s, and back again."""
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        x = await page.evaluate("window.tickwire.me ? window.tickwire.me.x : 500")
        key = "d" if x < 500 else "a"
        await page.keyboard.down(key)
        await asyncio.sleep(min(1.5, max(0.0, end - time.monotonic())))
        await page.keyboard.up(key)
        await asyncio.sleep(min(0.5, max(0.0, end - time.monotonic())))


async def run(args: argparse.Namespace) -> dict:
    from playwright.async_api import async_playwright

    port = free_port()
    log_path = Path(args.log) if args.log else Path(f"/tmp/tickwire-smoothness-{port}.log")
    extra = ["--tick-rate", str(args.tick_rate)] if args.tick_rate else []
    server = ServerProcess(port=port, log_path=log_path, extra_args=extra, cwd=REPO)
    server.start()
    proxy = DelayProxy(port, args.rtt_ms / 2000.0, args.jitter_ms / 1000.0, seed=args.seed)
    try:
        proxy_port = await proxy.start()
        async with async_playwright() as p:
            browser = await p.chromium.launch(executable_path=str(CHROMIUM),
                                              args=CHROMIUM_ARGS, timeout=30_000)
            try:
                ctx = await browser.new_context(viewport={"width": 1280, "height": 720})
                page = await ctx.new_page()
                errors: list[str] = []
                page.on("pageerror", lambda exc: errors.append(str(exc)))
                page.on("console", lambda m: errors.append(m.text)
                        if m.type == "error" else None)
                await page.goto(f"http://127.0.0.1:{proxy_port}/?name=probe",
                                wait_until="load", timeout=30_000)
                await page.wait_for_function(
                    "window.tickwire && window.tickwire.connected && window.tickwire.sample"
                    " && window.tickwire.sample.me && window.tickwire.pingRttMs !== null",
                    timeout=30_000)
                await asyncio.sleep(1.0)  # let the clock offset and jitter estimate settle
                await page.evaluate(INSTRUMENT)
                await drive(page, args.seconds)
                await asyncio.sleep(0.3)
                raw = await page.evaluate(COLLECT)
            finally:
                await browser.close()
    finally:
        await proxy.close()
        server.stop()
    result = analyse(raw)
    result["page_errors"] = errors
    result["conditions"] = {"rtt_ms": args.rtt_ms, "jitter_ms": args.jitter_ms,
                            "seconds": args.seconds, "tick_rate": raw["tickRate"],
                            "seed": args.seed}
    return result


def fmt(v: object, digits: int = 2) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:.{digits}f}"
    return str(v)


def print_table(r: dict) -> None:
    c, own, npc, snap = r["conditions"], r["own_step_units"], r["npc"], r["snapshots"]
    rows = [
        ("condition", f"rtt {c['rtt_ms']:g} ms ± {c['jitter_ms']:g} ms, {c['seconds']:g} s, "
                      f"{c['tick_rate']} Hz"),
        ("measured RTT (server / ping)", f"{fmt(r['server_rtt_ms'], 1)} / "
                                         f"{fmt(r['ping_rtt_ms'], 1)} ms"),
        ("frames, fps", f"{r['frames']}, {fmt(r['fps'], 1)}"),
        ("frame dt mean / p99 / max", f"{fmt(r['frame_dt_ms']['mean'], 1)} / "
                                      f"{fmt(r['frame_dt_ms']['p99'], 1)} / "
                                      f"{fmt(r['frame_dt_ms']['max'], 1)} ms"),
        ("own step (moving) mean / p99 / max",
         f"{fmt(own['mean'])} / {fmt(own['p99'])} / {fmt(own['max'])} units"),
        ("own speed median (moving)", f"{fmt(r['own_speed_median_units_s'], 1)} units/s"),
        (f"corrections > {CORRECTION_UNITS:g} units",
         f"{r['corrections'][f'over_{CORRECTION_UNITS:g}_units']} of "
         f"{r['corrections']['reconciles']} reconciles (max {fmt(r['corrections']['max_units'])})"),
        ("NPC speed median", f"{fmt(npc['median_speed_units_s'], 1)} units/s"),
        ("NPC |v - median| mean / p99 / max",
         f"{fmt(npc['abs_dev_mean_units_s'])} / {fmt(npc['abs_dev_p99_units_s'])} / "
         f"{fmt(npc['abs_dev_max_units_s'])} units/s"),
        ("snapshots received / expected", f"{snap['received']} / {snap['expected']}"),
        ("tick gaps, late", f"{snap['tick_gaps']}, {snap['late']} "
                            f"(late by max {fmt(snap['late_by_ms_max'], 1)} ms)"),
        ("inter-arrival mean / p99 / max", f"{fmt(snap['interarrival_ms']['mean'], 1)} / "
                                           f"{fmt(snap['interarrival_ms']['p99'], 1)} / "
                                           f"{fmt(snap['interarrival_ms']['max'], 1)} ms"),
        ("frames past newest snapshot",
         f"{snap['frames_past_newest']} "
         f"({fmt(100 * (snap['frames_past_newest_share'] or 0), 1)} %)"),
        ("interp delay", f"{fmt(r['interp_delay_ms'], 1)} ms"),
        ("page errors", str(len(r["page_errors"]))),
    ]
    w = max(len(k) for k, _ in rows)
    for k, v in rows:
        print(f"{k:<{w}}  {v}")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rtt-ms", type=float, default=150.0, help="added round trip (ms)")
    ap.add_argument("--jitter-ms", type=float, default=30.0,
                    help="± uniform jitter per chunk and direction (ms)")
    ap.add_argument("--seconds", type=float, default=10.0, help="sampling time (s)")
    ap.add_argument("--tick-rate", type=int, default=None, help="server tick rate (Hz)")
    ap.add_argument("--seed", type=int, default=1, help="the proxy's jitter seed")
    ap.add_argument("--out", default=str(DEFAULT_OUT), help="JSON file (runs accumulate)")
    ap.add_argument("--log", default=None, help="server log file (default: /tmp)")
    args = ap.parse_args(argv)
    if args.rtt_ms < 0 or args.jitter_ms < 0 or args.seconds <= 0:
        ap.error("--rtt-ms and --jitter-ms must be >= 0, --seconds > 0")
    if not CHROMIUM.exists():
        print(f"{CHROMIUM} is missing", file=sys.stderr)
        return 2
    result = asyncio.run(run(args))
    print_table(result)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    data: dict = {}
    if out.exists():
        with contextlib.suppress(ValueError, OSError):
            data = json.loads(out.read_text())
    key = f"rtt{args.rtt_ms:g}ms-jitter{args.jitter_ms:g}ms"
    data[key] = result
    out.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")
    print(f"\nwrote {out} [{key}]")
    return 0


if __name__ == "__main__":
    sys.exit(main())
