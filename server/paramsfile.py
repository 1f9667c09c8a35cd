"""Edit the parameters TOML file the way a designer would: change only the values asked for.

``set_values`` is pure (text in, text out): it parses the file with tomlkit, which keeps
comments, blank lines, key order and the way each table is written (``[player]`` headers,
dotted keys, inline tables), replaces the values of the given dotted keys, adds missing
keys to their table (creating the table at the end when the file has none), and returns
the new text. ``write_atomic`` puts that text in place with a rename, so the file watcher
never reads a half-written file.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Mapping
from pathlib import Path

import tomlkit
from tomlkit.exceptions import TOMLKitError

from sim.params import ParamsError

__all__ = ["set_values", "write_atomic"]


def set_values(text: str, values: Mapping[str, object]) -> str:
    """``text`` with each ``{"table.key": value}`` of ``values`` set. Values are already
    validated and typed (``float`` for float keys). Raises ``ParamsError`` when ``text`` is
    not TOML or a table name is used for something that is not a table."""
    try:
        doc = tomlkit.parse(text)
    except TOMLKitError as exc:
        raise ParamsError(f"invalid TOML: {exc}") from exc
    for dotted, value in values.items():
        table_name, _, leaf = dotted.partition(".")
        if table_name not in doc:
            doc[table_name] = tomlkit.table()
        table = doc[table_name]
        if not isinstance(table, Mapping):
            raise ParamsError(f"{table_name} is not a table in the parameters file")
        table[leaf] = value  # an existing key keeps its place and its comment
    return tomlkit.dumps(doc)


def write_atomic(path: Path, text: str) -> None:
    """Replace the file at ``path`` (symlinks followed) with ``text``: written to a
    temporary file in the same directory, flushed, given the old file's mode, renamed over
    it. A reader sees the old file or the new one, never a mix. Raises ``OSError``."""
    target = path.resolve()
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        with contextlib.suppress(FileNotFoundError):  # a new file keeps mkstemp's 0600
            os.chmod(tmp, os.stat(target).st_mode & 0o7777)
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
