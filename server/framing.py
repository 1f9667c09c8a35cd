"""WebSocket framing (RFC 6455 §5), sans-I/O: client frames in, server frames out.

Theory of operation
-------------------
aiohttp does the HTTP upgrade; after it the socket's bytes come here. `FrameParser`
holds the unparsed tail of the stream; `feed(data)` appends a read and `next_frame()`
returns one *wire frame* at a time, so the caller can charge every frame (fragments,
continuations and control frames alike) before it costs anything more:

==================================  ========================================================
next_frame() returns                when
==================================  ========================================================
``(OP_BINARY | OP_TEXT, message)``  a data frame that completes a message (unfragmented, or
                                    the FIN continuation: the payload is the whole message)
``(OP_FRAGMENT, b"")``              a data frame that does not complete its message
``(OP_PING | OP_PONG, payload)``    a control frame (allowed between fragments)
``(OP_CLOSE, payload)``             the peer's close frame (code and reason still packed)
``None``                            the rest of the frame has not arrived yet
==================================  ========================================================

`wire_bytes` is the size of the last frame on the wire (header, mask, payload).

Limits are part of the parser, and a frame over one is refused from its header, before
its payload is read or buffered: one fragment (`max_fragment_bytes`), one whole message
(`max_message_bytes`), fragments per message (`max_fragments`: long messages in tiny
fragments are an attack on CPU). Anything a client must not send raises `ProtocolError`
(close code, metric label, reason) and nothing else: client frames must be masked (1002,
§5.1), reserved bits must be clear, control frames are short and unfragmented (1002).

Server frames are built here too (`ws_header`, `ws_frame`, `close_frame`): unmasked and
unfragmented, written straight to the transport by the gateway so a tick never awaits.
"""

from __future__ import annotations

import base64
import hashlib
import struct
from dataclasses import dataclass

from aiohttp.http_websocket import WS_KEY  # the RFC 6455 GUID

from server.errors import (
    CLOSE_POLICY,
    CLOSE_PROTOCOL_ERROR,
    CLOSE_TOO_BIG,
    ProtocolError,
)

__all__ = [
    "HARD_FRAME_FACTOR",
    "OP_BINARY",
    "OP_CLOSE",
    "OP_CONT",
    "OP_FRAGMENT",
    "OP_PING",
    "OP_PONG",
    "OP_TEXT",
    "FrameLimits",
    "FrameParser",
    "accept_key",
    "close_frame",
    "unmask_int",
    "ws_frame",
    "ws_header",
]

OP_CONT, OP_TEXT, OP_BINARY = 0x0, 0x1, 0x2
OP_CLOSE, OP_PING, OP_PONG = 0x8, 0x9, 0xA
OP_FRAGMENT = -1  # returned for a data frame that does not complete its message
_CONTROL = frozenset((OP_CLOSE, OP_PING, OP_PONG))
_DATA = frozenset((OP_CONT, OP_TEXT, OP_BINARY))
# A frame announcing more than this many times the fragment limit is not a big input but
# a lie or an attack: counted under its own label ("protocol_error") as it always was.
HARD_FRAME_FACTOR = 16
_U16 = struct.Struct("!H")
_U64 = struct.Struct("!Q")


@dataclass(frozen=True, slots=True)
class FrameLimits:
    """Sizes in bytes of payload (not counting headers)."""

    max_message_bytes: int = 4096
    max_fragment_bytes: int = 4096
    max_fragments: int = 8  # frames in one message; browsers send small messages whole


def accept_key(key: str) -> str:
    """The Sec-WebSocket-Accept value for a client's Sec-WebSocket-Key (§4.2.2)."""
    return base64.b64encode(hashlib.sha1(key.encode() + WS_KEY).digest()).decode()


def ws_header(opcode: int, length: int) -> bytes:
    """The header of one unmasked, unfragmented server frame (§5.2)."""
    first = 0x80 | opcode
    if length < 126:
        return bytes((first, length))
    if length < 65536:
        return struct.pack("!BBH", first, 126, length)
    return struct.pack("!BBQ", first, 127, length)


