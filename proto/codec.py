"""Snapshot codec: quantised entity state, delta encoding against a baseline, and back.

Theory of operation
-------------------
The world is quantised into one fixed 16-byte record per entity slot (``STATE_DTYPE``),
so a snapshot is a NumPy structured array indexed by slot. A slot whose ``kind`` is 0 is
empty. Everything here is pure: arrays and bytes in, arrays and bytes out.

A payload encodes snapshot T either as a keyframe (every live slot written whole) or as a
delta against a baseline B that the client acknowledged. Each slot gets a 2-bit op:

    0 unchanged   T equals B *predicted* forward (position += velocity * elapsed)
    1 update      same entity (kind and generation) as in B; the fields that differ from
                  the prediction are sent as small signed residuals
    2 spawn       a new entity, or a reused slot: the whole record, absolute
    3 remove      the slot was live in B and is empty in T

Positions are predicted from the baseline's own velocity (dead reckoning in integers, so
the decoder computes exactly the same prediction); an NPC or projectile moving in a
straight line therefore costs nothing until it turns or hits something, and a residual of
a few quanta covers rounding. Residuals are stored column by column with the narrowest
signed width (1 or 2 bytes) that holds every value in that column. The body is deflated
once (zlib, level 1) when that makes it smaller. The byte layout is specified in
``proto/README.md``; keep the two in step.

The encoder runs once per (tick, baseline) pair — ``SnapshotHistory`` caches it — never
once per client.
"""

from __future__ import annotations

import functools
import struct
import zlib
from collections import OrderedDict

import numpy as np

POS_SCALE = 16  # default position quanta per world unit: 1/16 unit, 0..4095.94 units
MAX_POS_SCALE = 16  # a room's scale is a power of two up to this (pos_scale_for)
VEL_SCALE = 16  # velocity quanta per unit/s: 1/16 unit/s resolution, +-2047.9 units/s
AIM_STEPS = 256  # aim angle quanta per full turn

STATE_DTYPE = np.dtype(
    [
        ("x", "<u2"),
        ("y", "<u2"),
        ("vx", "<i2"),
        ("vy", "<i2"),
        ("hp", "<u2"),
        ("score", "<u2"),
        ("kind", "u1"),
        ("gen", "u1"),
        ("aim", "u1"),
        ("flags", "u1"),
    ]
)
assert STATE_DTYPE.itemsize == 16

# A record is also eight little-endian u16 words; the codec works on that (n, 8) view,
# which NumPy handles far faster than a structured array. Bit i of an update's field
# mask is word i. Word 6 (kind | gen << 8) never changes in an update: a new kind or
# generation is a new entity and travels as a spawn.
WORDS = ("x", "y", "vx", "vy", "hp", "score", "kind_gen", "aim_flags")
_W_X, _W_Y, _W_VX, _W_VY, W_KIND_GEN = 0, 1, 2, 3, 6

OP_UNCHANGED, OP_UPDATE, OP_SPAWN, OP_REMOVE = 0, 1, 2, 3

FLAG_KEYFRAME = 0x01
FLAG_DEFLATE = 0x02
_KNOWN_FLAGS = FLAG_KEYFRAME | FLAG_DEFLATE

MAX_SLOTS = 65535
# The largest body a valid payload can inflate to: header, ops, every slot spawned.
MAX_BODY_BYTES = 5 + (MAX_SLOTS + 3) // 4 + MAX_SLOTS * STATE_DTYPE.itemsize + 8
_HEADER = np.dtype([("rate", "u1"), ("elapsed", "<u2"), ("span", "<u2")])
_HEADER_STRUCT = struct.Struct("<BHH")  # the same 5 bytes, written without NumPy
DEFLATE_MIN_BYTES = 96  # below this zlib's own framing eats the gain


def pos_scale_for(width: float, height: float) -> int:
    """The position scale of a world: the largest power of two <= 16 with
    max(width, height) * scale <= 65535 (16 for worlds up to 4095 units, 4 at 16000)."""
    scale = MAX_POS_SCALE
    while scale > 1 and max(width, height) * scale > 65535:
        scale //= 2
    return scale


