"""Connections before their first request: a deadline for the request head, and caps.

Theory of operation
-------------------
An HTTP connection costs a file descriptor and a task from the moment it is accepted.
aiohttp reads request heads without a deadline of its own, so a client that connects and
sends nothing, or trickles a header a byte at a time, holds both for as long as it likes
(an adversarial probe held 400 under a 256-fd limit, and then every new connection
failed). This module bounds that state:

- a connection must deliver a complete request head within `head_timeout_s` of being
  accepted, or it gets `408 Request Timeout` and is closed (label `head_timeout`);
- at most `max_pending` connections may be waiting for their first head at once, and
  at most `max_pending_per_ip` from one address (`handshake.address_key`): past either,
  a new connection gets `503` and is closed at once (labels `pending_cap`,
  `pending_ip_cap`), before aiohttp spends a task on it;
- `FdWatch` reports when the process nears its RLIMIT_NOFILE soft limit.

Every refusal is counted in `tickwire_http_connections_dropped_total{reason}` and logged
at the next sweep, then as one summary line per reason at most every `LOG_EVERY_S` (not
one line per connection: a flood of lines is what an attacker would want).

`PendingConnections` is the sans-I/O core (the time is an argument). `HeadGuard` is the
shell: an asyncio protocol wrapper in front of aiohttp's `RequestHandler` that admits
the connection, forwards bytes until the head is complete (aiohttp's server calls its
`request_factory` then), and at that moment takes itself out of the data path with
`transport.set_protocol`, so upgraded WebSockets pay nothing for it. A periodic sweep
closes what is past its deadline. Keep-alive connections between requests are bounded
by aiohttp's `keepalive_timeout`, which the serving code sets just above the deadline.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import os
import resource
import time
from collections import Counter, OrderedDict
from collections.abc import Callable, Hashable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from server.handshake import address_key

if TYPE_CHECKING:
    from aiohttp import web

    from server.metrics import Metrics

__all__ = ["FdWatch", "GuardLimits", "HeadGuard", "PendingConnections", "default_max_pending",
           "default_pending_per_ip"]

log = logging.getLogger("tickwire.connguard")

LOG_EVERY_S = 10.0
_TIMEOUT_RESPONSE = (b"HTTP/1.1 408 Request Timeout\r\nConnection: close\r\n"
                     b"Content-Type: text/plain\r\nContent-Length: 24\r\n\r\n"
                     b"request head not in time")
_BUSY_RESPONSE = (b"HTTP/1.1 503 Service Unavailable\r\nConnection: close\r\n"
                  b"Content-Type: text/plain\r\nContent-Length: 25\r\n\r\n"
                  b"too many pending requests")


def default_max_pending() -> int:
    """A quarter of the fd soft limit, at most 1024: the rest stays for players."""
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY:
        return 1024
    return max(8, min(1024, soft // 4))


def default_pending_per_ip(max_pending: int) -> int:
    """A quarter of the global cap, at most 64: one address never fills the cap alone."""
    return 64 if max_pending <= 0 else max(1, min(64, max_pending // 4))


@dataclass(frozen=True, slots=True)
class GuardLimits:
    """`head_timeout_s`: seconds from accept to a complete request head.
    `max_pending` / `max_pending_per_ip`: connections waiting for their first head."""

    head_timeout_s: float = 10.0
    max_pending: int = 1024
    max_pending_per_ip: int = 64


class PendingConnections:
    """Which accepted connections still owe their first request head, and until when.

    Keys are any hashable (the shell uses the protocol object). All connections share one
    timeout, so insertion order is deadline order and `expired` only looks at the front.
    """

    def __init__(self, limits: GuardLimits) -> None:
        self.limits = limits
        self._deadlines: OrderedDict[Hashable, tuple[float, str]] = OrderedDict()
        self.per_ip: Counter[str] = Counter()

    def __len__(self) -> int:
        return len(self._deadlines)

    def admit(self, key: Hashable, ip: str, now: float) -> str | None:
        """Register a new connection; a refusal label (and nothing registered) if a cap
        is reached."""
        lim = self.limits
        if lim.max_pending and len(self._deadlines) >= lim.max_pending:
            return "pending_cap"
        addr = address_key(ip)
        if lim.max_pending_per_ip and self.per_ip[addr] >= lim.max_pending_per_ip:
            return "pending_ip_cap"
        self._deadlines[key] = (now + lim.head_timeout_s, addr)
        self.per_ip[addr] += 1
        return None

    def done(self, key: Hashable) -> bool:
        """The head arrived or the connection closed; True if it was pending."""
        entry = self._deadlines.pop(key, None)
        if entry is None:
            return False
        addr = entry[1]
        self.per_ip[addr] -= 1
        if self.per_ip[addr] <= 0:
            del self.per_ip[addr]
        return True

    def expired(self, now: float) -> list[Hashable]:
        """Remove and return the connections whose deadline has passed."""
        out = []
        while self._deadlines:
            key, (deadline, _) = next(iter(self._deadlines.items()))
            if deadline > now:
                break
            self.done(key)
            out.append(key)
        return out


class FdWatch:
    """Open descriptors against RLIMIT_NOFILE: `check(open_fds)` returns "near" once when
    the count crosses `warn_ratio` of the soft limit, "clear" once when it falls back
    below `clear_ratio`, else None."""

    def __init__(self, limit: int, warn_ratio: float = 0.8, clear_ratio: float = 0.7) -> None:
        self.limit = limit
        self.warn_at = int(limit * warn_ratio)
        self.clear_at = int(limit * clear_ratio)
        self.near = False

    @classmethod
    def for_this_process(cls) -> FdWatch | None:
        soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
        return None if soft == resource.RLIM_INFINITY else cls(soft)

    def check(self, open_fds: int) -> str | None:
        if not self.near and open_fds >= self.warn_at:
            self.near = True
            return "near"
        if self.near and open_fds < self.clear_at:
            self.near = False
            return "clear"
        return None


def open_fd_count(limit: int) -> int | None:
    """Open descriptors of this process; `limit` when there is no descriptor left even to
    list them (EMFILE says it all); None where /proc is not available."""
    try:
        return len(os.listdir("/proc/self/fd"))
    except OSError as exc:
        return limit if exc.errno in (errno.EMFILE, errno.ENFILE) else None


class _Guarded:
    """asyncio protocol in front of one aiohttp RequestHandler until its first head."""

    __slots__ = ("guard", "inner", "refused")

    def __init__(self, guard: HeadGuard, inner: Any) -> None:
        self.guard = guard
        self.inner = inner
        self.refused = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        peer = transport.get_extra_info("peername")
        ip = str(peer[0]) if peer else "unknown"
        label = self.guard.pending.admit(self.inner, ip, self.guard.clock())
        if label is not None:
            self.refused = True
            self.guard.drop(label)
            transport.write(_BUSY_RESPONSE)  # type: ignore[attr-defined]
            transport.close()
            return
        self.guard.metrics.http_pending.set(len(self.guard.pending))
        self.inner.connection_made(transport)

    def data_received(self, data: bytes) -> None:
        self.inner.data_received(data)

    def eof_received(self) -> bool | None:
        return None if self.refused else self.inner.eof_received()

    def connection_lost(self, exc: BaseException | None) -> None:
        if self.refused:
            return
        if self.guard.pending.done(self.inner):
            self.guard.metrics.http_pending.set(len(self.guard.pending))
        self.inner.connection_lost(exc)

    def pause_writing(self) -> None:
        self.inner.pause_writing()

    def resume_writing(self) -> None:
        self.inner.resume_writing()


class HeadGuard:
    """The shell around `PendingConnections` for one aiohttp `web.Server`.

    `protocol_factory(server)` is what the listening socket uses instead of `server`;
    `run(stop)` is the sweep (deadlines, fd watch, summary log lines).
    """

    def __init__(self, limits: GuardLimits, metrics: Metrics,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.pending = PendingConnections(limits)
        self.metrics = metrics
        self.clock = clock
        self.fds = FdWatch.for_this_process()
        self._unlogged: Counter[str] = Counter()
        self._last_log = float("-inf")  # the first drop is logged at the next sweep

    def protocol_factory(self, server: web.Server) -> Callable[[], Any]:
        """Wrap `server` (aiohttp's protocol factory): its request_factory marks the head
        complete, and each connection starts behind a `_Guarded`."""
        make_request = server.request_factory
        pending, metrics = self.pending, self.metrics

        def request_factory(message: Any, payload: Any, protocol: Any, writer: Any,
                            task: Any) -> Any:
            if pending.done(protocol):
                metrics.http_pending.set(len(pending))
            transport = protocol.transport
            if transport is not None and transport.get_protocol() is not protocol:
                transport.set_protocol(protocol)  # out of the data path from now on
            return make_request(message, payload, protocol, writer, task)

        server.request_factory = request_factory
        return lambda: _Guarded(self, server())

    def drop(self, label: str) -> None:
        self.metrics.http_dropped.labels(reason=label).inc()
        self._unlogged[label] += 1

    def sweep(self) -> None:
        """Close the connections past their deadline; flush the summary log lines."""
        now = self.clock()
        expired = self.pending.expired(now)
        for protocol in expired:
            self.drop("head_timeout")
            transport = protocol.transport
            if transport is not None and not transport.is_closing():
                transport.write(_TIMEOUT_RESPONSE)
                transport.close()
        if expired:
            self.metrics.http_pending.set(len(self.pending))
        if self._unlogged and now - self._last_log >= LOG_EVERY_S:
            self.flush_log(now)

    def flush_log(self, now: float) -> None:
        lim = self.pending.limits
        for label, n in sorted(self._unlogged.items()):
            if label == "head_timeout":
                log.warning("closed %d connections that sent no complete request head "
                            "within %g s", n, lim.head_timeout_s,
                            extra={"reason": label, "count": n})
            else:
                log.warning("refused %d connections: too many waiting for a request "
                            "head (limit %d, per address %d)", n, lim.max_pending,
                            lim.max_pending_per_ip, extra={"reason": label, "count": n})
        self._unlogged.clear()
        self._last_log = now

    def check_fds(self) -> None:
        if self.fds is None:
            return
        count = open_fd_count(self.fds.limit)
        if count is None:
            return
        state = self.fds.check(count)
        if state == "near":
            self.metrics.fd_near_limit.inc()
            log.warning("open file descriptors near the limit: %d of %d", count,
                        self.fds.limit, extra={"open_fds": count, "limit": self.fds.limit})
        elif state == "clear":
            log.info("open file descriptors back below %d of %d", self.fds.clear_at,
                     self.fds.limit, extra={"open_fds": count, "limit": self.fds.limit})

    async def run(self, stop: asyncio.Event) -> None:
        """Sweep until `stop`: deadlines every quarter timeout (at most 0.25 s apart) so a
        connection goes within 1.25x its deadline; descriptors once a second."""
        period = min(0.25, self.pending.limits.head_timeout_s / 4)
        next_fd_check = 0.0
        while not stop.is_set():
            self.sweep()
            now = self.clock()
            if now >= next_fd_check:
                self.check_fds()
                next_fd_check = now + 1.0
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), period)
        if self._unlogged:
            self.flush_log(self.clock())
