"""Laws of the snapshot codec, checked with hypothesis over random worlds and histories."""

from __future__ import annotations

import contextlib

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from proto import codec
from proto.codec import STATE_DTYPE, CodecError, SnapshotHistory


def random_state(rng: np.random.Generator, slots: int, live_fraction: float) -> np.ndarray:
    state = np.zeros(slots, dtype=STATE_DTYPE)
    words = state.view("<u2").reshape(-1, 8)
    words[:] = rng.integers(0, 65536, size=(slots, 8))
    kinds = rng.integers(1, 4, size=slots)
    live = rng.random(slots) < live_fraction
    state["kind"] = np.where(live, kinds, 0)
    state[~live] = 0
    return state


def evolve(rng: np.random.Generator, base: np.ndarray, ticks: int, rate: int) -> np.ndarray:
    """A plausible next state: most entities move along their velocity, some change,
    some despawn, some slots are reused (generation bumped), some spawn past the end."""
    nxt = codec.predict(base, ticks, rate)
    n = len(nxt)
    jitter = rng.integers(-3, 4, size=(n, 2))
    nxt["x"] = np.clip(nxt["x"].astype(np.int64) + jitter[:, 0], 0, 65535)
    nxt["y"] = np.clip(nxt["y"].astype(np.int64) + jitter[:, 1], 0, 65535)
    hit = rng.random(n) < 0.1
    nxt["hp"][hit] = rng.integers(0, 65536, size=hit.sum())
    turned = rng.random(n) < 0.1
    nxt["vx"][turned] = rng.integers(-32768, 32768, size=turned.sum())
    nxt["flags"][rng.random(n) < 0.05] ^= 1
    gone = rng.random(n) < 0.05
    nxt[gone] = 0
    reused = (rng.random(n) < 0.05) & (base["kind"] != 0)
    nxt["gen"][reused] += 1
    nxt["kind"][reused] = rng.integers(1, 4, size=reused.sum())
    grow = rng.integers(0, 8)
    extra = random_state(rng, int(grow), 0.8)
    out = np.concatenate([nxt, extra])
    out[out["kind"] == 0] = 0
    return out


@given(
    seed=st.integers(0, 2**32 - 1),
    slots=st.integers(0, 300),
    live=st.floats(0, 1),
    ticks=st.integers(1, 40),
    rate=st.integers(10, 128),
)
@settings(max_examples=300, deadline=None)
def test_decode_of_delta_equals_state_for_random_histories(seed, slots, live, ticks, rate):
    rng = np.random.default_rng(seed)
    baseline = random_state(rng, slots, live)
    state = evolve(rng, baseline, ticks, rate)
    payload = codec.encode(state, baseline, elapsed_ticks=ticks, tick_rate=rate)
    assert not codec.is_keyframe(payload)
    assert codec.states_equal(codec.decode(payload, baseline), state)


@given(seed=st.integers(0, 2**32 - 1), slots=st.integers(0, 300), live=st.floats(0, 1))
@settings(max_examples=200, deadline=None)
def test_keyframe_decoded_into_an_empty_mirror_equals_state(seed, slots, live):
    state = random_state(np.random.default_rng(seed), slots, live)
    payload = codec.encode(state, None)
    assert codec.is_keyframe(payload)
    assert codec.states_equal(codec.decode(payload, None), state)
    # A keyframe ignores whatever the client had before.
    junk = random_state(np.random.default_rng(seed + 1), slots + 5, 1.0)
    assert codec.states_equal(codec.decode(payload, junk), state)


@given(data=st.binary(max_size=600))
@settings(max_examples=1000, deadline=None)
def test_any_bytes_decode_or_raise_codec_error(data):
    baseline = random_state(np.random.default_rng(7), 40, 0.7)
    for base in (baseline, None):
        try:
            out = codec.decode(data, base)
        except CodecError:
            continue
        assert out.dtype == STATE_DTYPE


@given(seed=st.integers(0, 2**32 - 1), cut=st.integers(0, 10_000), flip=st.integers(0, 255))
@settings(max_examples=300, deadline=None)
def test_corrupted_valid_payloads_decode_or_raise_codec_error(seed, cut, flip):
    rng = np.random.default_rng(seed)
    baseline = random_state(rng, 64, 0.6)
    state = evolve(rng, baseline, 2, 30)
    payload = bytearray(codec.encode(state, baseline, elapsed_ticks=2, tick_rate=30))
    at = cut % len(payload)
    mutated = [bytes(payload[:at]), bytes(payload[:at] + bytes([flip]) + payload[at + 1 :])]
    for data in mutated:
        # Either outcome is fine; any other exception type fails the test.
        with contextlib.suppress(CodecError):
            codec.decode(data, baseline)