def ws_frame(opcode: int, payload: bytes) -> bytes:
    """One whole server frame: header and payload."""
    return ws_header(opcode, len(payload)) + payload


def close_frame(code: int, reason: str) -> bytes:
    """A close frame with a code and a reason cut to fit a control frame (125 bytes)."""
    body = reason.encode()[:123]
    while True:  # never cut a UTF-8 sequence in half
        try:
            body.decode()
            break
        except UnicodeDecodeError:
            body = body[:-1]
    return ws_frame(OP_CLOSE, _U16.pack(code) + body)


def unmask_int(payload: bytes, mask: bytes) -> bytes:
    """The payload XOR the repeated 4-byte mask, as one big-int XOR (no per-byte Python
    loop): the fallback when aiohttp's compiled mask cannot be imported."""
    n = len(payload)
    if not n:
        return b""
    key = (mask * ((n >> 2) + 1))[:n]
    return (int.from_bytes(payload, "little") ^ int.from_bytes(key, "little")).to_bytes(
        n, "little")


try:
    # aiohttp's compiled (Cython) masking, in place over a bytearray: about 0.2 µs for an
    # input frame against 0.5 µs for the big-int XOR. Not a public name of aiohttp, hence
    # the fallback; tests/unit/test_framing.py checks both agree on every payload.
    from aiohttp._websocket.helpers import websocket_mask as _mask_in_place
except ImportError:  # pragma: no cover - another aiohttp layout
    _mask_in_place = None


def _unmask(payload: bytes, mask: bytes) -> bytes:
    if _mask_in_place is None:  # pragma: no cover
        return unmask_int(payload, mask)
    buf = bytearray(payload)
    _mask_in_place(mask if type(mask) is bytes else bytes(mask), buf)  # it takes bytes only
    return bytes(buf)


def _error(reason: str) -> ProtocolError:
    return ProtocolError(CLOSE_PROTOCOL_ERROR, "protocol_error", reason)


