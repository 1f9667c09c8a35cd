"""The codec's vectorised encode side against slow references written from the spec.

``quantize`` and ``encode`` are written for few NumPy calls (a room runs them every tick),
which makes them hard to read against ``proto/README.md``. Here each has a plain
reference: ``quantize`` field by field as the spec states the ranges, ``encode`` slot by
slot and byte by byte as "Snapshot payload" lays the body out, with the encoder's own
choices (the narrowest width per word; zlib level 1 when the body is at least
``DEFLATE_MIN_BYTES`` and it helps). The fast versions must give the same bytes.
"""

from __future__ import annotations

import struct
import warnings
import zlib

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from proto import codec
from proto.codec import STATE_DTYPE, SnapshotHistory
from tests.unit.test_codec import evolve, random_state

# -- quantize ---------------------------------------------------------------------------------


def reference_quantize(*, pos, vel, hp, score, kind, gen, aim, flags, alive, pos_scale=16):
    """Field by field: round to the nearest quantum, clamp to the field's range, then
    empty the slots that are not alive."""
    out = np.zeros(len(kind), dtype=STATE_DTYPE)
    p = np.rint(np.asarray(pos, dtype=np.float32) * np.float32(pos_scale))
    v = np.rint(np.asarray(vel, dtype=np.float32) * np.float32(codec.VEL_SCALE))
    out["x"] = np.clip(p[:, 0], 0, 65535)
    out["y"] = np.clip(p[:, 1], 0, 65535)
    out["vx"] = np.clip(v[:, 0], -32768, 32767)
    out["vy"] = np.clip(v[:, 1], -32768, 32767)
    out["hp"] = np.clip(hp, 0, 65535)
    out["score"] = np.clip(score, 0, 65535)
    out["kind"] = kind
    out["gen"] = gen
    turns = np.asarray(aim, dtype=np.float32) * np.float32(codec.AIM_STEPS / (2 * np.pi))
    out["aim"] = np.rint(turns).astype(np.int64) % codec.AIM_STEPS
    out["flags"] = flags
    out[~np.asarray(alive, dtype=bool)] = 0
    return out


SPECIAL = [np.nan, np.inf, -np.inf, 0.0, -0.5, 0.5, 1.5, 4095.97, 65535.5, -40000.0, 1e30]


def world_arrays(rng: np.random.Generator, n: int, special: bool, pos_dtype) -> dict:
    def floats(shape, scale):
        if special:
            return rng.choice(np.array(SPECIAL, dtype=np.float32), shape)
        return (rng.normal(size=shape) * scale).astype(np.float32)

    return dict(pos=floats((n, 2), 3000.0).astype(pos_dtype), vel=floats((n, 2), 3000.0),
                hp=rng.integers(-100_000, 100_000, n).astype(np.int32),
                score=rng.integers(-100_000, 100_000, n),
                kind=rng.integers(0, 4, n).astype(np.uint8),
                gen=rng.integers(0, 256, n).astype(np.uint8), aim=floats(n, 100.0),
                flags=rng.integers(0, 4, n).astype(np.uint8), alive=rng.random(n) < 0.6)


@settings(max_examples=200, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), n=st.integers(0, 300), special=st.booleans(),
       scale=st.sampled_from([1, 2, 4, 8, 16]), f64=st.booleans())
def test_quantize_equals_the_field_by_field_reference(seed, n, special, scale, f64):
    arrays = world_arrays(np.random.default_rng(seed), n, special,
                          np.float64 if f64 else np.float32)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # NaN/inf casts, in both
        fast = codec.quantize(**arrays, pos_scale=scale)
        slow = reference_quantize(**arrays, pos_scale=scale)
    assert fast.tobytes() == slow.tobytes()


# -- encode -----------------------------------------------------------------------------------


