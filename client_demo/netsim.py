"""Bot-side network conditions: added latency, jitter and loss on one connection.

Theory of operation
-------------------
`DelayLine` is the sans-I/O core: `push(item, now)` either drops the item (loss) or
schedules it for `now + latency ± jitter`; `pop_due(now)` hands back what is due, in
order. Order is kept on purpose (a later item is never due before an earlier one): a
WebSocket runs over TCP, so a late frame holds back the frames behind it (head-of-line
blocking) rather than overtaking them. Time and randomness are arguments, so the line
is testable without a socket or a clock.

`NetsimClient` is the shipped `Client` with two delay lines: one for what it sends
(Input/Ping frames and its answers to the server's WebSocket pings) and one for what it
receives (frames are queued and *processed* later, so decoding, acking and every
timestamp see the delayed arrival). The latency is one-way and applies in each
direction, so a round trip grows by about twice `latency_ms`.

Loss drops only what an unreliable transport would carry: `Input` frames out and
`Snapshot` frames in (inputs are resent redundantly; a missed snapshot is covered by the
next delta). Join/Welcome/Roster/Pong/Kick and control frames are delayed, never dropped,
and nothing is dropped before the Welcome, so a lossy run still joins. `Leave` is sent at
once: the close that follows it ends the delay line.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Generic, TypeVar

import aiohttp

from client_demo.client import Client, ClientError
from proto import tickwire_pb2 as pb

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class NetConditions:
    """One-way delay and loss added by a bot, each direction.

    `latency_ms` and `jitter_ms` in milliseconds (each frame's delay is uniform in
    `latency ± jitter`, never below 0); `loss` a probability in [0, 1).
    """

    latency_ms: float = 0.0
    jitter_ms: float = 0.0
    loss: float = 0.0

    def __post_init__(self) -> None:
        if self.latency_ms < 0 or self.jitter_ms < 0:
            raise ValueError("latency and jitter must be >= 0 ms")
        if not 0.0 <= self.loss < 1.0:
            raise ValueError(f"loss {self.loss} is not in [0, 1)")

    @property
    def active(self) -> bool:
        return self.latency_ms > 0 or self.jitter_ms > 0 or self.loss > 0


class DelayLine(Generic[T]):
    """A FIFO that releases each item after a random delay, or drops it (sans-I/O)."""

    def __init__(self, conditions: NetConditions, rng: random.Random) -> None:
        self.conditions = conditions
        self.rng = rng
        self._queue: deque[tuple[float, T]] = deque()
        self._last_due = float("-inf")
        self.dropped = 0

    def push(self, item: T, now: float, *, droppable: bool = True) -> bool:
        """Schedule `item` (times in seconds). False when it was lost."""
        c = self.conditions
        if droppable and c.loss > 0 and self.rng.random() < c.loss:
            self.dropped += 1
            return False
        delay_ms = c.latency_ms
        if c.jitter_ms > 0:
            delay_ms += self.rng.uniform(-c.jitter_ms, c.jitter_ms)
        due = max(now + max(0.0, delay_ms) / 1000.0, self._last_due)
        self._last_due = due
        self._queue.append((due, item))
        return True

    def pop_due(self, now: float) -> list[T]:
        out: list[T] = []
        while self._queue and self._queue[0][0] <= now:
            out.append(self._queue.popleft()[1])
        return out

    def next_due(self) -> float | None:
        return self._queue[0][0] if self._queue else None

    def __len__(self) -> int:
        return len(self._queue)


@dataclass(frozen=True, slots=True)
class _Ping:
    """A WebSocket ping from the server, queued on the inbound line like a frame."""

    payload: bytes


class NetsimClient(Client):
    """`Client` with `NetConditions` applied to both directions (no-op when inactive).

    Overrides `Client`'s hooks: `_send` (outgoing), `_on_frame` (incoming), `_on_ping`
    with autoping off, so the answer to the server's WebSocket ping is delayed too
    (otherwise the server-measured RTT would not see the added latency), and
    `_on_open`/`_on_closed` to run and stop the delay-line pumps.
    """

    def __init__(self, url: str, name: str = "bot", *,
                 conditions: NetConditions | None = None, seed: int = 0,
                 **kwargs: object) -> None:
        conditions = conditions or NetConditions()
        # Pings must reach us to be delayed, so aiohttp must not answer them itself.
        kwargs.setdefault("autoping", not conditions.active)
        super().__init__(url, name, **kwargs)  # type: ignore[arg-type]
        self.conditions = conditions
        rng = random.Random(seed)
        self._out: DelayLine[Callable[[], Awaitable[None]]] = DelayLine(self.conditions, rng)
        self._in: DelayLine[bytes | _Ping] = DelayLine(self.conditions, rng)
        self._out_wake = asyncio.Event()
        self._in_wake = asyncio.Event()
        self._pumps: list[asyncio.Task] = []

    @property
    def frames_dropped(self) -> int:
        return self._out.dropped + self._in.dropped

    # -- outgoing ----------------------------------------------------------------------------

    async def _send(self, frame: pb.ClientFrame) -> None:
        if not self.conditions.active:
            await super()._send(frame)
            return
        if self.ws is None or self.ws.closed:
            raise ClientError("not connected")
        kind = frame.WhichOneof("kind")
        if kind == "leave":
            # The goodbye goes out at once: the close right after it stops the delay line,
            # which would otherwise drop it (and the seat would wait out the resume grace).
            await super()._send(frame)
            return
        droppable = self.welcome is not None and kind == "input"
        self._out.push(lambda: Client._send(self, frame), self._loop_time(),
                       droppable=droppable)
        self._out_wake.set()

    # -- incoming ----------------------------------------------------------------------------

    def _on_frame(self, data: bytes) -> None:
        if not self.conditions.active:
            super()._on_frame(data)
            return
        # Only snapshots may be lost; peeking at the oneof costs a parse, so decide by the
        # cheap test first (no loss configured, or not yet welcomed: nothing is dropped).
        droppable = False
        if self.conditions.loss > 0 and self.welcome is not None:
            frame = pb.ServerFrame()
            frame.ParseFromString(data)
            droppable = frame.WhichOneof("kind") == "snapshot"
        self._in.push(data, self._loop_time(), droppable=droppable)
        self._in_wake.set()

    def _on_open(self) -> None:
        if self.conditions.active:
            self._pumps = [asyncio.create_task(self._pump_out()),
                           asyncio.create_task(self._pump_in())]

    def _on_closed(self) -> None:
        for task in self._pumps:
            task.cancel()

    def _on_ping(self, payload: bytes) -> None:
        # The ping travels the inbound line, its pong the outbound one.
        self._in.push(_Ping(payload), self._loop_time(), droppable=False)
        self._in_wake.set()

    # -- pumps: one sleep per due item, to its absolute due time --------------------------------

    @staticmethod
    def _loop_time() -> float:
        return asyncio.get_running_loop().time()

    async def _wait_due(self, line: DelayLine, wake: asyncio.Event) -> None:
        due = line.next_due()
        if due is None:
            wake.clear()
            await wake.wait()
            return
        delay = due - self._loop_time()
        if delay > 0:
            wake.clear()
            with contextlib.suppress(TimeoutError):
                # A push can only add items due later (FIFO), so waking early is harmless.
                await asyncio.wait_for(wake.wait(), delay)

    async def _pump_out(self) -> None:
        with contextlib.suppress(asyncio.CancelledError):
            while True:
                await self._wait_due(self._out, self._out_wake)
                for send in self._out.pop_due(self._loop_time()):
                    try:
                        await send()
                    except (ClientError, ConnectionError, aiohttp.ClientError):
                        return

    async def _pump_in(self) -> None:
        with contextlib.suppress(asyncio.CancelledError):
            while True:
                await self._wait_due(self._in, self._in_wake)
                for item in self._in.pop_due(self._loop_time()):
                    if isinstance(item, _Ping):
                        ws = self.ws
                        if ws is not None:
                            self._out.push(lambda p=item.payload, w=ws: w.pong(p),
                                           self._loop_time(), droppable=False)
                            self._out_wake.set()
                    else:
                        Client._on_frame(self, item)

    async def _drop_socket(self, code: int = 1000) -> None:
        for task in self._pumps:
            task.cancel()
        self._pumps = []
        await super()._drop_socket(code)
