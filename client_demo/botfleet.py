"""Bots on several hosts: `tickwire bots --master` and `tickwire bots --worker`, over Redis.

Theory of operation
-------------------
The Locust model: workers on any number of hosts register with one Redis and wait; one
master hands each its share of the bots, and gathers the samples into one report. Redis
carries everything; master and workers never connect to each other.

Keys, under `--prefix P` (default `tickwire:bots`):

| key                          | written by | what                                             |
|------------------------------|------------|--------------------------------------------------|
| `P:worker:{wid}`             | worker     | heartbeat (host, pid, busy), TTL `HEARTBEAT_TTL_S`|
| `P:orders:{wid}`             | master     | list: one JSON order (url or matchmake, bots...) |
| `P:run:{run}:go:{wid}`       | master     | list: "start in S seconds", once all are ready   |
| `P:run:{run}:master`         | master     | heartbeat, TTL `HEARTBEAT_TTL_S`                 |
| `P:run:{run}:stop`           | master     | set when the run is over                         |
| `P:run:{run}:results`        | workers    | list: ready / report / done / crash messages    |

Failure handling, bounded in time:
- a worker that dies mid-run stops refreshing its heartbeat: once the key expires the
  master reports it lost (a note, an error of kind `worker_lost`) and still writes the
  report from what it had;
- a master that dies stops refreshing its heartbeat: each worker checks it every
  `CHECK_S` and stops its bots once it has expired (within `HEARTBEAT_TTL_S + CHECK_S`);
- Redis unreachable at start: one line naming the URL (password hidden), exit 1;
  unreachable mid-run for as long as a heartbeat: workers stop their bots, and the master
  reports every worker still out as lost and writes the report of what it had.

Nothing read from Redis is unpickled or evaluated: orders are JSON checked field by field,
and samples are JSON with arrays as raw little-endian bytes of a few allowed dtypes. Redis
must still be trusted: whoever can write orders there decides where the bots connect.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import faulthandler
import json
import math
import os
import re
import secrets
import signal
import socket
import sys
import time
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import numpy as np

from client_demo.cancel import cancel_and_wait
from client_demo.runlimits import GRACE_S, JOIN_SLACK_S, MAX_BOTS

HEARTBEAT_TTL_S = 5.0
HEARTBEAT_EVERY_S = 1.0
CHECK_S = 0.5
STOP_GRACE_S = 3.0  # after SIGTERM/SIGINT, the longest a worker waits on Redis
_MODE = re.compile(r"^[A-Za-z0-9_.-]{1,48}$")  # as POST /matchmake accepts
GO_TIMEOUT_S = 60.0  # a worker waits this long between its order and the start
KEY_TTL_S = 3600  # run keys expire on their own if nobody cleans up
MAX_MESSAGE_BYTES = 64 * 1024 * 1024
_DTYPES = {"<i4": np.int32, "<i8": np.int64, "<f8": np.float64}
_KINDS = ("ready", "report", "done", "crash")


class RedisUnreachable(RuntimeError):
    """Redis did not answer at start; the message names the URL (without a password)."""


class FleetError(RuntimeError):
    """The master could not set the run up (no worker came); one line for the user."""


class BadMessage(ValueError):
    """A message read from Redis that is not one of ours."""


def redacted(url: str) -> str:
    """The URL without its password, for messages."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.hostname or ""
    netloc = f"{parts.username}:***@{netloc}" if parts.username else f":***@{netloc}"
    if parts.port:
        netloc += f":{parts.port}"
    return urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))


# -- the wire: JSON, arrays as raw bytes ---------------------------------------------------------

