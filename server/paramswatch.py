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

The shell is in ``server.liveparams``: every ``POLL_INTERVAL_S`` seconds its
``watch_params`` asks the app's ``LiveParams`` to poll; that stats the file, runs this core,
hands a new set to ``ServerControl.apply_params`` and publishes what happened to the admin
page. Invalid files never change the running parameters.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

from sim.params import Params, ParamsError, load_params

__all__ = ["POLL_INTERVAL_S", "ParamsWatcher"]

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

    def reload(self, st: os.stat_result | None) -> Params | ParamsError:
        """Read the file now, whatever its signature says (used right after the server
        itself wrote it), and remember ``st`` as seen."""
        self._seen = None
        result = self.check(st)
        assert result is not None  # a None signature never matches
        return result

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
