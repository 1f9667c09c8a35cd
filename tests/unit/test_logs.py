"""Log lines: JSON keeps the shape of fields, plain lines keep them as key=value."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest

from server.logs import JsonFormatter, PlainFormatter, log_disconnect, peer_text, setup_logging


def record(msg: str = "parameters applied", **fields: object) -> logging.LogRecord:
    rec = logging.LogRecord("tickwire.gateway", logging.INFO, __file__, 1, msg, None, None)
    rec.__dict__.update(fields)
    return rec


def test_json_lines_keep_nested_fields_as_json_not_python_reprs():
    line = JsonFormatter().format(record(changed={"player.max_speed": 220.0},
                                         keys=("a", "b"), path=Path("/tmp/x"),
                                         ratio=float("nan"), peer=peer_text(("::1", 5, 0, 0))))
    entry = json.loads(line)
    assert entry["changed"] == {"player.max_speed": 220.0}
    assert entry["keys"] == ["a", "b"]
    assert entry["path"] == "/tmp/x"
    assert entry["ratio"] == "nan"  # still valid JSON
    assert entry["peer"] == "[::1]:5"
    assert entry["msg"] == "parameters applied" and entry["level"] == "info"


def test_plain_lines_keep_every_field_as_key_value():
    line = PlainFormatter().format(record("player joined", player=7, room="r1",
                                          changed={"a": 1}, reason="no input for 30 s"))
    assert line.endswith('player joined player=7 room=r1 changed={"a":1} '
                         'reason="no input for 30 s"')
    assert " INFO tickwire.gateway: " in line


def test_peer_text_formats_ipv4_ipv6_and_unknown():
    assert peer_text(("127.0.0.1", 44220)) == "127.0.0.1:44220"
    assert peer_text(("2001:db8::1", 80, 0, 0)) == "[2001:db8::1]:80"
    assert peer_text(None) is None


def test_a_disconnect_is_one_line_with_code_reason_and_side(caplog):
    logger = logging.getLogger("tickwire.test")
    with caplog.at_level(logging.INFO, logger="tickwire.test"):
        log_disconnect(logger, player=3, room="r1", code=1008, reason="too many frames",
                       by="server", peer=("10.0.0.1", 9))
    (rec,) = caplog.records
    assert rec.getMessage() == "disconnected by server: 1008 too many frames"
    assert (rec.code, rec.reason, rec.by, rec.peer) == (1008, "too many frames", "server",
                                                        "10.0.0.1:9")


def test_setup_logging_refuses_an_unknown_level():
    with pytest.raises(ValueError, match="debug, info, warning, error"):
        setup_logging("verbose")