def _encode_value(v: Any) -> Any:
    if isinstance(v, np.ndarray):
        arr = np.ascontiguousarray(v)
        dt = arr.dtype.newbyteorder("<").str
        if dt not in _DTYPES:
            raise TypeError(f"dtype {arr.dtype} cannot go on the wire")
        return {"__nd__": [dt, list(arr.shape),
                           base64.b64encode(arr.astype(dt).tobytes()).decode("ascii")]}
    if isinstance(v, dict):
        return {str(k): _encode_value(x) for k, x in v.items()}
    if isinstance(v, list | tuple):
        return [_encode_value(x) for x in v]
    if isinstance(v, np.integer):
        return int(v)
    if isinstance(v, np.floating):
        return float(v)
    return v


def _decode_value(v: Any) -> Any:
    if isinstance(v, dict):
        if "__nd__" in v:
            try:
                dt, shape, data = v["__nd__"]
                raw = base64.b64decode(data, validate=True)
                if dt not in _DTYPES or not all(isinstance(n, int) and n >= 0 for n in shape):
                    raise BadMessage("bad array")
                arr = np.frombuffer(raw, dtype=np.dtype(dt))
                return arr.reshape(shape).astype(_DTYPES[dt])
            except (ValueError, TypeError) as exc:
                raise BadMessage(f"bad array: {exc}") from None
        return {k: _decode_value(x) for k, x in v.items()}
    if isinstance(v, list):
        return [_decode_value(x) for x in v]
    return v


def encode_message(msg: tuple) -> bytes:
    """(kind, worker, payload) -> bytes."""
    kind, worker, payload = msg
    return json.dumps({"kind": kind, "worker": worker,
                       "payload": _encode_value(payload)}).encode("utf-8")


def decode_message(data: bytes) -> tuple:
    """bytes -> (kind, worker, payload); BadMessage for anything that is not ours."""
    if len(data) > MAX_MESSAGE_BYTES:
        raise BadMessage("too big")
    try:
        obj = json.loads(data)
    except (ValueError, UnicodeDecodeError) as exc:
        raise BadMessage(f"not JSON: {exc}") from None
    if not isinstance(obj, dict) or obj.get("kind") not in _KINDS \
            or not isinstance(obj.get("worker"), int) or not isinstance(obj.get("payload"), dict):
        raise BadMessage("not a worker message")
    payload = _decode_value(obj["payload"])
    if obj["kind"] in ("report", "done") and "snap" in payload:
        needed = {"t": (int, float), "connected": int, "failed": int, "errors": dict,
                  "close_codes": dict, "connect_messages": list, "snap_bot": np.ndarray,
                  "snap": np.ndarray, "crtt_bot": np.ndarray, "crtt": np.ndarray,
                  "counters": np.ndarray, "dropped": int}
        for key, typ in needed.items():
            if not isinstance(payload.get(key), typ):
                raise BadMessage(f"field {key!r} missing or of the wrong type")
        counts = [*payload["errors"].values(), *payload["close_codes"].values()]
        if not all(isinstance(v, int) and not isinstance(v, bool) for v in counts) \
                or not all(isinstance(m, str) for m in payload["connect_messages"]):
            raise BadMessage("counts and messages of the wrong type")
        if payload["snap"].ndim != 2 or payload["snap"].shape[1] != 6 \
                or payload["counters"].ndim != 2 or payload["counters"].shape[1] != 4 \
                or len(payload["snap_bot"]) != len(payload["snap"]) \
                or len(payload["crtt_bot"]) != len(payload["crtt"]):
            raise BadMessage("array shapes do not match")
    return obj["kind"], obj["worker"], payload