def test_straight_line_motion_costs_almost_nothing():
    rng = np.random.default_rng(3)
    n = 1000
    state = random_state(rng, n, 1.0)
    state["x"] = rng.integers(10_000, 50_000, n)
    state["y"] = rng.integers(10_000, 50_000, n)
    state["vx"] = rng.integers(-800, 800, n)
    state["vy"] = rng.integers(-800, 800, n)
    later = codec.predict(state, 1, 30)
    payload = codec.encode(later, state, elapsed_ticks=1, tick_rate=30)
    # header + 2-bit ops for 1000 unchanged slots, deflated
    assert len(payload) < 40
    assert codec.states_equal(codec.decode(payload, state), later)


def test_unchanged_world_and_empty_world():
    state = random_state(np.random.default_rng(1), 50, 0.5)
    state["vx"] = state["vy"] = 0
    payload = codec.encode(state, state, elapsed_ticks=1, tick_rate=30)
    assert codec.states_equal(codec.decode(payload, state), state)
    empty = codec.empty_state(0)
    assert codec.states_equal(codec.decode(codec.encode(empty, None), None), empty)
    removed = codec.encode(empty, state, elapsed_ticks=1, tick_rate=30)
    assert codec.states_equal(codec.decode(removed, state), empty)


def test_delta_without_baseline_is_a_codec_error():
    state = random_state(np.random.default_rng(2), 10, 1.0)
    payload = codec.encode(state, state, elapsed_ticks=1, tick_rate=30)
    with pytest.raises(CodecError, match="baseline"):
        codec.decode(payload, None)


def test_quantize_rounds_clamps_and_clears_dead_slots():
    n = 4
    state = codec.quantize(
        pos=np.array([[1.0, 2.0], [-5, 9999], [0.03, 0.04], [7, 7]], np.float32),
        vel=np.array([[1.5, -1.5], [5000, -5000], [0, 0], [1, 1]], np.float32),
        hp=np.array([100, 70000, -3, 1]),
        score=np.array([1, 2, 3, 4]),
        kind=np.array([1, 2, 3, 2], np.uint8),
        gen=np.array([0, 1, 2, 3], np.uint8),
        aim=np.array([0.0, np.pi, -np.pi / 2, 0], np.float32),
        flags=np.array([0, 1, 0, 0], np.uint8),
        alive=np.array([True, True, True, False]),
    )
    assert len(state) == n
    assert state[0]["x"] == 16 and state[0]["y"] == 32
    assert state[0]["vx"] == 24 and state[0]["vy"] == -24
    assert state[1]["x"] == 0 and state[1]["y"] == 65535  # clamped to the field range
    assert state[1]["vx"] == 32767 and state[1]["vy"] == -32768
    assert state[1]["hp"] == 65535 and state[2]["hp"] == 0
    assert state[1]["aim"] == 128 and state[2]["aim"] == 192
    assert state[2]["x"] == 0 and state[2]["y"] == 1  # 0.48 and 0.64 quanta
    assert state[3].tobytes() == bytes(16)


def test_history_shares_one_encoding_per_baseline_and_falls_back_to_keyframes():
    rng = np.random.default_rng(5)
    history = SnapshotHistory(size=8, tick_rate=30)
    states = {}
    state = random_state(rng, 30, 0.8)
    for tick in range(1, 21):
        state = evolve(rng, state, 1, 30)
        states[tick] = state
        history.push(tick, state)
    before = history.encodes
    a, base_a = history.payload_for(20, 19)
    b, base_b = history.payload_for(20, 19)
    assert a is b and base_a == base_b == 19
    assert history.encodes == before + 1
    assert codec.states_equal(codec.decode(a, states[19]), states[20])
    # An ack older than the ring, or none at all, gets a keyframe.
    for acked in (0, 5, 25):
        payload, base = history.payload_for(20, acked)
        assert base == 0 and codec.is_keyframe(payload)
        assert codec.states_equal(codec.decode(payload, None), states[20])
    payload, base = history.payload_for(20, 13)
    assert base == 13
    assert codec.states_equal(codec.decode(payload, states[13]), states[20])
    with pytest.raises(ValueError):
        history.push(20, state)


@settings(max_examples=200, deadline=None)
@given(ops=st.lists(st.integers(0, 3), max_size=70), binary=st.lists(st.booleans(), max_size=70))
def test_pack_ops_fast_path_agrees_with_the_general_path(ops: list[int],
                                                         binary: list[bool]) -> None:
    """`at_most_one` (the usual delta: every op unchanged or update) packs what the
    general path packs, and the general path is the wire rule (slot i in bits
    2*(i%4)..2*(i%4)+1 of byte i//4), whatever the length (padding included)."""
    general = np.array(ops, dtype=np.uint8)
    expected = bytearray((len(ops) + 3) // 4)
    for i, op in enumerate(ops):
        expected[i // 4] |= op << (2 * (i % 4))
    assert codec.pack_ops(general) == bytes(expected)
    flags = np.array(binary, dtype=np.bool_).view(np.uint8)  # as encode_words makes them
    assert codec.pack_ops(flags, at_most_one=True) == codec.pack_ops(flags.copy())
    assert codec.unpack_ops(codec.pack_ops(flags, at_most_one=True), len(binary)).tolist() == [
        int(b) for b in binary]