def reference_encode(state: np.ndarray, baseline: np.ndarray | None, elapsed: int,
                     rate: int, pos_scale: int = 16) -> bytes:
    """proto/README.md "Snapshot payload", one slot at a time."""
    def words(s: np.ndarray, n: int) -> list[list[int]]:
        rows = s.view("<u2").reshape(-1, 8).tolist()[:n]
        return rows + [[0] * 8 for _ in range(n - len(rows))]

    def live(s: np.ndarray) -> int:
        kinds = s["kind"].tolist()
        return max((i + 1 for i, k in enumerate(kinds) if k), default=0)

    keyframe = baseline is None
    span = live(state) if keyframe else max(live(state), live(baseline))
    cur = words(state, span)
    if keyframe:
        elapsed = 0
        pred = [[0] * 8 for _ in range(span)]
    else:  # the spec's prediction, in Python integers (floor division is exact)
        pred = []
        for row in words(baseline, span):
            row = list(row)
            for w, vw in ((0, 2), (1, 3)):
                v = row[vw] - 65536 if row[vw] >= 32768 else row[vw]
                moved = (2 * v * elapsed * pos_scale + 16 * rate) // (32 * rate)
                row[w] = min(max(row[w] + moved, 0), 65535)
            pred.append(row)
    ops = []
    for c, p in zip(cur, pred, strict=True):
        c_live, p_live = c[6] & 0xFF != 0, p[6] & 0xFF != 0
        if c_live and p_live and c[6] == p[6]:
            ops.append(codec.OP_UPDATE if c != p else codec.OP_UNCHANGED)
        elif c_live:
            ops.append(codec.OP_SPAWN)
        else:
            ops.append(codec.OP_REMOVE if p_live else codec.OP_UNCHANGED)
    body = bytearray(struct.pack("<BHH", rate, elapsed, span))
    packed = bytearray((span + 3) // 4)
    for i, op in enumerate(ops):
        packed[i // 4] |= op << (2 * (i % 4))
    body += packed
    spawned = [cur[i] for i, op in enumerate(ops) if op == codec.OP_SPAWN]
    for w in range(8):
        body += b"".join(struct.pack("<H", row[w]) for row in spawned)
    updated = [i for i, op in enumerate(ops) if op == codec.OP_UPDATE]
    if updated:
        residuals = [[(cur[i][w] - pred[i][w] + 32768) % 65536 - 32768 for w in range(8)]
                     for i in updated]
        body += bytes(sum(1 << w for w in range(8) if r[w]) for r in residuals)
        columns = [[r[w] for r in residuals if r[w]] for w in range(8)]
        widths = [0 if not col else 1 if all(-128 <= v <= 127 for v in col) else 2
                  for col in columns]
        body += bytes(widths)
        for col, width in zip(columns, widths, strict=True):
            body += b"".join(struct.pack("<b" if width == 1 else "<h", v) for v in col)
    flags = codec.FLAG_KEYFRAME if keyframe else 0
    if len(body) >= codec.DEFLATE_MIN_BYTES:
        deflated = zlib.compress(bytes(body), 1)
        if len(deflated) < len(body):
            return bytes([flags | codec.FLAG_DEFLATE]) + deflated
    return bytes([flags]) + bytes(body)


def churned(rng: np.random.Generator, base: np.ndarray, ticks: int, rate: int,
            big: bool) -> np.ndarray:
    """`evolve`, plus residuals that need two bytes (when `big`), removals, respawns in
    reused slots and a changed length: every op and both widths in one payload."""
    state = evolve(rng, base, ticks, rate)
    n = len(state)
    if n and big:
        hit = rng.random(n) < 0.2
        state["hp"][hit] = rng.integers(0, 65536, int(hit.sum()))
    m = min(n, len(base))
    if m:  # residuals at the edges of one byte: 127 and -128 fit, 128 and -129 do not
        edge = np.flatnonzero(rng.random(m) < 0.2)
        step = rng.choice(np.array([127, 128, -128, -129]), len(edge))
        state["score"][edge] = (base["score"][edge].astype(np.int64) + step) % 65536
    if n:
        gone = rng.random(n) < 0.05
        state[gone] = 0
        reused = (rng.random(n) < 0.05) & (state["kind"] != 0)
        state["gen"][reused] += 1
    if rng.random() < 0.3:
        state = np.concatenate([state, random_state(rng, int(rng.integers(1, 20)), 0.5)])
    return state


@settings(max_examples=150, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), slots=st.integers(0, 160),
       live=st.floats(0.0, 1.0), ticks=st.integers(0, 12),
       rate=st.sampled_from([10, 30, 60]), big=st.booleans())
def test_encode_equals_the_slot_by_slot_reference(seed, slots, live, ticks, rate, big):
    rng = np.random.default_rng(seed)
    base = random_state(rng, slots, live)
    state = churned(rng, base, ticks, rate, big)
    assert codec.encode(state, None, tick_rate=rate) == reference_encode(state, None, 0, rate)
    assert (codec.encode(state, base, elapsed_ticks=ticks, tick_rate=rate)
            == reference_encode(state, base, ticks, rate))


def test_the_history_encodes_the_same_bytes_as_encode_on_whole_states():
    """The history encodes views trimmed to each state's live span: the bytes must be
    those of the untrimmed states, with a room's long empty tail."""
    rng = np.random.default_rng(11)
    history = SnapshotHistory(size=16, tick_rate=30)
    states = {}
    state = random_state(rng, 40, 0.7)
    for tick in range(1, 13):
        state = churned(rng, state, 1, 30, big=tick % 3 == 0)
        whole = np.zeros(2048, dtype=STATE_DTYPE)
        whole[: len(state)] = state
        states[tick] = whole
        history.push(tick, whole)
        for baseline in (0, tick - 1, tick - 5):
            payload, used = history.payload_for(tick, baseline)
            expected = codec.encode(whole, states[used] if used else None,
                                    elapsed_ticks=tick - used if used else 0, tick_rate=30)
            assert payload == expected
        assert history.get(tick) is whole