@dataclass(frozen=True)
class Order:
    """One worker's part of a run, as checked from the master's JSON."""

    run: str
    worker: int
    url: str
    behavior: str
    bot_ids: tuple[int, ...]
    total: int
    stages: tuple[tuple[float, int], ...]
    seed: int
    latency_ms: float
    jitter_ms: float
    loss: float
    ack_only: bool
    hard_s: float  # from the start: the worker stops by then whatever happens
    # http(s)://HOST:PORT of a node: each bot asks its POST /matchmake for a seat (so a
    # distributed run spreads over the fleet as players do); "" = connect to `url`.
    matchmake: str = ""
    mode: str = ""  # the game mode to matchmake into ("" = the fleet's default)

    def to_json(self) -> str:
        d = dict(self.__dict__)
        d["bot_ids"] = list(self.bot_ids)
        d["stages"] = [list(s) for s in self.stages]
        return json.dumps(d)

    @classmethod
    def from_json(cls, data: bytes | str) -> Order:
        """Parse and check an order; ValueError naming the bad field."""
        from client_demo.behaviors import BEHAVIORS
        obj = json.loads(data)
        if not isinstance(obj, dict):
            raise ValueError("an order is a JSON object")

        def num(name: str, lo: float, hi: float) -> float:
            v = obj.get(name)
            if isinstance(v, bool) or not isinstance(v, int | float) or not math.isfinite(v) \
                    or not lo <= v <= hi:
                raise ValueError(f"order field {name!r} is not a number in [{lo}, {hi}]")
            return float(v)

        url = obj.get("url")
        if not isinstance(url, str) or urlsplit(url).scheme not in ("ws", "wss"):
            raise ValueError("order field 'url' is not a ws:// URL")
        if obj.get("behavior") not in BEHAVIORS:
            raise ValueError("order field 'behavior' is unknown")
        total = int(num("total", 1, MAX_BOTS))
        ids = obj.get("bot_ids")
        if not isinstance(ids, list) or len(ids) > MAX_BOTS or not all(
                isinstance(i, int) and 0 <= i < total for i in ids):
            raise ValueError("order field 'bot_ids' is not a list of bot indices")
        stages = obj.get("stages")
        if not isinstance(stages, list) or not 1 <= len(stages) <= 100 or not all(
                isinstance(s, list) and len(s) == 2 and isinstance(s[0], int | float)
                and math.isfinite(s[0]) and 0 <= s[0] <= 86400 and isinstance(s[1], int)
                and 0 <= s[1] <= MAX_BOTS for s in stages):
            raise ValueError("order field 'stages' is not a list of [seconds, bots]")
        run = obj.get("run")
        if not isinstance(run, str) or not run.isalnum() or len(run) > 64:
            raise ValueError("order field 'run' is not an id")
        matchmake = obj.get("matchmake", "")
        if not isinstance(matchmake, str) or (matchmake and (
                urlsplit(matchmake).scheme not in ("http", "https")
                or not urlsplit(matchmake).hostname)):
            raise ValueError("order field 'matchmake' is not an http:// URL")
        mode = obj.get("mode", "")
        if not isinstance(mode, str) or (mode and not _MODE.match(mode)):
            raise ValueError("order field 'mode' is not a mode name")
        return cls(run=run, worker=int(num("worker", 0, 10_000)), url=url,
                   behavior=obj["behavior"], bot_ids=tuple(ids), total=total,
                   stages=tuple((float(d), int(n)) for d, n in stages),
                   seed=int(num("seed", -2**63, 2**63)),
                   latency_ms=num("latency_ms", 0, 10_000), jitter_ms=num("jitter_ms", 0, 10_000),
                   loss=num("loss", 0, 0.999999), ack_only=bool(obj.get("ack_only")),
                   hard_s=num("hard_s", 0, 3 * 86400), matchmake=matchmake, mode=mode)


class Keys:
    def __init__(self, prefix: str) -> None:
        self.p = prefix

    def worker(self, wid: str) -> str:
        return f"{self.p}:worker:{wid}"

    def workers_pattern(self) -> str:
        return f"{self.p}:worker:*"

    def orders(self, wid: str) -> str:
        return f"{self.p}:orders:{wid}"

    def go(self, run: str, wid: str) -> str:
        return f"{self.p}:run:{run}:go:{wid}"

    def master(self, run: str) -> str:
        return f"{self.p}:run:{run}:master"

    def stop(self, run: str) -> str:
        return f"{self.p}:run:{run}:stop"

    def results(self, run: str) -> str:
        return f"{self.p}:run:{run}:results"


