"""Headless bots on the shipped client, and one worker's swarm of them.

Theory of operation
-------------------
What a bot does next is its behaviour (client_demo.behaviors, sans-I/O).

A *swarm* is one worker's share of the bots (`worker_main` is the local process entry
point, `client_demo.botfleet` runs one for a remote master). Every bot is one task: it
joins and leaves as the run's stages say (client_demo.stages), and while joined sends
one input per server tick (twice that for `spam`), each at an absolute deadline
`joined_at + k * period` (never `sleep(period)`, so the rate does not drift with the
time a send takes). The bot acks through `Client.send_input`, which carries the newest
decoded tick. A bot that leaves closes cleanly (the client then sends Leave, so its seat
is freed at once).

Every `report_interval_s` the swarm sends the parent one `report` message: raw,
timestamped samples (per snapshot: bot, arrival time, server RTT, sizes, keyframe,
entities; per Pong: client RTT) and per-bot cumulative counters (WebSocket bytes, TCP
bytes from TCP_INFO, decode errors). Samples are raw so the parent can cut the
measurement window itself and compute percentiles over all bots, never averages of
percentiles. Times are seconds since the run's common start, so workers on other hosts
agree with the parent too.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import signal
import socket
import struct
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import numpy as np

from client_demo.behaviors import make_behavior
from client_demo.cancel import cancel_and_wait
from client_demo.client import ClientError
from client_demo.netsim import NetConditions, NetsimClient
from client_demo.stages import Stage, bot_intervals
from proto import tickwire_pb2 as pb

KIND_PLAYER = pb.ENTITY_KIND_PLAYER  # the .proto's EntityKind enum is the one source
KIND_NPC = pb.ENTITY_KIND_NPC
SHORT_SLEEP_S = 0.1  # waits up to this long are plain sleeps (see Swarm._sleep_until)

# struct tcp_info (linux/tcp.h): 8 u8 fields, 24 u32 fields, then u64 pacing_rate,
# max_pacing_rate, bytes_acked, bytes_received -> tcpi_bytes_received at offset 128.
_TCPI_BYTES_RECEIVED = 128
_TCP_INFO_LEN = 136


# -- the bot client: the shipped client plus sample capture -----------------------------------

class BotClient(NetsimClient):
    """`Client` (through `NetsimClient`) that also keeps per-snapshot samples for reports."""

    def __init__(self, url: str, name: str, bot_id: int, **kwargs: Any) -> None:
        super().__init__(url, name, **kwargs)
        self.bot_id = bot_id
        # Pending samples, drained by the swarm's reporter: (t, rtt_ms, payload, frame,
        # keyframe, live entities).
        self.pending: list[tuple[float, float, int, int, bool, int]] = []
        self._crtt_cursor = 0
        self._tcp_last = -1
        self._live = 0

    ack_only = False  # set per instance: ack deltas without decoding them (see below)

    def _on_snapshot(self, snap: pb.Snapshot, size: int, now: float) -> None:
        # A chunked snapshot (interest management) is a delta unless it resets the view.
        delta = snap.baseline_tick != 0 or bool(snap.personal and not snap.personal[0] & 1)
        if self.ack_only and delta:
            # Measurement mode: the server cannot tell an ack from a decoded one, so the
            # traffic it produces is the same, without the client's decode cost. The live
            # count is the last keyframe's (decoded as usual below).
            stats = self.stats
            stats.snapshots += 1
            self.mirror.ack_tick = snap.tick
            self.mirror.tick = snap.tick
            self.server_rtt_ms = snap.rtt_ms
            self.last_input_seq = snap.last_input_seq
            self.pending.append((now, snap.rtt_ms, len(snap.payload), size, False,
                                 self._live))
            return
        before = self.stats.snapshots
        super()._on_snapshot(snap, size, now)
        if self.stats.snapshots == before:
            return  # not decoded (counted in stats.decode_errors)
        live = self._live = int(np.count_nonzero(self.mirror.state["kind"]))
        self.pending.append((now, snap.rtt_ms, len(snap.payload), size, not delta, live))

    def drain_client_rtt(self) -> list[float]:
        samples = self.stats.client_rtt_ms
        out = samples[self._crtt_cursor:]
        self._crtt_cursor = len(samples)
        return out

    def tcp_bytes_received(self) -> int:
        """Bytes of the TCP stream received so far (TCP_INFO), including WebSocket framing;
        the last value read once the socket is gone; -1 when never available."""
        sock = self.ws.get_extra_info("socket") if self.ws is not None else None
        if sock is None:
            return self._tcp_last
        try:
            info = sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, _TCP_INFO_LEN)
        except (OSError, AttributeError):
            return self._tcp_last
        if len(info) >= _TCP_INFO_LEN:
            self._tcp_last = struct.unpack_from("<Q", info, _TCPI_BYTES_RECEIVED)[0]
        return self._tcp_last

    def others(self) -> np.ndarray | None:
        """World-unit positions (K, 2) of live players and NPCs other than this bot."""
        state = self.mirror.state
        if len(state) == 0:
            return None
        kind = state["kind"]
        mask = (kind == KIND_PLAYER) | (kind == KIND_NPC)
        if 0 <= self.entity < len(mask):
            mask[self.entity] = False
        idx = np.flatnonzero(mask)
        if len(idx) == 0:
            return None
        return np.stack([state["x"][idx], state["y"][idx]], axis=1) / self.mirror.pos_scale


# -- one process's swarm ----------------------------------------------------------------------

@dataclass(frozen=True)
class SwarmConfig:
    """What one worker runs. `stages` is the run's load shape ((duration_s, target), ...;
    see client_demo.stages): bot i is connected while the target is above i."""

    worker: int
    url: str
    behavior: str
    bot_ids: tuple[int, ...]  # global indices
    total: int
    stages: tuple[tuple[float, int], ...]
    seed: int = 1
    conditions: NetConditions = field(default_factory=NetConditions)
    report_interval_s: float = 0.5
    connect_timeout_s: float = 5.0
    name_prefix: str = "bot"
    ack_only: bool = False
    matchmake: str | None = None  # http(s)://HOST:PORT of a node: seats come from there
    mode: str | None = None

    def schedule(self, i: int) -> list[tuple[float, float]]:
        """(join_s, leave_s) of bot i, seconds from the start (leave may be inf)."""
        return bot_intervals(tuple(Stage(d, n) for d, n in self.stages), i)


class Swarm:
    """Runs `config.bot_ids` as bots until `stop()`, the hard deadline or `stop_flag`.

    Reports are stamped in seconds since `start` (this host's monotonic clock), which is
    what every worker shares, on this host or another."""

    def __init__(self, config: SwarmConfig, emit: Any) -> None:
        self.config = config
        self.emit = emit  # callable(message: tuple) -> None
        self.bots: dict[int, BotClient] = {}
        self.connected: set[int] = set()
        self.failed = 0
        self.errors: Counter[str] = Counter()
        self.close_codes: Counter[str] = Counter()
        self.connect_messages: list[str] = []
        # Counters of bots that left, so a bot that joins again keeps counting up.
        self._base: dict[int, tuple[int, int, int]] = {}
        self._stop = asyncio.Event()
        self.start = 0.0

    def stop(self) -> None:
        self._stop.set()

    async def run(self, start: float, hard_deadline: float, stop_flag: Any = None) -> None:
        """Run the schedule from `start` (monotonic); stop at `hard_deadline` or when
        `stop_flag()` returns true, checked at each report."""
        self.start = start
        connector = aiohttp.TCPConnector(limit=0)  # the default limit of 100 would cap bots
        async with aiohttp.ClientSession(connector=connector) as session:
            tasks = [asyncio.create_task(self._run_bot(i, session))
                     for i in self.config.bot_ids]
            reporter = asyncio.create_task(self._report_loop(hard_deadline, stop_flag))
            await self._stop.wait()
            # Bots see the stop between two inputs; give them a moment to leave cleanly.
            _, pending = await asyncio.wait(tasks, timeout=3.0)
            # Bounded, and cancelled again if a cancel is lost (client_demo.cancel).
            await cancel_and_wait(pending, 3.0)
            await cancel_and_wait([reporter], 3.0)
            self.emit(self._report("done"))

    async def _sleep_until(self, deadline: float) -> bool:
        """Sleep to an absolute monotonic deadline; True if the swarm was stopped first.
        A short wait (a bot's wait for its next input) is a plain sleep, and a stop is
        seen when it ends: `wait_for` builds a task, a timer and a cancellation per call,
        and at 200 bots and 30 inputs/s that was about a sixth of the swarm's CPU."""
        delay = deadline - time.monotonic()
        if delay <= 0:
            return self._stop.is_set()
        if delay <= SHORT_SLEEP_S:
            await asyncio.sleep(delay)
            return self._stop.is_set()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._stop.wait(), delay)
        return self._stop.is_set()

    async def _run_bot(self, i: int, session: aiohttp.ClientSession) -> None:
        for join_s, leave_s in self.config.schedule(i):
            if await self._sleep_until(self.start + join_s):
                return
            await self._play(i, session, self.start + leave_s)
            if self._stop.is_set():
                return

    async def _play(self, i: int, session: aiohttp.ClientSession, leave_at: float) -> None:
        cfg = self.config
        rng = random.Random(cfg.seed * 1_000_003 + i)
        bot = BotClient(cfg.url, f"{cfg.name_prefix}{i}", i, session=session,
                        connect_timeout_s=cfg.connect_timeout_s, conditions=cfg.conditions,
                        seed=rng.randrange(2**32), matchmake=cfg.matchmake, mode=cfg.mode)
        bot.ack_only = cfg.ack_only
        try:
            await bot.connect()
        except ClientError as exc:
            self.failed += 1
            self.errors["connect"] += 1
            if len(self.connect_messages) < 3:
                self.connect_messages.append(str(exc))
            return
        except Exception as exc:  # a bot must never take the swarm down
            self.failed += 1
            self.errors["connect"] += 1
            if len(self.connect_messages) < 3:
                self.connect_messages.append(f"{type(exc).__name__}: {exc}")
            return
        self.bots[i] = bot
        self.connected.add(i)
        behavior = make_behavior(cfg.behavior, rng, bot.tick_rate)
        period = 1.0 / (bot.tick_rate * behavior.rate_factor)
        t0 = time.monotonic()
        k = 0
        left = False
        try:
            while not bot.closed.is_set():
                k += 1
                due = t0 + k * period
                if due >= leave_at:
                    left = True  # the schedule says this bot goes now
                    break
                if await self._sleep_until(due):
                    break
                if bot.closed.is_set():
                    break
                cmd = behavior.command(bot.own_position(),
                                       bot.others() if cfg.behavior == "chase" else None)
                try:
                    await bot.send_input(*cmd)
                except (ClientError, ConnectionError, aiohttp.ClientError):
                    break
            if not self._stop.is_set() and not left:
                # Closed by the server (or the network) during the run.
                await bot.closed.wait()
                self.errors["closed"] += 1
                self.close_codes[str(bot.close_code)] += 1
        finally:
            self.connected.discard(i)
            await self._leave(bot)
            ws, tcp, dec = self._counters(i, bot)
            self._base[i] = (ws, tcp, dec)

    @staticmethod
    async def _leave(bot: BotClient) -> None:
        """Close cleanly (1000), bounded: the client's clean close says Leave first, so the
        seat is freed at once rather than held for the resume grace."""
        with contextlib.suppress(Exception):
            await asyncio.wait_for(bot.close(1000), 3.0)

    def _counters(self, i: int, bot: BotClient) -> tuple[int, int, int]:
        ws0, tcp0, dec0 = self._base.get(i, (0, 0, 0))
        tcp = bot.tcp_bytes_received()
        return (ws0 + bot.stats.bytes_in, -1 if tcp < 0 else tcp0 + tcp,
                dec0 + bot.stats.decode_errors)

    async def _report_loop(self, hard_deadline: float, stop_flag: Any) -> None:
        every = self.config.report_interval_s
        next_at = time.monotonic() + every
        while True:
            await asyncio.sleep(max(0.0, next_at - time.monotonic()))
            next_at += every
            self.emit(self._report("report"))
            if time.monotonic() >= hard_deadline or (stop_flag is not None and stop_flag()):
                self._stop.set()
                return

    def _report(self, kind: str) -> tuple:
        """One message for the parent: (kind, worker, payload dict), times in seconds since
        the start."""
        now = time.monotonic()
        snaps: list[tuple] = []
        snap_bot: list[int] = []
        crtt: list[float] = []
        crtt_bot: list[int] = []
        counters: list[tuple[int, int, int, int]] = []
        for i, bot in self.bots.items():
            if bot.pending:
                snaps.extend(bot.pending)
                snap_bot.extend([i] * len(bot.pending))
                bot.pending = []
            c = bot.drain_client_rtt()
            if c:
                crtt.extend(c)
                crtt_bot.extend([i] * len(c))
            counters.append((i, *self._counters(i, bot)))
        arr = np.array(snaps, dtype=np.float64).reshape(-1, 6)
        arr[:, 0] -= self.start
        payload = {
            "t": now - self.start,
            "connected": len(self.connected),
            "failed": self.failed,
            "errors": dict(self.errors),
            "close_codes": dict(self.close_codes),
            "connect_messages": list(self.connect_messages),
            "snap_bot": np.asarray(snap_bot, dtype=np.int32),
            "snap": arr,  # columns: t, rtt_ms, payload bytes, frame bytes, keyframe, entities
            "crtt_bot": np.asarray(crtt_bot, dtype=np.int32),
            "crtt": np.asarray(crtt, dtype=np.float64),
            "counters": np.asarray(counters, dtype=np.int64).reshape(-1, 4),
            "dropped": sum(b.frames_dropped for b in self.bots.values()),
        }
        return kind, self.config.worker, payload


def new_event_loop_factory() -> Any:
    """uvloop's loop factory when available (it is a dependency; the bots work without)."""
    try:
        import uvloop
        return uvloop.new_event_loop
    except ImportError:
        return None


def worker_main(config: SwarmConfig, queue: Any, start_value: Any, start_event: Any,
                stop_event: Any, hard_deadline: float) -> None:
    """Local worker process entry point: wait for the common start time, run the swarm,
    report over `queue`.

    `start_value` is a shared double holding the start (monotonic seconds) once
    `start_event` is set; `stop_event` ends the run (the window is over, or the parent was
    interrupted). Ctrl-C in a terminal (and `docker stop`, `kill -- -PGID`) signals the
    whole process group: the worker ignores SIGINT and SIGTERM and stops on its parent's
    order instead, so the parent still gets the final report (and kills, by pid, a worker
    that does not stop). If the parent dies without a word, the worker notices within a
    report interval (its parent pid changes) and stops too.
    """
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    parent = os.getppid()
    queue.put(("ready", config.worker, {"pid": os.getpid(), "where": f"local:{os.getpid()}"}))
    while not start_event.wait(timeout=0.5):
        if os.getppid() != parent or time.monotonic() >= hard_deadline:
            return
    start = start_value.value
    swarm = Swarm(config, queue.put)

    def stop_flag() -> bool:
        return stop_event.is_set() or os.getppid() != parent

    try:
        with asyncio.Runner(loop_factory=new_event_loop_factory()) as runner:
            runner.run(swarm.run(start, hard_deadline, stop_flag))
    except Exception as exc:  # report, never a traceback on the user's terminal
        queue.put(("crash", config.worker, {"error": f"{type(exc).__name__}: {exc}"}))