class FrameParser:
    """Client-to-server frames of one connection. See the module docstring."""

    __slots__ = ("_buf", "_fragments", "_message_len", "_message_opcode", "_parts", "_pos",
                 "_small_limit", "limits", "wire_bytes")

    def __init__(self, limits: FrameLimits | None = None) -> None:
        self.limits = limits or FrameLimits()
        self._small_limit = min(self.limits.max_fragment_bytes, self.limits.max_message_bytes)
        self._buf = b""
        self._pos = 0  # where the next frame starts in _buf (consumed bytes are not copied)
        self._message_opcode = -1  # opcode of the fragmented message in progress, or -1
        self._parts: list[bytes] = []
        self._message_len = 0
        self._fragments = 0
        self.wire_bytes = 0

    @property
    def buffered(self) -> int:
        """Bytes received and not yet returned as frames."""
        return len(self._buf) - self._pos

    def feed(self, data: bytes) -> None:
        """Append bytes read from the socket (one copy of the unparsed tail, at most)."""
        if self._pos >= len(self._buf):
            self._buf = data
        else:
            self._buf = self._buf[self._pos:] + data
        self._pos = 0

    def whole_binary(self, data: bytes) -> bytes | None:
        """The unmasked payload when the parser holds nothing (no partial frame, no
        fragmented message in progress) and `data` is exactly one small, masked,
        unfragmented binary frame: an input, which browsers send one per read. None
        otherwise; `data` then goes through `feed` and `next_frame`. Changes nothing: the
        caller charges the frame itself (its wire size is ``len(data)``)."""
        if self._pos < len(self._buf) or self._message_opcode >= 0 or len(data) < 6:
            return None
        if data[0] != 0x82:
            return None
        length = data[1] - 0x80  # masked: the mask bit is set, so this is >= 0
        if not 0 <= length < 126 or len(data) != 6 + length or length > self._small_limit:
            return None
        return _unmask(data[6:], data[2:6])

    def next_frame(self) -> tuple[int, bytes] | None:
        """The next wire frame, or None until more bytes arrive. Raises ProtocolError."""
        buf, start = self._buf, self._pos
        have = len(buf)
        if have - start < 2:
            return None
        first, second = buf[start], buf[start + 1]
        if first == 0x82 and 0x80 <= second < 0x80 + 126 and self._message_opcode < 0 \
                and second - 0x80 <= self._small_limit:
            # The common case, an input: one small, masked, unfragmented binary frame.
            # (The same checks as below, in the order they cannot fail.)
            end = start + 6 + second - 0x80
            if have < end:
                return None
            self._pos = end
            self.wire_bytes = end - start
            return OP_BINARY, _unmask(buf[start + 6:end], buf[start + 2:start + 6])
        if first & 0x70:
            raise _error("reserved bits set (no extension was negotiated)")
        opcode = first & 0x0F
        fin = first & 0x80
        if not second & 0x80:
            raise ProtocolError(CLOSE_PROTOCOL_ERROR, "unmasked",
                                "client frames must be masked (RFC 6455 section 5.1)")
        length = second & 0x7F
        pos = start + 2
        if length == 126:
            if have - start < 4:
                return None
            (length,) = _U16.unpack_from(buf, pos)
            pos += 2
        elif length == 127:
            if have - start < 10:
                return None
            (length,) = _U64.unpack_from(buf, pos)
            pos += 8
            if length >> 63:
                raise _error("frame length has its most significant bit set")
        if opcode in _CONTROL:
            if not fin:
                raise _error("fragmented control frame")
            if length > 125:
                raise _error("control frame longer than 125 bytes")
        elif opcode in _DATA:
            self._check_data(opcode, fin, length)
        else:
            raise _error(f"unknown opcode {opcode}")
        end = pos + 4 + length
        if have < end:
            return None
        payload = _unmask(buf[pos + 4:end], buf[pos:pos + 4])
        self._pos = end
        self.wire_bytes = end - start
        if opcode in _CONTROL:
            return opcode, payload
        return self._data(opcode, fin, payload)

    def _check_data(self, opcode: int, fin: int, length: int) -> None:
        limits = self.limits
        if opcode == OP_CONT:
            if self._message_opcode < 0:
                raise _error("continuation frame without a message to continue")
        elif self._message_opcode >= 0:
            raise _error("new message before the fragmented one finished")
        if length > limits.max_fragment_bytes:
            if length > limits.max_fragment_bytes * HARD_FRAME_FACTOR:
                raise ProtocolError(CLOSE_TOO_BIG, "protocol_error",
                                    f"frame far too big ({length} bytes announced)")
            raise ProtocolError(CLOSE_TOO_BIG, "too_big",
                                f"frame too big ({length} bytes, limit "
                                f"{limits.max_fragment_bytes})")
        total = self._message_len + length
        if total > limits.max_message_bytes:
            raise ProtocolError(CLOSE_TOO_BIG, "too_big",
                                f"message too big ({total} bytes, limit "
                                f"{limits.max_message_bytes})")
        if (opcode == OP_CONT or not fin) and self._fragments + 1 > limits.max_fragments:
            raise ProtocolError(CLOSE_POLICY, "fragments",
                                f"too many fragments in one message (limit "
                                f"{limits.max_fragments})")

    def _data(self, opcode: int, fin: int, payload: bytes) -> tuple[int, bytes]:
        if opcode != OP_CONT:
            if fin:
                return opcode, payload  # the common case: one frame, one message
            self._message_opcode = opcode
        self._parts.append(payload)
        self._message_len += len(payload)
        self._fragments += 1
        if not fin:
            return OP_FRAGMENT, b""
        message = b"".join(self._parts)
        opcode = self._message_opcode
        self._parts.clear()
        self._message_opcode, self._message_len, self._fragments = -1, 0, 0
        return opcode, message