# -- the master's side -------------------------------------------------------------------------

class RedisFleet:
    """The master: a `Fleet` (see client_demo.loadtest) whose workers are remote."""

    where = "redis"

    def __init__(self, plan: Any, client: Any) -> None:
        self.plan = plan
        self.r = client
        self.keys = Keys(plan.prefix)
        self.run = secrets.token_hex(8)
        self.wids: list[str] = []
        self.finished: set[int] = set()
        self.reported_lost: set[int] = set()
        self.bad_messages = 0
        self.hard_deadline = 0.0
        self._last_beat = 0.0
        self._last_check = 0.0
        self.redis_errors = 0
        self._redis_down_since: float | None = None
        self.cancelled: Any = lambda: False  # the orchestrator's "interrupted?"

    @property
    def notes(self) -> list[str]:
        out = []
        if len(self.wids) < self.plan.workers:
            out.append(f"{len(self.wids)} of {self.plan.workers} workers came")
        if self.bad_messages:
            out.append(f"{self.bad_messages} messages from Redis were not ours and ignored")
        if self.redis_errors:
            out.append(f"{self.redis_errors} Redis errors during the run")
        return out

    @classmethod
    def connect(cls, plan: Any) -> RedisFleet:
        import redis
        try:
            client = redis.Redis.from_url(plan.redis_url, socket_connect_timeout=3.0,
                                          socket_timeout=10.0)
            client.ping()
        except (redis.RedisError, OSError, ValueError) as exc:
            raise RedisUnreachable(f"cannot reach Redis at {redacted(plan.redis_url)}: "
                                   f"{exc}") from None
        return cls(plan, client)

    @property
    def size(self) -> int:
        return len(self.wids)

    def _live_workers(self) -> list[str]:
        """Idle workers with a live heartbeat (a busy one is running another master's run)."""
        prefix = self.keys.worker("")
        keys = sorted(self.r.scan_iter(match=self.keys.workers_pattern(), count=1000))
        out = []
        for key, value in zip(keys, self.r.mget(keys) if keys else [], strict=True):
            try:
                busy = bool(json.loads(value).get("busy")) if value else True
            except (ValueError, AttributeError):
                busy = True
            if not busy:
                out.append(key.decode()[len(prefix):])
        return out

    def _beat(self, force: bool = False) -> None:
        now = time.monotonic()
        if force or now - self._last_beat >= HEARTBEAT_EVERY_S / 2:
            self.r.set(self.keys.master(self.run), b"1", px=int(HEARTBEAT_TTL_S * 1000))
            self._last_beat = now

    def launch(self) -> None:
        plan = self.plan
        wait_until = time.monotonic() + plan.workers_wait_s
        found = self._live_workers()
        while len(found) < plan.workers and time.monotonic() < wait_until \
                and not self.cancelled():
            time.sleep(0.2)
            found = self._live_workers()
        if not found:
            raise FleetError(f"no bot worker registered at {redacted(plan.redis_url)} "
                             f"(prefix {plan.prefix!r}) within {plan.workers_wait_s:g} s; "
                             "start `tickwire bots --worker --redis URL` on the bot hosts")
        self.wids = found[:plan.workers]
        self._beat(force=True)
        n = len(self.wids)
        hard_s = plan.run_s + JOIN_SLACK_S + GRACE_S
        for w, wid in enumerate(self.wids):
            order = Order(run=self.run, worker=w, url=plan.url, behavior=plan.behavior,
                          bot_ids=tuple(range(w, plan.count, n)), total=plan.count,
                          stages=tuple((s.duration_s, s.target) for s in plan.stages),
                          seed=plan.seed, latency_ms=plan.latency_ms,
                          jitter_ms=plan.jitter_ms, loss=plan.loss, ack_only=plan.ack_only,
                          hard_s=hard_s, matchmake=plan.matchmake or "",
                          mode=plan.game_mode or "")
            key = self.keys.orders(wid)
            self.r.rpush(key, order.to_json())
            self.r.expire(key, 60)
        self.r.expire(self.keys.results(self.run), KEY_TTL_S)

    def begin(self, start: float) -> float:
        start_in = max(0.0, start - time.monotonic())
        for wid in self.wids:
            key = self.keys.go(self.run, wid)
            self.r.rpush(key, json.dumps({"start_in_s": start_in}))
            self.r.expire(key, 60)
        self.hard_deadline = start + self.plan.run_s + JOIN_SLACK_S + GRACE_S + 2.0
        return self.hard_deadline

    def receive(self, until: float) -> list[tuple]:
        import redis
        try:
            return self._receive(until)
        except (redis.RedisError, OSError):
            self.redis_errors += 1
            time.sleep(max(0.0, min(0.5, until - time.monotonic())))
            return []

    def _receive(self, until: float) -> list[tuple]:
        self._beat()
        out: list[tuple] = []
        key = self.keys.results(self.run)
        timeout = until - time.monotonic()
        first = self.r.blpop([key], timeout=min(timeout, 1.0)) if timeout >= 0.01 \
            else self.r.lpop(key)
        raw = [first[1]] if isinstance(first, tuple | list) else ([first] if first else [])
        if raw:
            more = self.r.lpop(key, 500)
            raw.extend(more or [])
        for data in raw:
            try:
                msg = decode_message(data)
            except BadMessage:
                self.bad_messages += 1
                continue
            if not 0 <= msg[1] < len(self.wids):
                self.bad_messages += 1
                continue
            if msg[0] == "ready":
                msg[2]["where"] = msg[2].get("where") or self.wids[msg[1]]
            if msg[0] in ("done", "crash"):
                self.finished.add(msg[1])
            out.append(msg)
        self._beat()
        return out

    def lost(self) -> list[tuple]:
        now = time.monotonic()
        if now - self._last_check < CHECK_S:
            return []
        self._last_check = now
        out = []
        for w, wid in enumerate(self.wids):
            if w in self.finished or w in self.reported_lost:
                continue
            try:
                alive = self.r.exists(self.keys.worker(wid))
                self._redis_down_since = None
            except Exception:
                self.redis_errors += 1
                if self._redis_down_since is None:
                    self._redis_down_since = now
                if now - self._redis_down_since < HEARTBEAT_TTL_S:
                    return out
                # As long as a heartbeat: every worker still out is lost to this master
                # (they stop their bots by themselves when they cannot reach Redis either).
                down = now - self._redis_down_since
                for w2 in range(len(self.wids)):
                    if w2 not in self.finished and w2 not in self.reported_lost:
                        self.reported_lost.add(w2)
                        out.append(("lost", w2, {"reason": f"Redis unreachable for "
                                                           f"{down:.0f} s"}))
                return out
            if not alive:
                self.reported_lost.add(w)
                out.append(("lost", w, {"reason": f"heartbeat expired (no word for "
                                                  f"{HEARTBEAT_TTL_S:g} s)"}))
        return out

    def stop(self) -> None:
        with contextlib.suppress(Exception):
            self.r.set(self.keys.stop(self.run), b"1", ex=KEY_TTL_S)

    def close(self, deadline: float) -> None:
        self.stop()
        with contextlib.suppress(Exception):
            self.r.delete(self.keys.master(self.run))
            self.r.expire(self.keys.results(self.run), 60)
        with contextlib.suppress(Exception):
            self.r.close()


