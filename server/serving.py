"""Run an aiohttp app on a socket: listen, guard connections, drain, stop.

Why not `web.run_app`: it logs nothing useful when the port is taken (a traceback after
our "serving" line), and on SIGTERM it closes the listener *before* the drain, so a
load balancer's health check gets "connection refused" while players are still being
moved off. Here the order is:

1. bind (an error here is one line and exit status 2: nothing was served);
2. serve until SIGTERM or SIGINT;
3. drain while the listener stays open, so `/healthz` answers 503
   `{"status": "draining"}` and new upgrades get 503: the drain flag is set at once
   (`on_drain_start`), players keep playing for `drain_grace_s` (time for a load
   balancer to see the 503 and stop routing here), then the app's `on_shutdown` runs (the
   gateway sends last snapshots and closes every socket with 1001);
4. close the listener, then the remaining HTTP connections, then the app's cleanup.

The listener's protocol factory is wrapped by `connguard.HeadGuard` (request-head
deadline, caps on connections still owing a head, fd-limit watch).
"""

from __future__ import annotations

import asyncio
import gc
import logging
import os
import signal
import ssl
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from aiohttp import web

from server.connguard import GuardLimits, HeadGuard
from server.metrics import Metrics

__all__ = ["ListenError", "Listener", "ServeOptions", "serve_until_signal", "start_listener"]

log = logging.getLogger("tickwire")


class ListenError(Exception):
    """The address could not be bound (in use, no permission, unknown host)."""


@dataclass(frozen=True, slots=True)
class ServeOptions:
    host: str
    port: int
    ssl_context: ssl.SSLContext | None = None
    guard: GuardLimits = field(default_factory=GuardLimits)
    shutdown_timeout_s: float = 5.0
    drain_grace_s: float = 0.0  # 503 from /healthz, players still playing, before the drain
    backlog: int = 128


class _DrainOnceRunner(web.AppRunner):
    """`shutdown` (the app's on_shutdown: the drain) runs once: `Listener.stop` calls it
    with the listener still open, and `cleanup` would call it again."""

    _drained = False

    async def shutdown(self) -> None:
        if not self._drained:
            self._drained = True
            await super().shutdown()


class _GuardedSite(web.BaseSite):
    """A TCP listener whose connections start behind the HeadGuard."""

    def __init__(self, runner: web.BaseRunner, options: ServeOptions, guard: HeadGuard
                 ) -> None:
        super().__init__(runner, ssl_context=options.ssl_context, backlog=options.backlog)
        self._options = options
        self._guard = guard
        self.port = options.port

    @property
    def name(self) -> str:
        scheme = "https" if self._options.ssl_context else "http"
        return f"{scheme}://{self._options.host}:{self.port}"

    async def start(self) -> None:
        await super().start()
        server = self._runner.server
        assert server is not None
        o = self._options
        self._server = await asyncio.get_running_loop().create_server(
            self._guard.protocol_factory(server), o.host, o.port, ssl=o.ssl_context,
            backlog=o.backlog, reuse_address=True,
            # a TLS handshake that never completes is bounded like a request head
            ssl_handshake_timeout=o.guard.head_timeout_s if o.ssl_context else None)
        self.port = self._server.sockets[0].getsockname()[1]


@dataclass
class Listener:
    runner: _DrainOnceRunner
    site: _GuardedSite
    guard: HeadGuard
    _stop_sweep: asyncio.Event
    _sweep: asyncio.Task

    @property
    def port(self) -> int:
        return self.site.port

    async def stop(self, grace_s: float = 0.0) -> None:
        """Drain with the listener open (after `grace_s` seconds in which the caller's
        drain flag already answers /healthz and new players with 503), then close it and
        everything else."""
        if grace_s > 0:
            await asyncio.sleep(grace_s)
        await self.runner.shutdown()
        await self.site.stop()
        self._stop_sweep.set()
        await self._sweep
        await self.runner.cleanup()


async def start_listener(app: web.Application, metrics: Metrics, options: ServeOptions
                         ) -> Listener:
    """Set the app up and listen; `ListenError` (with the app cleaned up) if binding
    fails."""
    runner = _DrainOnceRunner(
        app, access_log=None, shutdown_timeout=options.shutdown_timeout_s,
        # Between two requests of a keep-alive connection aiohttp's own timer applies;
        # set just above the head deadline so the guard's sweep closes a first head.
        keepalive_timeout=options.guard.head_timeout_s + 1.0)
    await runner.setup()
    guard = HeadGuard(options.guard, metrics)
    site = _GuardedSite(runner, options, guard)
    try:
        await site.start()
    except OSError as exc:
        await runner.cleanup()
        reason = os.strerror(exc.errno) if exc.errno else str(exc)
        raise ListenError(f"cannot listen on {options.host}:{options.port}: "
                          f"{reason.lower()}") from None
    stop = asyncio.Event()
    sweep = asyncio.get_running_loop().create_task(guard.run(stop), name="connguard")
    return Listener(runner, site, guard, stop, sweep)


async def serve_until_signal(app: web.Application, metrics: Metrics, options: ServeOptions,
                             *, on_listening: Callable[[Listener], None] | None = None,
                             on_drain_start: Callable[[], None] | None = None) -> None:
    """Listen, serve until SIGTERM/SIGINT, drain and stop (logging both ends of the
    drain). `on_drain_start` runs as the drain begins, before the grace period (it sets
    the app's drain flag). Raises `ListenError` before anything is served."""
    listener = await start_listener(app, metrics, options)
    # What start-up built (modules, params, the app, the rooms' fixed arrays) lives until
    # exit: moved out of the collector's generations, a full collection no longer walks
    # it (in memory at bigworld: 21 ms of full collections in 400 ticks became 0.4 ms).
    gc.collect()
    gc.freeze()
    if on_listening is not None:
        on_listening(listener)
    loop = asyncio.get_running_loop()
    got: asyncio.Future[str] = loop.create_future()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, lambda s=sig: got.done() or got.set_result(s.name))
    try:
        name = await got
        started = time.monotonic()
        log.info("drain started", extra={"signal": name, "grace_s": options.drain_grace_s,
                                         "timeout_s": options.shutdown_timeout_s})
        if on_drain_start is not None:
            on_drain_start()
        # The handlers stay: a second signal during the drain is ignored (the drain is
        # bounded by grace + shutdown_timeout_s) instead of interrupting it with a traceback.
        await listener.stop(options.drain_grace_s)
        log.info("drain finished", extra={"duration_s": round(time.monotonic() - started, 3)})
    finally:
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(sig)
