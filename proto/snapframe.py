"""The shared part of a snapshot frame, serialised by hand (the bytes protobuf writes).

A room builds one ``ServerFrame{snapshot: Snapshot{tick, baseline_tick, params_version,
payload, server_time}}`` per distinct baseline every tick. Through protobuf that is two
message constructions and a ``SerializeToString``: cheap back to back (about 2 µs), but
after the tick loop's 33 ms sleep it costs about 54 µs, because protobuf's code has left
the caches by then and a tick pays for every distinct piece of code it runs
(bench/results/issue12-fixed-cost.md). Written with ``struct`` and a few bytes operations
it costs 10-20 µs cold.

The bytes are protobuf's: fields in number order, a proto3 scalar left out when it is the
default (an integer 0; a double whose bit pattern is all zero, so -0.0 and NaN are
written), lengths as varints. ``tests/unit/test_snapframe.py`` checks that against
``SerializeToString`` (hypothesis). Anything outside what this covers (an integer outside
uint32) goes through protobuf, which raises as it always did.
"""

from __future__ import annotations

import struct

from proto import tickwire_pb2 as pb

_UINT32 = 1 << 32
_DOUBLE = struct.Struct("<d")
_SERVER_TIME_TAG = b"\x39"  # field 7, fixed64
_ZERO_DOUBLE = bytes(8)


def _varint(n: int) -> bytes:
    """Protobuf's base-128 varint of a non-negative int."""
    if n < 0x80:
        return bytes((n,))
    out = bytearray()
    while n >= 0x80:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


def _uint_field(tag: int, value: int) -> bytes:
    return bytes((tag,)) + _varint(value) if value else b""


def snapshot_frame(tick: int, baseline_tick: int, params_version: int, payload: bytes,
                   server_time: float) -> bytes:
    """``pb.ServerFrame(snapshot=pb.Snapshot(tick=..., baseline_tick=...,
    params_version=..., payload=..., server_time=...)).SerializeToString()``."""
    if not (0 <= tick < _UINT32 and 0 <= baseline_tick < _UINT32
            and 0 <= params_version < _UINT32):
        return pb.ServerFrame(snapshot=pb.Snapshot(
            tick=tick, baseline_tick=baseline_tick, params_version=params_version,
            payload=payload, server_time=server_time)).SerializeToString()
    time_bytes = _DOUBLE.pack(server_time)
    body = b"".join((
        _uint_field(0x08, tick),            # 1: tick
        _uint_field(0x10, baseline_tick),   # 2: baseline_tick
        _uint_field(0x28, params_version),  # 5: params_version
        b"\x32" + _varint(len(payload)) + payload if payload else b"",  # 6: payload
        _SERVER_TIME_TAG + time_bytes if time_bytes != _ZERO_DOUBLE else b"",  # 7
    ))
    return b"\x12" + _varint(len(body)) + body  # ServerFrame field 2: snapshot
