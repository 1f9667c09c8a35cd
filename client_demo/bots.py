"""Headless bots: scripted behaviours on the shipped client, and one process's swarm.

Theory of operation
-------------------
A *behaviour* is sans-I/O: given what the bot sees (its own position, the other live
entities from its decoded mirror) it returns the next command `(move_x, move_y, aim,
fire)`. Randomness comes from a seeded `random.Random` per bot.

A *swarm* is one process's share of the bots (`worker_main` is the process entry point;
`client_demo.loadtest` starts the processes). Every bot is one task: it joins at its
place in the ramp, then sends one input per server tick (twice that for `spam`), each at
an absolute deadline `joined_at + k * period` (never `sleep(period)`, so the rate does
not drift with the time a send takes). The bot acks through `Client.send_input`, which
carries the newest decoded tick.

Every `report_interval_s` the swarm sends the parent one `report` message: raw,
timestamped samples (per snapshot: bot, arrival time, server RTT, sizes, keyframe,
entities; per Pong: client RTT) and per-bot cumulative counters (WebSocket bytes, TCP
bytes from TCP_INFO, decode errors). Samples are raw so the parent can cut the
measurement window itself and compute percentiles over all bots, never averages of
percentiles. Times are `time.monotonic()`, which on Linux is one system-wide clock, so
the parent and every worker agree on it.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import os
import random
import socket
import struct
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import numpy as np

from client_demo.client import ClientError
from client_demo.loadtest import BEHAVIORS
from client_demo.netsim import NetConditions, NetsimClient
from proto import tickwire_pb2 as pb

KIND_PLAYER = pb.ENTITY_KIND_PLAYER  # the .proto's EntityKind enum is the one source
KIND_NPC = pb.ENTITY_KIND_NPC

# struct tcp_info (linux/tcp.h): 8 u8 fields, 24 u32 fields, then u64 pacing_rate,
# max_pacing_rate, bytes_acked, bytes_received -> tcpi_bytes_received at offset 128.
_TCPI_BYTES_RECEIVED = 128
_TCP_INFO_LEN = 136

Command = tuple[float, float, float, bool]


# -- behaviours (sans-I/O) ------------------------------------------------------------------

@dataclass
class Behavior:
    """Base: no movement. `rate_factor` = inputs per server tick."""

    rng: random.Random
    tick_rate: int = 30
    rate_factor: float = 1.0

    def command(self, own: tuple[float, float] | None, others: np.ndarray | None) -> Command:
        return 0.0, 0.0, 0.0, False


@dataclass
class Idle(Behavior):
    """Join and ack only: an input every tick with no move."""


@dataclass
class Wander(Behavior):
    """A random direction that changes every ~2 s, occasional fire along it."""

    fire_chance: float = 0.05
    _left: int = 0
    _dir: tuple[float, float] = (0.0, 0.0)

    def _turn_every(self) -> int:
        # ~2 s of inputs, ±25% so a swarm does not turn in lockstep.
        base = 2.0 * self.tick_rate * self.rate_factor
        return max(1, round(base * self.rng.uniform(0.75, 1.25)))

    def command(self, own: tuple[float, float] | None, others: np.ndarray | None) -> Command:
        if self._left <= 0:
            angle = self.rng.uniform(-math.pi, math.pi)
            self._dir = (math.cos(angle), math.sin(angle))
            self._left = self._turn_every()
        self._left -= 1
        dx, dy = self._dir
        return dx, dy, math.atan2(dy, dx), self.rng.random() < self.fire_chance


@dataclass
class Spam(Wander):
    """Wander, but at twice the tick rate: exercises the server's per-tick input cap."""

    rate_factor: float = 2.0


