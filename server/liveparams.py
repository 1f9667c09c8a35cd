"""One source of truth for the running parameters: the TOML file when there is one.

Theory of operation
-------------------
With a parameters file (``tickwire serve --params FILE``) the file is the truth. Every
change reaches the rooms by one path: the file is read and validated, and what it says is
handed to ``ServerControl.apply_params``. The file watcher takes that path when the designer
saves the file. An admin change takes it too: ``LiveParams.change`` writes the new values
into the file (``server.paramsfile``: only those values change, comments and layout
stay), then reads the file back at once. So a value set in /admin is in the file, an
unrelated save keeps it, and a restart loads it.

Without a file, admin changes apply in memory and are marked ``persisted: false``: they
are lost at restart, and the admin page says so.

Restart-only keys (``live=False``) are refused by ``change``: a running room cannot take
them. When the file gives them a value that differs from the running one, they are listed
in ``pending_restart``.

Everything that happens is published to ``feed`` (``ParamsFeed``): the admin page's event
stream shows the running version, each change with its source, and each file error, as
they happen. Every event carries the whole ``state()``, so a page that missed events is
right again after the next one.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import tomllib
from collections.abc import AsyncIterator, Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from aiohttp import web

from server.paramsfile import set_values, write_atomic
from server.paramswatch import POLL_INTERVAL_S, ParamsWatcher
from server.room import merge_live_params
from sim.params import Params, ParamsError, normalize_changes, params_from_mapping, schema

if TYPE_CHECKING:
    from server.control import ServerControl

__all__ = ["LIVE_PARAMS_KEY", "LiveParams", "ParamsFeed", "live_params_for", "params_watch_ctx",
           "watch_params"]

log = logging.getLogger("tickwire.params")

FEED_QUEUE = 64  # events buffered per subscriber; a subscriber that falls behind is dropped
MAX_SUBSCRIBERS = 32


def _stat(path: Path) -> os.stat_result | None:
    try:
        return os.stat(path)
    except OSError:
        return None


class ParamsFeed:
    """Fan-out of parameter events to a bounded number of bounded queues. ``None`` in a
    queue means: this subscription is over (the server stops, or it fell behind)."""

    def __init__(self, max_subscribers: int = MAX_SUBSCRIBERS,
                 queue_size: int = FEED_QUEUE) -> None:
        self.max_subscribers = max_subscribers
        self.queue_size = queue_size
        self._queues: set[asyncio.Queue[dict[str, Any] | None]] = set()
        self.closed = False

    def __len__(self) -> int:
        return len(self._queues)

    def subscribe(self) -> asyncio.Queue[dict[str, Any] | None] | None:
        """A new queue of events, or ``None`` when the feed is full or closed."""
        if self.closed or len(self._queues) >= self.max_subscribers:
            return None
        q: asyncio.Queue[dict[str, Any] | None] = asyncio.Queue(self.queue_size + 1)
        self._queues.add(q)
        return q

    def unsubscribe(self, q: asyncio.Queue[dict[str, Any] | None]) -> None:
        self._queues.discard(q)

    def publish(self, event: dict[str, Any]) -> None:
        for q in list(self._queues):
            if q.qsize() >= self.queue_size:
                # A reader this far behind is ended (the extra slot holds the None); it
                # reconnects and starts from the full state.
                self._queues.discard(q)
                q.put_nowait(None)
            else:
                q.put_nowait(event)

    def close(self) -> None:
        self.closed = True
        for q in self._queues:
            if not q.full():
                q.put_nowait(None)
        self._queues.clear()


class LiveParams:
    """The running parameters, their file, and the events about them (see module docs).
    ``stat`` is injectable for tests."""

    def __init__(self, gateway: ServerControl, path: Path | None,
                 stat: Callable[[Path], os.stat_result | None] = _stat) -> None:
        self.gateway = gateway
        self.path = Path(path) if path is not None else None
        self._stat = stat
        self.watcher = ParamsWatcher(self.path, stat(self.path)) if self.path else None
        self.feed = ParamsFeed()
        self.file_error: str | None = None
        self.pending_restart: dict[str, object] = {}
        self.last_event: dict[str, Any] | None = None
        self._changing = asyncio.Lock()  # one admin change at a time (see `change`)

    # -- what the page shows ---------------------------------------------------------------

    def state(self) -> dict[str, Any]:
        return {
            "version": self.gateway.params_version,
            "values": self.gateway.params.to_dotted(),
            "file": str(self.path) if self.path else None,
            "persisted": self.path is not None,
            "file_error": self.file_error,
            "pending_restart": dict(self.pending_restart),
        }

    def _publish(self, kind: str, **detail: Any) -> dict[str, Any]:
        event = {"event": kind, **detail, "state": self.state()}
        self.last_event = event
        self.feed.publish(event)
        return event

    # -- the file path ---------------------------------------------------------------------

    def poll(self) -> None:
        """One watcher check (the polling task calls this): apply a saved change, report a
        broken file, or do nothing when the file did not change."""
        if self.watcher is None or self._changing.locked():
            return  # an admin change is writing the file, and reads it back itself
        self._take(self.watcher.check(self._stat(self.watcher.path)), source="file")

    def _take(self, result: Params | ParamsError | None, source: str) -> None:
        if result is None:
            return
        counter = self.gateway.metrics.params_updates
        if isinstance(result, ParamsError):
            self._reject(str(result), source)
            return
        before = self.gateway.params.to_dotted()
        try:
            version, restart = self.gateway.apply_params(result, source=source)
        except ParamsError as exc:
            self._reject(str(exc), source)
            return
        after = self.gateway.params.to_dotted()
        wanted = result.to_dotted()
        self.file_error = None
        self.pending_restart = {key: wanted[key] for key in restart}
        changed = {k: v for k, v in after.items() if before[k] != v}
        counter.labels(source=source, result="applied").inc()
        self._publish("applied", source=source, changed=changed, version=version)

    def _reject(self, error: str, source: str) -> None:
        log.error("parameters rejected, the running values stay: %s", error,
                  extra={"source": source, "params_version": self.gateway.params_version})
        self.gateway.metrics.params_updates.labels(source=source, result="rejected").inc()
        self.file_error = error
        self._publish("file_error", source=source, error=error)

    # -- the admin path --------------------------------------------------------------------

    async def change(self, changes: Mapping[str, object]) -> dict[str, Any]:
        """Apply an admin change (dotted keys, field names or tables). Returns what the
        page needs: ``version`` now running, ``persisted``, ``changed``. Raises
        ``ParamsError`` (naming the key) and changes nothing when a value is invalid, a
        key is restart-only, or the file cannot hold the change.

        Changes are applied one at a time (two admins saving at once must not both edit
        the file they read before the other wrote), and the file's write and fsync run in
        a thread: a slow disk must not hold up every room's tick."""
        dotted = normalize_changes(changes)
        keys = schema()
        restart = [k for k in dotted if not keys[k]["live"]]
        if restart:
            raise ParamsError(
                f"{', '.join(restart)} only apply when the server starts; "
                + ("change them in the parameters file and restart" if self.path else
                   "start the server with --params FILE to change them"))
        async with self._changing:
            before = self.gateway.params.to_dotted()
            if self.path is None:
                new = self.gateway.params.with_changes(dotted)
                version, _ = self.gateway.apply_params(new, source="admin")
            else:
                await self._write_file(dotted)
                if self.file_error is not None:
                    # The file was written and re-read, yet it was refused: say so.
                    raise ParamsError(self.file_error)
                version = self.gateway.params_version
            after = self.gateway.params.to_dotted()
        changed = {k: v for k, v in after.items() if before[k] != v}
        if self.path is None:
            self.gateway.metrics.params_updates.labels(source="admin", result="applied").inc()
            self._publish("applied", source="admin", changed=changed, version=version)
        return {"version": version, "persisted": self.path is not None,
                "file": str(self.path) if self.path else None, "changed": changed,
                "state": self.state()}

    async def _write_file(self, dotted: dict[str, object]) -> None:
        assert self.path is not None and self.watcher is not None
        try:
            text = self.path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise ParamsError(f"{self.path}: cannot read the parameters file: {exc}") from exc
        try:
            on_file = params_from_mapping(tomllib.loads(text))
        except (tomllib.TOMLDecodeError, ParamsError) as exc:
            raise ParamsError(f"{self.path} has an error; fix the file first: {exc}") from exc
        target = on_file.with_changes(dotted)  # validated and typed, like a file value
        typed = target.to_dotted()
        new_text = set_values(text, {k: typed[k] for k in dotted})
        if params_from_mapping(tomllib.loads(new_text)) != target:  # our edit is exact
            raise ParamsError(f"{self.path}: the change could not be written faithfully")
        merge_live_params(self.gateway.params, target)  # cross-field rules vs. running
        try:
            await asyncio.to_thread(write_atomic, self.path, new_text)
        except OSError as exc:
            raise ParamsError(f"{self.path}: cannot write the parameters file: "
                              f"{exc.strerror or exc}") from exc
        log.info("admin change written to the parameters file",
                 extra={"path": str(self.path), "keys": sorted(dotted)})
        # Read back by the watcher's own path, now rather than at the next poll: the
        # answer then names the version that runs. ``reload`` reads even when the file's
        # signature happens to look unchanged (same size, reused inode, coarse mtime).
        self._take(self.watcher.reload(self._stat(self.watcher.path)), source="admin")