# -- the worker's side ---------------------------------------------------------------------------

def run_worker_command(args: argparse.Namespace) -> int:
    """`tickwire bots --worker --redis URL`: serve orders until SIGTERM/SIGINT."""
    if not args.redis:
        print("tickwire bots: error: --worker needs --redis URL", file=sys.stderr)
        return 2
    from client_demo.bots import new_event_loop_factory
    # `kill -USR1 PID` prints every thread's stack: what a worker that does not stop on
    # SIGTERM is doing (the test suite asks before it resorts to SIGKILL).
    faulthandler.register(signal.SIGUSR1, all_threads=True)
    worker = Worker(args.redis, args.prefix)
    try:
        with asyncio.Runner(loop_factory=new_event_loop_factory()) as runner:
            return runner.run(worker.serve())
    except RedisUnreachable as exc:
        print(f"tickwire bots: {exc}", file=sys.stderr)
        return 1


class Worker:
    """One worker process: heartbeat, take an order, run its swarm, send the samples."""

    def __init__(self, redis_url: str, prefix: str) -> None:
        self.redis_url = redis_url
        self.keys = Keys(prefix)
        self.wid = f"{socket.gethostname()}-{os.getpid()}-{secrets.token_hex(3)}"
        self.exiting = asyncio.Event()
        self.runs = 0
        self.busy = False

    def say(self, line: str) -> None:
        print(f"tickwire bots worker {self.wid}: {line}", file=sys.stderr, flush=True)

    async def serve(self) -> int:
        import redis
        import redis.asyncio as aredis
        # A socket timeout above BLPOP's 1 s, so no command can hang the worker for good.
        r = aredis.Redis.from_url(self.redis_url, socket_connect_timeout=3.0,
                                  socket_timeout=10.0)
        try:
            await r.ping()
        except (redis.RedisError, OSError) as exc:
            await r.aclose()
            raise RedisUnreachable(f"cannot reach Redis at {redacted(self.redis_url)}: "
                                   f"{exc}") from None
        loop = asyncio.get_running_loop()
        main = asyncio.current_task()
        assert main is not None
        deadline: list[asyncio.TimerHandle] = []

        def on_signal() -> None:
            if self.exiting.is_set():
                return
            self.say("stopping")
            self.exiting.set()
            if not self.busy:  # a run stops its bots and sends its last samples first
                arm()

        def arm() -> None:
            # The loop below sees the flag between two Redis calls; a call that does not
            # come back (a connection left mid-reply, redis-py's retries) must not keep the
            # worker from stopping: cancel whatever it awaits after a grace period, and
            # again every half second, since Python 3.11 can lose a cancellation (see
            # client_demo.cancel).
            def fire() -> None:
                main.cancel()
                deadline.append(loop.call_later(0.5, fire))

            if not deadline:
                deadline.append(loop.call_later(STOP_GRACE_S, fire))

        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, on_signal)
        beat = asyncio.create_task(self._heartbeat(r))
        self.say("waiting for orders")
        try:
            while not self.exiting.is_set():
                try:
                    item = await r.blpop([self.keys.orders(self.wid)], timeout=1)
                except (redis.RedisError, OSError) as exc:
                    self.say(f"Redis error: {exc}; retrying")
                    await self._pause(1.0)
                    continue
                if item is None:
                    continue
                try:
                    order = Order.from_json(item[1])
                except ValueError as exc:
                    self.say(f"order refused: {exc}")
                    continue
                self.busy = True
                await self._beat(r)
                try:
                    await self._run(r, order)
                except (redis.RedisError, OSError) as exc:
                    self.say(f"run {order.run} ended by a Redis error: {exc}")
                finally:
                    self.busy = False
                    if self.exiting.is_set():
                        arm()
                    await self._beat(r)
        except asyncio.CancelledError:
            if not self.exiting.is_set():
                raise
            self.say(f"a Redis call did not return within {STOP_GRACE_S:g} s of the stop; "
                     "cancelled")
            main.uncancel()
        finally:
            for handle in deadline:  # the clean-up below has its own bounds
                handle.cancel()
            # One cancel is not enough: a cancel that lands as a Redis write drains is lost
            # on Python 3.11 and the heartbeat would beat on, with us waiting for it.
            await cancel_and_wait([beat], 3.0)
            with contextlib.suppress(Exception):
                await asyncio.wait_for(r.delete(self.keys.worker(self.wid)), 3.0)
            with contextlib.suppress(Exception):
                await asyncio.wait_for(r.aclose(), 3.0)
        self.say("stopped")
        return 0

    async def _pause(self, seconds: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.exiting.wait(), seconds)

    async def _heartbeat(self, r: Any) -> None:
        while True:
            await self._beat(r)
            await asyncio.sleep(HEARTBEAT_EVERY_S)

    async def _beat(self, r: Any) -> None:
        info = json.dumps({"host": socket.gethostname(), "pid": os.getpid(), "busy": self.busy})
        with contextlib.suppress(Exception):
            await r.set(self.keys.worker(self.wid), info, px=int(HEARTBEAT_TTL_S * 1000))

    async def _run(self, r: Any, order: Order) -> None:
        from client_demo.bots import Swarm, SwarmConfig
        from client_demo.netsim import NetConditions

        results = self.keys.results(order.run)
        outbox: asyncio.Queue[tuple | None] = asyncio.Queue()

        async def pusher() -> None:
            while (msg := await outbox.get()) is not None:
                await r.rpush(results, encode_message(msg))

        push_task = asyncio.create_task(pusher())
        where = f"{socket.gethostname()}:{os.getpid()}"
        outbox.put_nowait(("ready", order.worker, {"pid": os.getpid(), "where": where}))
        target = (f"matchmaking at {order.matchmake}" + (f" (mode {order.mode})" if order.mode
                                                         else "")
                  if order.matchmake else order.url)
        self.say(f"run {order.run}: {len(order.bot_ids)} bots against {target}")
        try:
            go = None
            wait_until = time.monotonic() + GO_TIMEOUT_S
            while go is None and time.monotonic() < wait_until and not self.exiting.is_set():
                go = await r.blpop([self.keys.go(order.run, self.wid)], timeout=1)
                if go is None and not await r.exists(self.keys.master(order.run)):
                    self.say(f"run {order.run}: the master is gone before the start")
                    return
            if go is None:
                return
            start = time.monotonic() + float(json.loads(go[1])["start_in_s"])
            cfg = SwarmConfig(worker=order.worker, url=order.url, behavior=order.behavior,
                              bot_ids=order.bot_ids, total=order.total, stages=order.stages,
                              seed=order.seed, ack_only=order.ack_only,
                              conditions=NetConditions(order.latency_ms, order.jitter_ms,
                                                       order.loss),
                              matchmake=order.matchmake or None, mode=order.mode or None)
            swarm = Swarm(cfg, outbox.put_nowait)
            stop = {"now": False}

            async def watch() -> None:
                # The master's heartbeat and stop key, and our own SIGTERM.
                while not stop["now"]:
                    await self._pause(CHECK_S)
                    try:
                        if self.exiting.is_set() or await r.exists(self.keys.stop(order.run)):
                            stop["now"] = True
                        elif not await r.exists(self.keys.master(order.run)):
                            self.say(f"run {order.run}: the master's heartbeat expired; "
                                     "stopping the bots")
                            stop["now"] = True
                    except Exception as exc:  # Redis gone: the bots must not run on alone
                        self.say(f"run {order.run}: Redis unreachable ({exc}); stopping")
                        stop["now"] = True

            watcher = asyncio.create_task(watch())
            try:
                await swarm.run(start, start + order.hard_s, lambda: stop["now"])
            finally:
                stop["now"] = True
                await cancel_and_wait([watcher], 3.0)
            self.runs += 1
        except Exception as exc:
            outbox.put_nowait(("crash", order.worker, {"error": f"{type(exc).__name__}: {exc}"}))
            raise
        finally:
            outbox.put_nowait(None)
            with contextlib.suppress(Exception):
                await asyncio.wait_for(push_task, 10.0)
            self.say(f"run {order.run}: done")
