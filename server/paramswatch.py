"""Watch the parameters file and apply each saved change to every room, live.

Theory of operation
-------------------
``ParamsWatcher`` is the sans-I/O core: it is handed a ``stat`` result (or ``None`` when
the file cannot be stat'ed) and remembers the file's signature (mtime in ns, size, inode).
When the signature changes it reads and validates the file and returns the new ``Params``
or the ``ParamsError`` that explains what is wrong; when nothing changed it returns
``None``. An editor that saves by rename changes the inode, one that rewrites in place
changes mtime/size: both are seen. A half-written file fails validation and is reported;
the finished save changes the signature again and is applied then.

``watch_params`` is the shell: it polls ``os.stat`` every ``interval_s`` seconds and hands
what the core returns to ``ServerControl.apply_params``. ``params_watch_ctx`` runs it as an
aiohttp ``cleanup_ctx`` task. Invalid files never change the running parameters.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import TYPE_CHECKING

from sim.params import Params, ParamsError, load_params

if TYPE_CHECKING:
    from aiohttp import web

    from server.control import ServerControl

__all__ = ["POLL_INTERVAL_S", "ParamsWatcher", "params_watch_ctx", "watch_params"]

log = logging.getLogger("tickwire.params")

POLL_INTERVAL_S = 0.5

_Signature = tuple[int, int, int]


def _signature(st: os.stat_result) -> _Signature:
    return (st.st_mtime_ns, st.st_size, st.st_ino)


class ParamsWatcher:
    """Tells whether the parameters file changed and, if so, what it now says.

    ``baseline`` is the stat of the file as the server loaded it at start-up (``None``:
    the first ``check`` of an existing file counts as a change)."""

    def __init__(self, path: str | Path, baseline: os.stat_result | None = None) -> None:
        self.path = Path(path)
        self._seen: _Signature | None = _signature(baseline) if baseline else None
        self._missing_reported = False

    def check(self, st: os.stat_result | None) -> Params | ParamsError | None:
        """The file's new parameters, the error that makes them unusable, or ``None`` when
        the file did not change since the last call. ``st`` is ``os.stat(path)``, or
        ``None`` when that failed (a missing file is reported once, then ignored until it
        reappears: editors briefly remove files while saving)."""
        if st is None:
            if self._missing_reported:
                return None
            self._missing_reported = True
            self._seen = None
            return ParamsError(f"{self.path}: cannot read the parameters file (missing?)")
        self._missing_reported = False
        sig = _signature(st)
        if sig == self._seen:
            return None
        self._seen = sig
        try:
            return load_params(self.path)
        except ParamsError as exc:
            return exc
        except OSError as exc:
            return ParamsError(f"{self.path}: {exc.strerror or exc}")


def _stat(path: Path) -> os.stat_result | None:
    try:
        return os.stat(path)
    except OSError:
        return None


def apply_checked(gateway: ServerControl, result: Params | ParamsError | None, source: str) -> None:
    """Hand one watcher result to the gateway and log the outcome."""
    if result is None:
        return
    if isinstance(result, ParamsError):
        log.error("parameters rejected, the running values stay: %s", result,
                  extra={"source": source, "params_version": gateway.params_version})
        return
    try:
        # The gateway logs what it applied and warns about restart-only keys.
        gateway.apply_params(result, source=source)
    except ParamsError as exc:
        log.error("parameters rejected, the running values stay: %s", exc,
                  extra={"source": source, "params_version": gateway.params_version})


async def watch_params(gateway: ServerControl, watcher: ParamsWatcher,
                       interval_s: float = POLL_INTERVAL_S,
                       stat: Callable[[Path], os.stat_result | None] = _stat) -> None:
    """Poll the file forever (cancel to stop). Never raises for a bad file."""
    source = str(watcher.path)
    while True:
        await asyncio.sleep(interval_s)
        try:
            apply_checked(gateway, watcher.check(stat(watcher.path)), source)
        except Exception:
            # A bug here must not kill the watcher: the next save should still apply.
            log.exception("parameters watcher failed", extra={"source": source})


def params_watch_ctx(gateway: ServerControl, path: str | Path,
                     interval_s: float = POLL_INTERVAL_S
                     ) -> Callable[[web.Application], AsyncIterator[None]]:
    """An aiohttp ``cleanup_ctx`` entry that runs ``watch_params`` while the app runs."""
    path = Path(path)

    async def ctx(app: web.Application) -> AsyncIterator[None]:
        watcher = ParamsWatcher(path, _stat(path))
        task = asyncio.get_running_loop().create_task(
            watch_params(gateway, watcher, interval_s), name="params-watch")
        log.info("watching parameters file", extra={"path": str(path)})
        yield
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task

    return ctx
