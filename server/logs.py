"""Structured logs: one JSON object per line with the `extra=` fields of each call, or
(`--plain-logs`) one human line with those fields as key=value.

Field values keep their JSON shape: a dict stays an object, a list or tuple an array,
numbers stay numbers; anything else (an exception, a Path) becomes its `str`. A peer
address is logged as "ip:port" (`peer_text`).
"""

from __future__ import annotations

import json
import logging
import math
import sys
import time
from typing import Any

__all__ = ["LEVELS", "JsonFormatter", "PlainFormatter", "log_disconnect", "peer_text",
           "setup_logging"]

#: The choices of `--log-level`.
LEVELS = ("debug", "info", "warning", "error")

_STANDARD = set(logging.LogRecord("", 0, "", 0, "", None, None).__dict__) | {"message",
                                                                           "asctime"}


def _jsonable(value: Any, depth: int = 0) -> Any:
    """`value` as JSON-compatible data (bounded depth; non-finite floats as strings)."""
    if isinstance(value, (bool, int, str)) or value is None:
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else str(value)
    if depth < 8:
        if isinstance(value, dict):
            return {str(k): _jsonable(v, depth + 1) for k, v in value.items()}
        if isinstance(value, (list, tuple, set, frozenset)):
            return [_jsonable(v, depth + 1) for v in value]
    return str(value)


def fields(record: logging.LogRecord) -> dict[str, Any]:
    """The `extra=` fields of a record, as JSON-compatible values."""
    return {key: _jsonable(value) for key, value in record.__dict__.items()
            if key not in _STANDARD and not key.startswith("_")}


def _timestamp(record: logging.LogRecord) -> str:
    return (time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z")


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "ts": _timestamp(record),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        entry.update(fields(record))
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        return json.dumps(entry, separators=(",", ":"))


class PlainFormatter(logging.Formatter):
    """`<time> <LEVEL> <logger>: <message> key=value ...`; a value with spaces, quotes or
    structure is written as JSON so the line stays parseable."""

    def format(self, record: logging.LogRecord) -> str:
        parts = [f"{_timestamp(record)} {record.levelname} {record.name}: "
                 f"{record.getMessage()}"]
        for key, value in fields(record).items():
            if isinstance(value, str) and value and not any(c in value for c in ' "=\n'):
                text = value
            else:
                text = json.dumps(value, separators=(",", ":"))
            parts.append(f"{key}={text}")
        line = " ".join(parts)
        if record.exc_info:
            line += "\n" + self.formatException(record.exc_info)
        return line


def peer_text(peer: object) -> str | None:
    """A socket's peername as "ip:port" ("[ip]:port" for IPv6); None when unknown."""
    if isinstance(peer, (tuple, list)) and len(peer) >= 2:
        host = str(peer[0])
        return f"[{host}]:{peer[1]}" if ":" in host else f"{host}:{peer[1]}"
    return None if peer is None else str(peer)


def log_disconnect(logger: logging.Logger, *, player: int, room: str | None,
                   code: int | None, reason: str | None, by: str,
                   peer: object = None) -> None:
    """One line per closed game connection: who closed it (`by`: "server" or "client"),
    the close code and reason."""
    logger.info("disconnected by %s: %s%s", by,
                code if code is not None else "no close code",
                f" {reason}" if reason else "",
                extra={"player": player, "room": room, "code": code, "reason": reason or "",
                       "by": by, "peer": peer_text(peer)})


def setup_logging(level: str = "info", json_lines: bool = True) -> None:
    """Log to stderr at `level` (one of `LEVELS`; ValueError otherwise)."""
    if level.lower() not in LEVELS:
        raise ValueError(f"log level must be one of {', '.join(LEVELS)}, not {level!r}")
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if json_lines else PlainFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    # aiohttp's access log is one line per HTTP request; keep it, but not at debug noise.
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)
