"""WebSocket close codes the server uses, and the error that carries one.

A `ProtocolError` is how every sans-I/O part (frame parser, connection protocol, session)
says "close this connection": with which code, a reason for people and a label for the
metrics. Nothing else is raised for bad client input.
"""

from __future__ import annotations

__all__ = [
    "CLOSE_GOING_AWAY",
    "CLOSE_INTERNAL_ERROR",
    "CLOSE_INVALID_PAYLOAD",
    "CLOSE_NORMAL",
    "CLOSE_POLICY",
    "CLOSE_PROTOCOL_ERROR",
    "CLOSE_TOO_BIG",
    "CLOSE_UNSUPPORTED",
    "ProtocolError",
]

CLOSE_NORMAL = 1000
CLOSE_GOING_AWAY = 1001
CLOSE_PROTOCOL_ERROR = 1002
CLOSE_UNSUPPORTED = 1003
CLOSE_INVALID_PAYLOAD = 1007
CLOSE_POLICY = 1008
CLOSE_TOO_BIG = 1009
CLOSE_INTERNAL_ERROR = 1011


class ProtocolError(Exception):
    """Input the server refuses; the connection is closed with `code` and `reason`.

    `label` is the `reason` label of tickwire_frames_rejected_total (a small closed set).
    `retry_after_s`: the client may try again, but not before this many seconds (a ban).
    """

    def __init__(self, code: int, label: str, reason: str,
                 retry_after_s: int | None = None) -> None:
        super().__init__(reason)
        self.code = code
        self.label = label
        self.reason = reason
        self.retry_after_s = retry_after_s