@dataclass
class Arena(Behavior):
    """SCENARIO-arena: a random unit direction that changes every 60 inputs; no firing."""

    turn_every: int = 60
    _n: int = 0
    _dir: tuple[float, float] = (1.0, 0.0)

    def command(self, own: tuple[float, float] | None, others: np.ndarray | None) -> Command:
        if self._n % self.turn_every == 0:
            angle = self.rng.uniform(-math.pi, math.pi)
            self._dir = (math.cos(angle), math.sin(angle))
        self._n += 1
        dx, dy = self._dir
        return dx, dy, math.atan2(dy, dx), False


@dataclass
class Chase(Behavior):
    """Move toward the nearest other player or NPC, aim at it, fire when in range."""

    fire_range: float = 400.0
    _fallback: Wander | None = None

    def command(self, own: tuple[float, float] | None, others: np.ndarray | None) -> Command:
        if own is None or others is None or len(others) == 0:
            if self._fallback is None:
                self._fallback = Wander(self.rng, self.tick_rate, fire_chance=0.0)
            return self._fallback.command(own, others)
        d = others - np.asarray(own, dtype=np.float64)
        dist2 = np.einsum("ij,ij->i", d, d)
        i = int(np.argmin(dist2))
        dx, dy = float(d[i, 0]), float(d[i, 1])
        dist = math.sqrt(float(dist2[i]))
        aim = math.atan2(dy, dx)
        if dist < 1e-6:
            return 0.0, 0.0, aim, True
        return dx / dist, dy / dist, aim, dist <= self.fire_range


def make_behavior(name: str, rng: random.Random, tick_rate: int) -> Behavior:
    """A fresh behaviour by name (one of `BEHAVIORS`)."""
    classes: dict[str, type[Behavior]] = {
        "wander": Wander, "chase": Chase, "idle": Idle, "spam": Spam, "arena": Arena,
    }
    try:
        cls = classes[name]
    except KeyError:
        raise ValueError(f"unknown behaviour {name!r}; one of {', '.join(BEHAVIORS)}") from None
    return cls(rng, tick_rate)


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
        if self.ack_only and snap.baseline_tick != 0:
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
        self.pending.append((now, snap.rtt_ms, len(snap.payload), size,
                             snap.baseline_tick == 0, live))

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
        from proto import codec
        return np.stack([state["x"][idx], state["y"][idx]], axis=1) / codec.POS_SCALE


# -- one process's swarm ----------------------------------------------------------------------

@dataclass(frozen=True)
class SwarmConfig:
    """What one worker process runs. Times are `time.monotonic()` seconds."""

    worker: int
    url: str
    behavior: str
    bot_ids: tuple[int, ...]  # global indices; bot i joins at start + ramp_s * i / total
    total: int
    ramp_s: float
    seed: int = 1
    conditions: NetConditions = field(default_factory=NetConditions)
    report_interval_s: float = 0.5
    connect_timeout_s: float = 5.0
    name_prefix: str = "bot"
    ack_only: bool = False
    matchmake: str | None = None  # http(s)://HOST:PORT of a node: seats come from there
    mode: str | None = None


