"""proto.snapframe writes the shared snapshot frame byte for byte as protobuf does."""

from __future__ import annotations

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from proto import tickwire_pb2 as pb
from proto.snapframe import snapshot_frame

UINT32 = st.integers(min_value=0, max_value=2**32 - 1)
# Around every varint width edge (1..5 bytes), and the zero that protobuf leaves out.
EDGES = st.sampled_from([0, 1, 127, 128, 16383, 16384, 2**21 - 1, 2**21, 2**28 - 1,
                         2**28, 2**32 - 1])
TIMES = st.one_of(st.floats(allow_nan=True, allow_infinity=True),
                  st.sampled_from([0.0, -0.0, math.nan, -math.nan, math.inf, 5e-324]))


def by_protobuf(tick: int, baseline: int, version: int, payload: bytes, t: float) -> bytes:
    return pb.ServerFrame(snapshot=pb.Snapshot(
        tick=tick, baseline_tick=baseline, params_version=version, payload=payload,
        server_time=t)).SerializeToString()


@settings(max_examples=400, deadline=None)
@given(tick=st.one_of(UINT32, EDGES), baseline=st.one_of(UINT32, EDGES),
       version=st.one_of(UINT32, EDGES),
       payload=st.one_of(st.binary(max_size=300), st.integers(0, 20000).map(bytes)),
       t=TIMES)
def test_the_bytes_are_protobufs(tick: int, baseline: int, version: int, payload: bytes,
                                 t: float) -> None:
    mine = snapshot_frame(tick, baseline, version, payload, t)
    assert mine == by_protobuf(tick, baseline, version, payload, t)
    parsed = pb.ServerFrame.FromString(mine)  # and it parses back to the same values
    assert parsed.snapshot.tick == tick and parsed.snapshot.payload == payload


def test_a_keyframe_at_time_zero_leaves_the_defaults_out() -> None:
    frame = snapshot_frame(7, 0, 1, b"", 0.0)
    assert frame == b"\x12\x04\x08\x07\x28\x01" == by_protobuf(7, 0, 1, b"", 0.0)


@pytest.mark.parametrize("bad", [-1, 2**32])
def test_out_of_range_values_raise_as_protobuf_does(bad: int) -> None:
    with pytest.raises(ValueError):
        snapshot_frame(bad, 0, 1, b"x", 1.0)
    with pytest.raises(ValueError):
        snapshot_frame(1, 0, bad, b"x", 1.0)