LIVE_PARAMS_KEY = web.AppKey("live_params", LiveParams)


def live_params_for(app: web.Application, gateway: ServerControl) -> LiveParams:
    """The app's ``LiveParams`` (made on first use, from ``gateway.config.params_path``):
    the admin routes and the file watcher share it."""
    if LIVE_PARAMS_KEY not in app:
        app[LIVE_PARAMS_KEY] = LiveParams(gateway, gateway.config.params_path)
    return app[LIVE_PARAMS_KEY]


async def watch_params(live: LiveParams, interval_s: float = POLL_INTERVAL_S) -> None:
    """Poll the file forever (cancel to stop). Never raises for a bad file."""
    while True:
        await asyncio.sleep(interval_s)
        try:
            live.poll()
        except Exception:
            # A bug here must not kill the watcher: the next save should still apply.
            log.exception("parameters watcher failed", extra={"source": str(live.path)})


def params_watch_ctx(gateway: ServerControl, path: str | Path,
                     interval_s: float = POLL_INTERVAL_S
                     ) -> Callable[[web.Application], AsyncIterator[None]]:
    """An aiohttp ``cleanup_ctx`` entry that runs ``watch_params`` while the app runs. It
    polls through the app's ``LiveParams`` (``server.liveparams``), which the admin routes
    share, so both see and publish the same changes."""
    async def ctx(app: web.Application) -> AsyncIterator[None]:
        live = app.get(LIVE_PARAMS_KEY) or LiveParams(gateway, Path(path))
        task = asyncio.get_running_loop().create_task(
            watch_params(live, interval_s), name="params-watch")
        log.info("watching parameters file", extra={"path": str(path)})
        yield
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task

    return ctx
