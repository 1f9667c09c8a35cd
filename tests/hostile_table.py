"""Attacks that are only bytes on the wire, with the outcome each must get.

One table, run twice: against the `ConnectionProtocol` object with no socket
(tests/unit/test_protocol.py) and against a live server on 127.0.0.1
(tests/integration/test_hostile_clients_functional.py, where a bystander must not notice).
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from dataclasses import dataclass, field

from proto import tickwire_pb2 as pb
from server.framing import HARD_FRAME_FACTOR
from server.session import SessionLimits
from tests.wsframes import (
    OP_CONT,
    OP_PING,
    OP_TEXT,
    client_frame,
    encode,
    input_cmd,
    input_frame,
    join_frame,
)

MAX_FRAME = SessionLimits().max_frame_bytes


@dataclass(frozen=True)
class WireAttack:
    name: str
    wire: Callable[[], bytes]  # what the attacker writes (after its Join, if `joined`)
    code: int  # the close code it must get
    label: str  # the tickwire_frames_rejected_total reason that must be counted
    reason: str = ""  # a part of the close reason
    joined: bool = True
    limits: dict = field(default_factory=dict)  # SessionLimits overrides


def _far_oversize() -> bytes:
    """A header announcing a frame far beyond the limit and only the start of it: the
    server must not wait for (nor buffer) the rest."""
    size = MAX_FRAME * HARD_FRAME_FACTOR + 1
    return struct.pack("!BBQ", 0x82, 0x80 | 127, size) + b"\x00" * 4 + b"\x00" * 1024


def _empty_continuations(n: int) -> Callable[[], bytes]:
    """A fragmented message opened, then `n` empty continuation frames, never finished."""
    def wire() -> bytes:
        empty = client_frame(b"", OP_CONT, fin=False, mask=b"\x01\x02\x03\x04")
        return client_frame(input_frame(input_cmd(1))[:3], fin=False) + empty * n
    return wire


WIRE_ATTACKS = [
    WireAttack("garbage_bytes", lambda: client_frame(b"\xff\xfe\xfd\xfc\x00\x01"), 1007,
               "invalid_protobuf", "invalid protobuf"),
    WireAttack("truncated_varint", lambda: client_frame(b"\x12\x80"), 1007,
               "invalid_protobuf", "invalid protobuf"),
    WireAttack("empty_frame", lambda: client_frame(b""), 1008, "empty_frame", "no message"),
    WireAttack("text_frame", lambda: client_frame(b"hello", OP_TEXT), 1003, "text_frame",
               "binary"),
    WireAttack("oversize_frame", lambda: client_frame(join_frame("x" * (MAX_FRAME + 100))),
               1009, "too_big", "frame too big"),
    WireAttack("far_oversize_frame", _far_oversize, 1009, "protocol_error", "far too big"),
    WireAttack("unmasked_frame", lambda: client_frame(input_frame(input_cmd(1)), masked=False),
               1002, "unmasked", "masked"),
    WireAttack("ping_control_flood", lambda: client_frame(b"x", OP_PING) * 3000, 1008,
               "flood", "too many frames"),
    # Issue 11 item 1: empty continuation frames are frames too. With the default limits
    # the message's fragment count closes it; with that limit lifted, the frame budget.
    WireAttack("empty_continuation_flood", _empty_continuations(5000), 1008, "fragments",
               "too many fragments"),
    WireAttack("empty_continuations_charged_to_the_frame_budget", _empty_continuations(5000),
               1008, "flood", "too many frames", limits={"max_fragments": 1_000_000}),
    WireAttack("second_join", lambda: client_frame(join_frame("again")), 1008,
               "already_joined", "after joining"),
    WireAttack("input_before_join", lambda: client_frame(input_frame(input_cmd(1))), 1008,
               "before_join", "before Join", joined=False),
    WireAttack("leave_before_join", lambda: client_frame(encode(leave=pb.Leave())), 1008,
               "before_join", "before Join", joined=False),
    WireAttack("unknown_protocol_version", lambda: client_frame(join_frame(version=99)), 1008,
               "bad_version", "protocol version 99", joined=False),
    WireAttack("oversized_name", lambda: client_frame(join_frame("n" * 200)), 1008, "bad_join",
               "name", joined=False),
    WireAttack("ping_before_join", lambda: client_frame(encode(ping=pb.Ping(client_time=1.0))),
               1008, "before_join", "before Join", joined=False),
]