def check_pos_scale(pos_scale: int) -> None:
    if pos_scale not in (1, 2, 4, 8, 16):
        raise ValueError(f"pos_scale {pos_scale} is not a power of two in 1..16")


class CodecError(ValueError):
    """A payload that is not a valid snapshot encoding (or does not fit its baseline)."""


def empty_state(slots: int = 0) -> np.ndarray:
    """A snapshot with `slots` empty slots."""
    return np.zeros(slots, dtype=STATE_DTYPE)


# Clamps of the (2, span, 2) block of positions and velocities, in quanta.
_QUANTA_LO = np.array([[[0.0]], [[-32768.0]]], dtype=np.float32)
_QUANTA_HI = np.array([[[65535.0]], [[32767.0]]], dtype=np.float32)
_AIM_QUANTA = np.float32(AIM_STEPS / (2 * np.pi))


def quantize(
    *,
    pos: np.ndarray,
    vel: np.ndarray,
    hp: np.ndarray,
    score: np.ndarray,
    kind: np.ndarray,
    gen: np.ndarray,
    aim: np.ndarray,
    flags: np.ndarray,
    alive: np.ndarray,
    pos_scale: int = POS_SCALE,
) -> np.ndarray:
    """Quantise world arrays (one row per slot) into a snapshot.

    Units in: positions in world units, velocities in units/s, aim in radians. Values
    outside a field's range are clamped (the spec gives each range). Slots not `alive`
    become all-zero records. The caller owns the returned array.
    """
    # Written straight into the record's u16 words and bytes, and only up to the highest
    # live slot (the rest stays zero): a room quantises its whole capacity every tick,
    # mostly empty, and at arena sizes each NumPy call costs more than its arithmetic.
    # tests/unit/test_codec_reference.py checks it against the field-by-field definition.
    n = len(kind)
    live = np.asarray(alive, dtype=bool)
    out = np.zeros(n, dtype=STATE_DTYPE)
    occupied = live.nonzero()[0]
    span = int(occupied[-1]) + 1 if len(occupied) else 0
    words = out[:span].view("<u2").reshape(span, 8)
    raw = words.view(np.uint8)  # (span, 16): kind, gen, aim, flags are bytes 12..15
    # Positions, then velocities: two contiguous (span, 2) halves of one block. float32
    # first, then scaled in float32 (dtype=): exactly asarray(float32) * scale.
    block = np.empty((2, span, 2), dtype=np.float32)
    np.multiply(pos[:span], np.float32(pos_scale), out=block[0], dtype=np.float32)
    np.multiply(vel[:span], np.float32(VEL_SCALE), out=block[1], dtype=np.float32)
    np.rint(block, out=block)
    np.maximum(block, _QUANTA_LO, out=block)  # np.clip, without its Python wrapper
    np.minimum(block, _QUANTA_HI, out=block)
    # Whole numbers in range: through int32, whose low 16 bits are the u16 / i16 word.
    whole = block.astype(np.int32)
    words[:, 0:2] = whole[0]
    words[:, 2:4] = whole[1]
    words[:, 4] = np.minimum(np.maximum(hp[:span], 0), 65535)
    words[:, 5] = np.minimum(np.maximum(score[:span], 0), 65535)
    raw[:, 12] = kind[:span]
    raw[:, 13] = gen[:span]
    turns = np.multiply(aim[:span], _AIM_QUANTA, dtype=np.float32)
    np.rint(turns, out=turns)
    raw[:, 14] = turns.astype(np.int64)  # the low byte: the turn count mod AIM_STEPS
    raw[:, 15] = flags[:span]
    words *= live[:span, None]  # slots not alive: all-zero records
    return out


def states_equal(a: np.ndarray, b: np.ndarray) -> bool:
    """True when two snapshots hold the same entities (trailing empty slots don't count)."""
    n = max(len(a), len(b))
    return bool(np.array_equal(_padded(a, n), _padded(b, n)))


def live_span(state: np.ndarray) -> int:
    """One past the highest occupied slot (0 for an empty world)."""
    occupied = state["kind"].nonzero()[0]
    return int(occupied[-1]) + 1 if len(occupied) else 0


