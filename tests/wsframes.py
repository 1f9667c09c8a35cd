"""Client-side WebSocket frames and ClientFrames, built by hand for tests and benches:
masked as a browser sends them, or malformed as an attacker might."""

from __future__ import annotations

import os
import struct

from proto import PROTOCOL_VERSION
from proto import tickwire_pb2 as pb

OP_CONT, OP_TEXT, OP_BINARY, OP_CLOSE, OP_PING, OP_PONG = 0x0, 0x1, 0x2, 0x8, 0x9, 0xA


def client_frame(payload: bytes, opcode: int = OP_BINARY, *, fin: bool = True,
                 masked: bool = True, rsv: int = 0, length: int | None = None,
                 mask: bytes | None = None) -> bytes:
    """One client frame; `length` announces a different length than the payload's."""
    n = len(payload) if length is None else length
    first = (0x80 if fin else 0) | rsv | opcode
    mask_bit = 0x80 if masked else 0
    if n < 126:
        header = struct.pack("!BB", first, mask_bit | n)
    elif n < 65536:
        header = struct.pack("!BBH", first, mask_bit | 126, n)
    else:
        header = struct.pack("!BBQ", first, mask_bit | 127, n)
    if not masked:
        return header + payload
    mask = mask if mask is not None else os.urandom(4)
    return header + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(payload))


def encode(**kind: object) -> bytes:
    return pb.ClientFrame(**kind).SerializeToString()


def join_frame(name: str = "hostile", version: int = PROTOCOL_VERSION) -> bytes:
    return encode(join=pb.Join(protocol_version=version, name=name))


def input_cmd(seq: int, **values: float) -> pb.InputCmd:
    return pb.InputCmd(seq=seq, client_tick=seq, **values)


def input_frame(*cmds: pb.InputCmd, ack_tick: int = 0) -> bytes:
    return encode(input=pb.Input(ack_tick=ack_tick, cmds=list(cmds)))