class Swarm:
    """Runs `config.bot_ids` as bots until `stop()` or the hard deadline."""

    def __init__(self, config: SwarmConfig, emit: Any) -> None:
        self.config = config
        self.emit = emit  # callable(message: tuple) -> None; a Queue.put in a worker
        self.bots: dict[int, BotClient] = {}
        self.connected: set[int] = set()
        self.failed = 0
        self.errors: Counter[str] = Counter()
        self.close_codes: Counter[str] = Counter()
        self.connect_messages: list[str] = []
        self._stop = asyncio.Event()

    def stop(self) -> None:
        self._stop.set()

    async def run(self, start: float, hard_deadline: float, stop_flag: Any = None) -> None:
        """Ramp the bots in from `start`; stop at `hard_deadline` or when `stop_flag` (an
        object with `is_set()`) is set, checked at each report."""
        connector = aiohttp.TCPConnector(limit=0)  # the default limit of 100 would cap bots
        async with aiohttp.ClientSession(connector=connector) as session:
            tasks = [asyncio.create_task(self._run_bot(i, start, session))
                     for i in self.config.bot_ids]
            reporter = asyncio.create_task(self._report_loop(hard_deadline, stop_flag))
            await self._stop.wait()
            # Bots see the stop between two inputs; give them a moment to close cleanly.
            _, pending = await asyncio.wait(tasks, timeout=3.0)
            for task in pending:
                task.cancel()
            await asyncio.gather(*pending, return_exceptions=True)
            reporter.cancel()
            await asyncio.gather(reporter, return_exceptions=True)
            self.emit(self._report("done"))

    async def _sleep_until(self, deadline: float) -> bool:
        """Sleep to an absolute monotonic deadline; True if the swarm was stopped first."""
        delay = deadline - time.monotonic()
        if delay <= 0:
            return self._stop.is_set()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._stop.wait(), delay)
        return self._stop.is_set()

    async def _run_bot(self, i: int, start: float, session: aiohttp.ClientSession) -> None:
        cfg = self.config
        join_at = start + cfg.ramp_s * i / max(1, cfg.total)
        if await self._sleep_until(join_at):
            return
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
        try:
            while not bot.closed.is_set():
                k += 1
                if await self._sleep_until(t0 + k * period):
                    break
                if bot.closed.is_set():
                    break
                cmd = behavior.command(bot.own_position(),
                                       bot.others() if cfg.behavior == "chase" else None)
                try:
                    await bot.send_input(*cmd)
                except (ClientError, ConnectionError, aiohttp.ClientError):
                    break
            if not self._stop.is_set():
                # Closed by the server (or the network) during the run.
                await bot.closed.wait()
                self.errors["closed"] += 1
                self.close_codes[str(bot.close_code)] += 1
        finally:
            self.connected.discard(i)
            with contextlib.suppress(Exception):
                await asyncio.wait_for(bot.close(), 3.0)

    async def _report_loop(self, hard_deadline: float, stop_flag: Any) -> None:
        every = self.config.report_interval_s
        next_at = time.monotonic() + every
        while True:
            await asyncio.sleep(max(0.0, next_at - time.monotonic()))
            next_at += every
            self.emit(self._report("report"))
            if time.monotonic() >= hard_deadline or (stop_flag is not None
                                                    and stop_flag.is_set()):
                self._stop.set()
                return

    def _report(self, kind: str) -> tuple:
        """One message for the parent: (kind, worker, payload dict)."""
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
            counters.append((i, bot.stats.bytes_in, bot.tcp_bytes_received(),
                             bot.stats.decode_errors))
        arr = np.array(snaps, dtype=np.float64).reshape(-1, 6)
        payload = {
            "t": now,
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


def worker_main(config: SwarmConfig, queue: Any, start_value: Any, start_event: Any,
                stop_event: Any, hard_deadline: float) -> None:
    """Process entry point: wait for the common start time, run the swarm, report.

    `start_value` is a shared double holding the start (monotonic seconds) once
    `start_event` is set; `stop_event` ends the run early (the parent's window is over).
    """
    queue.put(("ready", config.worker, {"pid": os.getpid()}))
    if not start_event.wait(timeout=max(1.0, hard_deadline - time.monotonic())):
        queue.put(("done", config.worker, {"aborted": True}))
        return
    start = start_value.value
    swarm = Swarm(config, queue.put)
    try:
        import uvloop
        loop_factory = uvloop.new_event_loop
    except ImportError:  # uvloop is a dependency, but the bots work without it
        loop_factory = None
    try:
        with asyncio.Runner(loop_factory=loop_factory) as runner:
            runner.run(swarm.run(start, hard_deadline, stop_event))
    except KeyboardInterrupt:
        pass
    except Exception as exc:  # report, never a traceback on the user's terminal
        queue.put(("crash", config.worker, {"error": f"{type(exc).__name__}: {exc}"}))