def _padded(state: np.ndarray, n: int, *, checked: bool = False) -> np.ndarray:
    """`state` cut or zero-extended to `n` slots. `checked`: the caller knows no live slot
    lies at or beyond `n` (it computed `n` from live_span)."""
    if len(state) == n:
        return state
    if len(state) > n:
        if not checked and state["kind"][n:].any():
            raise CodecError(f"state has live slots beyond slot {n}")
        return state[:n]
    out = np.zeros(n, dtype=STATE_DTYPE)
    out[: len(state)] = state
    return out


def _same_length(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Two (n, 8) word arrays, the shorter zero-extended to the longer's length."""
    n = max(len(a), len(b))
    out = []
    for w in (a, b):
        if len(w) < n:
            padded = np.zeros((n, 8), dtype="<u2")
            padded[: len(w)] = w
            w = padded
        out.append(w)
    return out[0], out[1]


def _words(state: np.ndarray) -> np.ndarray:
    """The (n, 8) uint16 view of a snapshot (shares memory)."""
    return np.ascontiguousarray(state).view("<u2").reshape(-1, 8)


def predict_words(base: np.ndarray, elapsed_ticks: int, tick_rate: int,
                   pos_scale: int = POS_SCALE) -> np.ndarray:
    out = base.copy()
    if elapsed_ticks and len(base):
        # Position quanta moved = round_half_up(velocity quanta * ticks * P / (16 * rate)),
        # i.e. floor((2*v*k*P + 16*r) / (32*r)); with P == VEL_SCALE == 16 that is
        # floor((2*v*k + r) / (2*r)) bit for bit (the factors are powers of two). Computed in
        # float64, which is exact here: numerator and denominator are integers far below
        # 2**53, and a quotient that is not an integer is at least 1/(32*rate) away from
        # one, so floor() never lands on the wrong side.
        # Columns x, y, vx, vy made contiguous first: NumPy is much faster on them.
        cols = base[:, _W_X : _W_VY + 1].T.copy()
        moved = cols[2:4].view("<i2") * (2.0 * elapsed_ticks * pos_scale)
        moved += VEL_SCALE * tick_rate
        moved /= 2.0 * VEL_SCALE * tick_rate
        np.floor(moved, out=moved)
        moved += cols[0:2]
        np.maximum(moved, 0.0, out=moved)
        np.minimum(moved, 65535.0, out=moved)
        out[:, _W_X : _W_Y + 1] = moved.T
    return out


def predict(baseline: np.ndarray, elapsed_ticks: int, tick_rate: int,
            pos_scale: int = POS_SCALE) -> np.ndarray:
    """The baseline moved forward `elapsed_ticks` by its own velocities (dead reckoning).

    Positions are clamped to 0..65535 quanta; empty slots stay empty.
    """
    return predict_words(_words(baseline), elapsed_ticks, tick_rate,
                          pos_scale).view(STATE_DTYPE)[:, 0]


def _check_rate(tick_rate: int, elapsed_ticks: int) -> None:
    if not 1 <= tick_rate <= 255:
        raise ValueError(f"tick_rate {tick_rate} is outside 1..255")
    if not 0 <= elapsed_ticks <= 65535:
        raise ValueError(f"elapsed_ticks {elapsed_ticks} is outside 0..65535")


def encode(
    state: np.ndarray,
    baseline: np.ndarray | None,
    *,
    elapsed_ticks: int = 0,
    tick_rate: int = 30,
    deflate: bool = True,
    pos_scale: int = POS_SCALE,
) -> bytes:
    """Encode `state` as a delta against `baseline`, or as a keyframe when it is None.

    `elapsed_ticks` is T - B (ticks between baseline and state), `tick_rate` the ticks per
    second, both needed for the position prediction. Returns the payload bytes.
    """
    _check_rate(tick_rate, elapsed_ticks)
    if baseline is None:
        span = live_span(state)
        return encode_words(_words(_padded(state, span, checked=True)), None,
                            elapsed_ticks=0, tick_rate=tick_rate, deflate=deflate,
                            pos_scale=pos_scale)
    span = max(live_span(state), live_span(baseline))
    return encode_words(_words(_padded(state, span, checked=True)),
                        _words(_padded(baseline, span, checked=True)),
                        elapsed_ticks=elapsed_ticks, tick_rate=tick_rate, deflate=deflate,
                        pos_scale=pos_scale)


def encode_words(cur: np.ndarray, base: np.ndarray | None, *, elapsed_ticks: int,
                 tick_rate: int, deflate: bool = True, pos_scale: int = POS_SCALE) -> bytes:
    """`encode` of (span, 8) word views (``_words``) of equal length, `span` being one
    past the highest live slot of either; `base` None for a keyframe. The caller checked
    the rate and the elapsed ticks (``SnapshotHistory`` keeps each state's words)."""
    span = len(cur)
    keyframe = base is None
    spawned = b""
    only_updates = False  # every op is unchanged (0) or update (1)
    if keyframe:
        ops = (cur[:, W_KIND_GEN] & 0xFF != 0).view(np.uint8) * np.uint8(OP_SPAWN)
        elapsed_ticks = 0
        spawned = cur[ops == OP_SPAWN].T.tobytes()
    else:
        pred = predict_words(base, elapsed_ticks, tick_rate, pos_scale)
        cur_kg, pred_kg = cur[:, W_KIND_GEN], pred[:, W_KIND_GEN]
        cur_live = cur_kg & 0xFF != 0
        # Rows that differ from the prediction at all: compare 16-byte records as 2 int64s.
        cur64, pred64 = cur.view(np.int64), pred.view(np.int64)
        differs = (cur64[:, 0] != pred64[:, 0]) | (cur64[:, 1] != pred64[:, 1])
        if (cur_kg == pred_kg).all():
            # Every slot holds what it held (the usual tick): no spawn, no remove, and a
            # live slot is an update where it differs (what the general rule below gives
            # when the kinds and generations are equal).
            ops = (differs & cur_live).view(np.uint8)
            only_updates = True
        else:
            base_live = pred_kg & 0xFF != 0
            same = (cur_kg == pred_kg) & cur_live  # the same kind and gen, live in both
            # The same entity: update if it differs, else unchanged; otherwise spawn where
            # live now, remove where only the baseline's slot was live.
            ops = np.where(same, differs.view(np.uint8),
                           np.where(cur_live, np.uint8(OP_SPAWN),
                                    base_live.view(np.uint8) * np.uint8(OP_REMOVE)))
            spawned = cur[ops == OP_SPAWN].T.tobytes()
    if span > MAX_SLOTS:
        raise ValueError(f"{span} slots exceed the codec's limit of {MAX_SLOTS}")

    # Spawned records go column by column (all x, then all y, ...): deflate likes that.
    parts = [_HEADER_STRUCT.pack(tick_rate, elapsed_ticks, span),
             pack_ops(ops, at_most_one=only_updates), spawned]

    if not keyframe:
        upd_idx = (ops == OP_UPDATE).nonzero()[0]
        if len(upd_idx):
            # The rows gathered as 16-byte int64 pairs: much faster than (n, 8) words.
            parts.extend(updates_section(cur64.take(upd_idx, axis=0).view("<u2"),
                                         pred64.take(upd_idx, axis=0).view("<u2")))

    body = b"".join(parts)
    flags = FLAG_KEYFRAME if keyframe else 0
    if deflate and len(body) >= DEFLATE_MIN_BYTES:
        packed = zlib.compress(body, 1)
        if len(packed) < len(body):
            return bytes([flags | FLAG_DEFLATE]) + packed
    return bytes([flags]) + body


def updates_section(cur: np.ndarray, pred: np.ndarray) -> list[bytes]:
    """The `updates` bytes (masks, widths, residual columns) for (U, 8) word rows that
    differ from their predictions (shared with proto.chunks)."""
    # uint16 subtraction wraps mod 2**16, so every residual fits an int16.
    residual = (cur - pred).view("<i2")
    present = residual != 0
    # 8 words per row, so packing the flattened mask gives one byte per row, bit i for
    # word i (flattened: NumPy packs a 1-D array much faster than along an axis).
    masks = np.packbits(present.reshape(-1), bitorder="little")
    # The words sent at all, and those with a residual outside int8 (x + 128 outside
    # 0..255, wrapping included), as bit sets: a word is 2 bytes wide if any row needs it.
    sent = int(np.bitwise_or.reduce(masks))
    outside = (residual + 128).view(np.uint16) > 255
    wide = int(np.bitwise_or.reduce(np.packbits(outside.reshape(-1), bitorder="little")))
    widths = _widths(sent, wide)
    # Every sent residual, word by word (the transposed mask walks the words in order).
    values = residual.T[present.T]
    if not wide:  # the usual case: every column one byte wide
        columns = [values.astype("<i1").tobytes()]
    elif wide == sent:
        columns = [values.tobytes()]
    else:
        # Some words 1 byte wide, some 2: every value's low byte (of a little-endian int16,
        # that is its int8 when it fits), and its high byte too where its word is wide. One
        # mask over the values' bytes instead of a loop over the words.
        word = present.T.nonzero()[0]  # each value's word, in the order of `values`
        keep = np.ones((len(values), 2), dtype=np.bool_)
        keep[:, 1] = (_WORD_BITS & wide != 0)[word]
        columns = [values.view(np.uint8).reshape(-1, 2)[keep].tobytes()]
    return [masks.tobytes(), widths, *columns]


_WORD_BITS = 1 << np.arange(len(WORDS))  # word i's bit in a field mask


@functools.cache
def _widths(sent: int, wide: int) -> bytes:
    """The widths bytes of an updates section: 0 for a word not sent, else 1 or 2."""
    return bytes(0 if not sent >> i & 1 else 2 if wide >> i & 1 else 1
                 for i in range(len(WORDS)))


def pack_ops(ops: np.ndarray, *, at_most_one: bool = False) -> bytes:
    """2 bits per slot, slot i in bits 2*(i%4)..2*(i%4)+1 of byte i//4. `at_most_one`:
    the caller knows every op is 0 or 1 (unchanged or update, the usual delta)."""
    if at_most_one:
        # Each op is its own low bit and the high bits are 0: interleave with zeros. No
        # unpackbits, whose code is cold after the tick's sleep (about 20 µs then, 1 µs
        # warm): the encode's packbits below is needed anyway.
        bits = np.zeros(2 * len(ops), dtype=np.uint8)
        bits[0::2] = ops
    else:
        # Each op's two low bits, low first, then packed eight to a byte (zero padded).
        bits = np.unpackbits(np.asarray(ops, dtype=np.uint8)[:, None], axis=1, count=2,
                             bitorder="little")
    return np.packbits(bits, bitorder="little").tobytes()


def unpack_ops(raw: bytes | memoryview, span: int) -> np.ndarray:
    packed = np.frombuffer(raw, dtype=np.uint8)
    quads = np.stack([(packed >> s) & 3 for s in (0, 2, 4, 6)], axis=1).reshape(-1)
    if quads[span:].any():
        raise CodecError("ops beyond the span are not zero")
    return quads[:span]


_unpack_ops = unpack_ops  # the old name, still used by tests/unit/test_web_codec_conformance.py


def is_keyframe(payload: bytes) -> bool:
    """Whether a payload is a keyframe (decodable without a baseline)."""
    if not payload:
        raise CodecError("empty payload")
    return bool(payload[0] & FLAG_KEYFRAME)


def decode(payload: bytes, baseline: np.ndarray | None, *,
           pos_scale: int = POS_SCALE) -> np.ndarray:
    """Decode a payload into a snapshot (length = the payload's span).

    A keyframe ignores `baseline`; a delta needs the snapshot it was encoded against.
    `pos_scale` is the session's (``Welcome.pos_scale``). Any malformed input raises
    CodecError and nothing else.
    """
    try:
        return _decode(payload, baseline, pos_scale)
    except CodecError:
        raise
    except (ValueError, TypeError, IndexError, OverflowError, zlib.error) as exc:
        raise CodecError(f"malformed payload: {exc}") from exc


def flags_and_body(data: bytes, what: str = "payload") -> tuple[int, memoryview]:
    """The flags byte and the body (inflated when flagged) of a payload or a chunk; a
    body may inflate to MAX_BODY_BYTES at most. Raises CodecError (zlib's own errors are
    the caller's to wrap)."""
    if len(data) < 1:
        raise CodecError(f"empty {what}")
    flags = data[0]
    if flags & ~_KNOWN_FLAGS:
        raise CodecError(f"unknown flag bits 0x{flags:02x}")
    body = memoryview(data)[1:]
    if flags & FLAG_DEFLATE:
        inflater = zlib.decompressobj()
        body = memoryview(inflater.decompress(body, MAX_BODY_BYTES))
        if not inflater.eof or inflater.unconsumed_tail or inflater.unused_data:
            raise CodecError("deflated body is truncated, oversized or has trailing bytes")
    return flags, body


def _decode(payload: bytes, baseline: np.ndarray | None, pos_scale: int) -> np.ndarray:
    flags, body = flags_and_body(payload)
    keyframe = bool(flags & FLAG_KEYFRAME)

    reader = Reader(body)
    header = reader.take(1, _HEADER)[0]
    rate, elapsed, span = int(header["rate"]), int(header["elapsed"]), int(header["span"])
    if rate == 0:
        raise CodecError("tick rate 0 in header")
    if keyframe:
        if elapsed != 0:
            raise CodecError("keyframe with a nonzero elapsed tick count")
        out = np.zeros((span, 8), dtype="<u2")
    else:
        if baseline is None:
            raise CodecError("delta payload needs a baseline")
        out = predict_words(_words(_padded(baseline, span)), elapsed, rate, pos_scale)
    # From here `out` holds the prediction, which is what unchanged slots decode to.

    ops = unpack_ops(reader.take_bytes((span + 3) // 4), span)
    base_live = out[:, W_KIND_GEN] & 0xFF != 0
    if keyframe and (ops & 1).any():
        raise CodecError("keyframe with update or remove ops")
    if (~base_live & ((ops == OP_UPDATE) | (ops == OP_REMOVE))).any():
        raise CodecError("update or remove of a slot that is empty in the baseline")
    out[ops == OP_REMOVE] = 0

    apply_spawns_and_updates(reader, out, ops)
    return out.view(STATE_DTYPE)[:, 0]


def apply_spawns_and_updates(reader: Reader, out: np.ndarray, ops: np.ndarray) -> None:
    """The spawn and residual sections of a payload or chunk, then the end: the spawned
    rows' whole records and the updated rows' residuals into `out` ((n, 8) words, one
    row per op). Raises CodecError on an empty spawned record or trailing bytes."""
    spawn_idx = np.flatnonzero(ops == OP_SPAWN)
    spawned = reader.take(8 * len(spawn_idx), np.dtype("<u2")).reshape(8, -1).T
    if (spawned[:, W_KIND_GEN] & 0xFF == 0).any():
        raise CodecError("spawn of an empty record")
    out[spawn_idx] = spawned
    apply_updates(reader, out, np.flatnonzero(ops == OP_UPDATE))
    if reader.remaining:
        raise CodecError(f"{reader.remaining} trailing bytes")


def apply_updates(reader: Reader, out: np.ndarray, upd_idx: np.ndarray) -> None:
    """Read an `updates` section for rows `upd_idx` of `out` (predictions) and add the
    residuals in place (shared with proto.chunks)."""
    if len(upd_idx):
        present = np.unpackbits(
            reader.take(len(upd_idx), np.dtype("u1"))[:, None], axis=1, bitorder="little"
        ).astype(bool)
        if not present.any(1).all():
            raise CodecError("update with an empty field mask")
        if present[:, W_KIND_GEN].any():
            raise CodecError("update changes kind or generation (that is a spawn)")
        widths = reader.take(len(WORDS), np.dtype("u1"))
        for i, name in enumerate(WORDS):
            rows = upd_idx[present[:, i]]
            width = int(widths[i])
            if len(rows) == 0:
                if width != 0:
                    raise CodecError(f"width given for absent word {name}")
                continue
            if width not in (1, 2):
                raise CodecError(f"invalid width {width} for word {name}")
            vals = reader.take(len(rows), np.dtype("<i1" if width == 1 else "<i2"))
            out[rows, i] += vals.astype("<i2").view("<u2")  # wraps mod 2**16, as encoded


class Reader:
    """Sequential reads from a body with exact bounds checks."""

    def __init__(self, body: memoryview) -> None:
        self._body = body
        self._at = 0

    @property
    def remaining(self) -> int:
        return len(self._body) - self._at

    def take_bytes(self, n: int) -> memoryview:
        if n > self.remaining:
            raise CodecError(f"truncated payload: wanted {n} bytes, {self.remaining} left")
        chunk = self._body[self._at : self._at + n]
        self._at += n
        return chunk

    def take(self, count: int, dtype: np.dtype) -> np.ndarray:
        return np.frombuffer(self.take_bytes(count * dtype.itemsize), dtype=dtype)


class SnapshotHistory:
    """A ring of recent snapshots by tick, and the encodings made from them.

    The server pushes one snapshot per tick; `payload_for(tick, acked_tick)` returns the
    delta against the client's acknowledged tick when that is still in the ring, else a
    keyframe. Encodings are cached per (tick, baseline), so clients that acknowledged the
    same tick share one encoding. Memory: `size` snapshots of 16 bytes per slot.
    """

    def __init__(self, size: int, tick_rate: int, pos_scale: int = POS_SCALE) -> None:
        if size < 1:
            raise ValueError("history size must be at least 1")
        check_pos_scale(pos_scale)
        self.size = size
        self.tick_rate = tick_rate
        self.pos_scale = pos_scale
        self._states: OrderedDict[int, np.ndarray] = OrderedDict()
        # Each state's (span, 8) words trimmed to its live span (a view, found once at
        # push): the encodes then never scan or compare the empty tail of a room's capacity.
        self._live: dict[int, np.ndarray] = {}
        self._encoded: dict[tuple[int, int], bytes] = {}
        self.encodes = 0  # how many payloads were actually built (the rest were cache hits)

    def push(self, tick: int, state: np.ndarray) -> None:
        """Record the snapshot of `tick` (ticks must increase). The ring owns `state`."""
        if self._states and tick <= next(reversed(self._states)):
            raise ValueError(f"tick {tick} is not newer than the newest in the ring")
        self._states[tick] = state
        self._live[tick] = _words(state[: live_span(state)])
        while len(self._states) > self.size:
            del self._live[self._states.popitem(last=False)[0]]
        # Only the newest tick is ever encoded, so older encodings are garbage now (and
        # the new tick has none yet: it was not in the ring).
        self._encoded = {}

    def get(self, tick: int) -> np.ndarray | None:
        return self._states.get(tick)

    @property
    def newest_tick(self) -> int | None:
        return next(reversed(self._states)) if self._states else None

    def payload_for(self, tick: int, acked_tick: int) -> tuple[bytes, int]:
        """(payload, baseline tick) for a client that acknowledged `acked_tick`.

        The baseline tick is 0 for a keyframe (no ack, or the ack fell out of the ring).
        """
        state = self._states.get(tick)
        if state is None:
            raise KeyError(f"tick {tick} is not in the history")
        baseline_tick = acked_tick if 0 < acked_tick < tick and acked_tick in self._states else 0
        key = (tick, baseline_tick)
        payload = self._encoded.get(key)
        if payload is None:
            cur = self._live[tick]
            if baseline_tick:
                elapsed = tick - baseline_tick
                _check_rate(self.tick_rate, elapsed)
                base = self._live[baseline_tick]
                if len(base) != len(cur):  # one span for both: the shorter zero-padded
                    cur, base = _same_length(cur, base)
                payload = encode_words(cur, base, elapsed_ticks=elapsed,
                                       tick_rate=self.tick_rate, pos_scale=self.pos_scale)
            else:
                _check_rate(self.tick_rate, 0)
                payload = encode_words(cur, None, elapsed_ticks=0, tick_rate=self.tick_rate,
                                       pos_scale=self.pos_scale)
            self._encoded[key] = payload
            self.encodes += 1
        return payload, baseline_tick
