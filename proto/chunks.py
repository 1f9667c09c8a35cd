"""Chunked snapshots (interest management): the chunk and personal-part codecs, and the
client's view.

Theory of operation
-------------------
With interest management a snapshot is a set of **chunks**, one per grid cell sent, plus a
**personal part** (proto/README.md, *Chunked snapshots*, is the byte-level spec; keep the
two in step). A chunk lists the live entities of one cell at tick T, each as a 2-bit op
against the entity's record at the chunk's baseline tick b, with the spawn and residual
sections of the payload codec (``proto.codec``), so one encoding serves every client
sent that (cell, b). A client applies an op 0/1 member only when its own snapshot b
carried that slot; otherwise it skips it and the server sends that entity whole in the
personal part. The personal part also says which slots left the client's interest or no
longer exist, and whether the client must reset.

Records travel as (n, 8) uint16 word rows (``codec.WORDS``) next to an ascending array of
slot numbers; everything here is pure NumPy and bytes. ``ChunkMirror`` is the client side:
its view (slot -> record, as_of tick) and the records each recent snapshot carried.
"""

from __future__ import annotations

import zlib
from collections import OrderedDict
from dataclasses import dataclass

import numpy as np

from proto.codec import (
    DEFLATE_MIN_BYTES,
    FLAG_DEFLATE,
    FLAG_KEYFRAME,
    MAX_BODY_BYTES,
    OP_SPAWN,
    OP_UNCHANGED,
    OP_UPDATE,
    POS_SCALE,
    STATE_DTYPE,
    VEL_SCALE,
    W_KIND_GEN,
    CodecError,
    Reader,
    apply_updates,
    pack_ops,
    predict_words,
    unpack_ops,
    updates_section,
)

_CHUNK_HEADER = np.dtype([("cell", "<u4"), ("elapsed", "<u2"), ("count", "<u2")])
_KNOWN_FLAGS = FLAG_KEYFRAME | FLAG_DEFLATE
PERSONAL_RESET = 0x01
_U16 = np.dtype("<u2")
_EMPTY_SLOTS = np.zeros(0, dtype=np.int64)
_EMPTY_WORDS = np.zeros((0, 8), dtype="<u2")


def _check_slots(slots: np.ndarray, what: str) -> None:
    if len(slots) > 1 and not (np.diff(slots.astype(np.int64)) > 0).all():
        raise CodecError(f"{what} slots are not strictly ascending")


# -- chunks ---------------------------------------------------------------------------------

def encode_chunk(cell: int, slots: np.ndarray, cur: np.ndarray, base: np.ndarray | None,
                 *, elapsed_ticks: int, tick_rate: int, pos_scale: int = POS_SCALE,
                 deflate: bool = True) -> bytes:
    """A chunk: the entities `slots` (ascending, 1..65535 of them) of cell `cell`, whose
    words now are `cur` (n, 8), encoded against `base` (n, 8): the same slots' words at the
    baseline tick, `elapsed_ticks` earlier (all zero for a slot empty then). `base` None
    (and elapsed 0) makes a keyframe chunk."""
    n = len(slots)
    if not 1 <= n <= 65535:
        raise ValueError(f"a chunk holds 1..65535 entities, not {n}")
    keyframe = base is None
    if keyframe:
        ops = np.full(n, OP_SPAWN, dtype=np.uint8)
        elapsed_ticks = 0
        pred = None
    else:
        if not 1 <= elapsed_ticks <= 65535:
            raise ValueError(f"a delta chunk's elapsed ticks must be 1..65535, not {elapsed_ticks}")
        pred = predict_words(base, elapsed_ticks, tick_rate, pos_scale)
        kg = cur[:, W_KIND_GEN]
        same = (pred[:, W_KIND_GEN] == kg) & (kg & 0xFF != 0)
        differs = (cur != pred).any(axis=1)
        ops = np.where(same, np.where(differs, OP_UPDATE, OP_UNCHANGED),
                       OP_SPAWN).astype(np.uint8)
    header = np.zeros(1, dtype=_CHUNK_HEADER)
    header[0] = (cell, elapsed_ticks, n)
    spawn = ops == OP_SPAWN
    parts = [header.tobytes(), np.asarray(slots, dtype=_U16).tobytes(), pack_ops(ops),
             np.ascontiguousarray(cur[spawn].T).tobytes()]
    if pred is not None:
        upd = ops == OP_UPDATE
        if upd.any():
            parts.extend(updates_section(cur[upd], pred[upd]))
    body = b"".join(parts)
    flags = FLAG_KEYFRAME if keyframe else 0
    if deflate and len(body) >= DEFLATE_MIN_BYTES:
        packed = zlib.compress(body, 1)
        if len(packed) < len(body):
            return bytes([flags | FLAG_DEFLATE]) + packed
    return bytes([flags]) + body


@dataclass(frozen=True, slots=True)
class Carried:
    """The records one snapshot carried: ascending slots and their (n, 8) words."""

    slots: np.ndarray
    words: np.ndarray

    def lookup(self, slots: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(found mask, index into self) for `slots`."""
        if len(self.slots) == 0:
            return np.zeros(len(slots), dtype=bool), np.zeros(len(slots), dtype=np.int64)
        idx = np.searchsorted(self.slots, slots)
        idx = np.minimum(idx, len(self.slots) - 1)
        return self.slots[idx] == slots, idx


EMPTY_CARRIED = Carried(_EMPTY_SLOTS, _EMPTY_WORDS)


@dataclass(frozen=True, slots=True)
class DecodedChunk:
    cell: int
    baseline_tick: int  # 0 for a keyframe chunk
    slots: np.ndarray  # the members the client could decode (ascending)
    words: np.ndarray  # their records
    skipped: int  # members whose slot the baseline snapshot did not carry


def _inflate(chunk: bytes) -> tuple[int, memoryview]:
    if len(chunk) < 1:
        raise CodecError("empty chunk")
    flags = chunk[0]
    if flags & ~_KNOWN_FLAGS:
        raise CodecError(f"unknown flag bits 0x{flags:02x}")
    body = memoryview(chunk)[1:]
    if flags & FLAG_DEFLATE:
        inflater = zlib.decompressobj()
        body = memoryview(inflater.decompress(body, MAX_BODY_BYTES))
        if not inflater.eof or inflater.unconsumed_tail or inflater.unused_data:
            raise CodecError("deflated body is truncated, oversized or has trailing bytes")
    return flags, body


def decode_chunk(chunk: bytes, *, tick: int, tick_rate: int, kept: dict[int, Carried],
                 pos_scale: int = POS_SCALE) -> DecodedChunk:
    """Decode one chunk of snapshot `tick`. `kept` maps tick -> what the client's snapshot
    of that tick carried. Raises CodecError (and nothing else) on malformed input or a
    baseline the client does not keep."""
    try:
        return _decode_chunk(chunk, tick, tick_rate, kept, pos_scale)
    except CodecError:
        raise
    except (ValueError, TypeError, IndexError, OverflowError, zlib.error) as exc:
        raise CodecError(f"malformed chunk: {exc}") from exc


def _decode_chunk(chunk: bytes, tick: int, tick_rate: int, kept: dict[int, Carried],
                  pos_scale: int) -> DecodedChunk:
    flags, body = _inflate(chunk)
    keyframe = bool(flags & FLAG_KEYFRAME)
    reader = Reader(body)
    header = reader.take(1, _CHUNK_HEADER)[0]
    cell, elapsed, n = int(header["cell"]), int(header["elapsed"]), int(header["count"])
    if n == 0:
        raise CodecError("chunk with no members")
    if keyframe != (elapsed == 0):
        raise CodecError("a chunk's elapsed is 0 exactly when it is a keyframe")
    slots = reader.take(n, _U16).astype(np.int64)
    _check_slots(slots, "chunk")
    ops = unpack_ops(reader.take_bytes((n + 3) // 4), n)
    if (ops == 3).any():
        raise CodecError("op 3 in a chunk")
    if keyframe and (ops != OP_SPAWN).any():
        raise CodecError("keyframe chunk with a non-spawn op")
    baseline_tick = 0
    found = np.ones(n, dtype=bool)
    out = np.zeros((n, 8), dtype="<u2")
    if not keyframe:
        baseline_tick = tick - elapsed
        carried = kept.get(baseline_tick)
        if carried is None:
            raise CodecError(f"chunk baseline {baseline_tick} is not kept")
        delta = ops != OP_SPAWN
        hit, idx = carried.lookup(slots)
        found = hit | ~delta
        usable = delta & hit
        out[usable] = carried.words[idx[usable]]
        out = predict_words(out, elapsed, tick_rate, pos_scale)
    spawn_idx = np.flatnonzero(ops == OP_SPAWN)
    spawned = reader.take(8 * len(spawn_idx), _U16).reshape(8, -1).T
    if (spawned[:, W_KIND_GEN] & 0xFF == 0).any():
        raise CodecError("spawn of an empty record")
    out[spawn_idx] = spawned
    apply_updates(reader, out, np.flatnonzero(ops == OP_UPDATE))
    if reader.remaining:
        raise CodecError(f"{reader.remaining} trailing bytes")
    return DecodedChunk(cell, baseline_tick, slots[found], out[found],
                        int(n - np.count_nonzero(found)))


# -- personal part ----------------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class Personal:
    reset: bool
    left: np.ndarray
    gone: np.ndarray
    spawn_slots: np.ndarray
    spawn_words: np.ndarray


def encode_personal(*, reset: bool, left: np.ndarray, gone: np.ndarray,
                    spawn_slots: np.ndarray, spawn_words: np.ndarray) -> bytes:
    """The personal part (all slot arrays ascending; spawn_words (n, 8))."""
    parts = [bytes([PERSONAL_RESET if reset else 0])]
    for arr in (left, gone, spawn_slots):
        parts.append(len(arr).to_bytes(2, "little"))
        parts.append(np.asarray(arr, dtype=_U16).tobytes())
    parts.append(np.ascontiguousarray(np.asarray(spawn_words, dtype="<u2").T).tobytes())
    return b"".join(parts)


def decode_personal(data: bytes) -> Personal:
    """Parse a personal part; raises CodecError (and nothing else) when malformed."""
    try:
        return _decode_personal(data)
    except CodecError:
        raise
    except (ValueError, TypeError, IndexError) as exc:
        raise CodecError(f"malformed personal part: {exc}") from exc


def _decode_personal(data: bytes) -> Personal:
    if len(data) < 1:
        raise CodecError("empty personal part")
    flags = data[0]
    if flags & ~PERSONAL_RESET:
        raise CodecError(f"unknown personal flag bits 0x{flags:02x}")
    reader = Reader(memoryview(data)[1:])
    lists = []
    for what in ("left", "gone", "spawn"):
        count = int(reader.take(1, _U16)[0])
        slots = reader.take(count, _U16).astype(np.int64)
        _check_slots(slots, what)
        lists.append(slots)
    left, gone, spawn_slots = lists
    if len(np.intersect1d(left, gone)):
        raise CodecError("a slot is both left and gone")
    words = reader.take(8 * len(spawn_slots), _U16).reshape(8, -1).T.copy()
    if (words[:, W_KIND_GEN] & 0xFF == 0).any():
        raise CodecError("personal spawn of an empty record")
    if reader.remaining:
        raise CodecError(f"{reader.remaining} trailing bytes in the personal part")
    return Personal(bool(flags & PERSONAL_RESET), left, gone, spawn_slots, words)


# -- the client's view ------------------------------------------------------------------------

class ChunkMirror:
    """A client's view of a chunked-snapshot session (proto/README.md, *Applying a
    snapshot*). `view_words[s]` is slot s's record when `in_view[s]`, from tick `as_of[s]`.
    `keep` snapshots' carried records are kept for baselines (at least the server's ring)."""

    def __init__(self, tick_rate: int, pos_scale: int = POS_SCALE, keep: int = 256) -> None:
        self.tick_rate = tick_rate
        self.pos_scale = pos_scale
        self.keep = keep
        self.kept: OrderedDict[int, Carried] = OrderedDict()
        self.view_words = np.zeros((0, 8), dtype="<u2")
        self.in_view = np.zeros(0, dtype=bool)
        self.as_of = np.zeros(0, dtype=np.int64)
        self.tick = 0
        self.ack_tick = 0
        self.waiting_reset = True  # nothing applied yet: the first snapshot resets
        self.skipped = 0  # chunk members skipped (their slot came in the personal part)
        self.left: np.ndarray = _EMPTY_SLOTS  # the last snapshot's removals, for fades
        self.gone: np.ndarray = _EMPTY_SLOTS

    def _grow(self, top: int) -> None:
        n = len(self.in_view)
        if top < n:
            return
        size = max(top + 1, 2 * n, 64)
        words = np.zeros((size, 8), dtype="<u2")
        words[:n] = self.view_words
        self.view_words = words
        self.in_view = np.concatenate([self.in_view, np.zeros(size - n, dtype=bool)])
        self.as_of = np.concatenate([self.as_of, np.zeros(size - n, dtype=np.int64)])

    def clear(self) -> None:
        self.kept.clear()
        self.in_view[:] = False

    def apply(self, tick: int, chunks: list[bytes], personal: bytes) -> bool:
        """Apply snapshot `tick`. Returns False when it was ignored (waiting for a reset).
        Raises CodecError; the mirror has then cleared itself and acks 0."""
        try:
            return self._apply(tick, chunks, personal)
        except CodecError:
            self.clear()
            self.ack_tick = 0
            self.waiting_reset = True
            raise

    def _apply(self, tick: int, chunks: list[bytes], personal: bytes) -> bool:
        part = decode_personal(personal)
        if self.waiting_reset and not part.reset:
            return False
        if part.reset:
            self.clear()
            self.waiting_reset = False
        slots_parts, word_parts = [], []
        for chunk in chunks:
            d = decode_chunk(chunk, tick=tick, tick_rate=self.tick_rate, kept=self.kept,
                             pos_scale=self.pos_scale)
            self.skipped += d.skipped
            slots_parts.append(d.slots)
            word_parts.append(d.words)
        slots = np.concatenate(slots_parts) if slots_parts else _EMPTY_SLOTS
        words = np.concatenate(word_parts) if word_parts else _EMPTY_WORDS
        if len(np.unique(slots)) != len(slots):
            raise CodecError("a slot is in two chunks of one snapshot")
        if len(part.spawn_slots):
            keep = ~np.isin(slots, part.spawn_slots)
            slots = np.concatenate([slots[keep], part.spawn_slots])
            words = np.concatenate([words[keep], part.spawn_words])
        order = np.argsort(slots, kind="stable")
        slots, words = slots[order], words[order]
        # Removals first (a slot removed and carried again in one snapshot is carried).
        removed = np.concatenate([part.left, part.gone])
        removed = removed[removed < len(self.in_view)]
        self.in_view[removed] = False
        if len(slots):
            self._grow(int(slots[-1]))
            self.view_words[slots] = words
            self.in_view[slots] = True
            self.as_of[slots] = tick
        self.left, self.gone = part.left, part.gone
        self.kept[tick] = Carried(slots, words)
        while len(self.kept) > self.keep:
            self.kept.popitem(last=False)
        self.tick = tick
        self.ack_tick = tick
        return True

    def view(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(slots, words, as_of) of everything in the view, ascending slots."""
        slots = np.flatnonzero(self.in_view)
        return slots, self.view_words[slots], self.as_of[slots]

    def state(self) -> np.ndarray:
        """The view as a dense snapshot array (records as of their own tick; empty slots
        where the view holds nothing)."""
        out = np.zeros(len(self.in_view), dtype=STATE_DTYPE)
        words = out.view("<u2").reshape(-1, 8)
        words[self.in_view] = self.view_words[self.in_view]
        return out


# -- many chunks at once (the server's per-tick encoder) ----------------------------------------

@dataclass(frozen=True, slots=True)
class EncodedBatch:
    """`encode_chunks`' result: chunk k is ``chunks[k]``; its members are
    ``slots[starts[k]:starts[k + 1]]`` and ``delta`` says which are op 0/1 (the client
    applies those only when its baseline snapshot carried the slot)."""

    chunks: list[bytes]
    starts: np.ndarray
    delta: np.ndarray


def encode_chunks(cells: np.ndarray, elapsed: np.ndarray, counts: np.ndarray,
                  slots: np.ndarray, cur: np.ndarray, base: np.ndarray, *, tick_rate: int,
                  pos_scale: int = POS_SCALE) -> EncodedBatch:
    """Encode K chunks in one vectorised pass; the bytes equal what ``encode_chunk`` would
    give each of them with ``deflate=False``.

    Chunk k is cell ``cells[k]`` with ``counts[k]`` (>= 1) members, the next ones of
    `slots` (ascending within a chunk), whose words are `cur` (M, 8); `base` (M, 8) holds
    each member's words at that chunk's baseline, ``elapsed[k]`` ticks earlier (0 = a
    keyframe chunk: `base` rows are ignored). Cost: a fixed number of NumPy calls for the
    whole batch plus one bytes slice per chunk, instead of dozens of calls per chunk."""
    k_n = len(cells)
    counts = np.asarray(counts, dtype=np.int64)
    m_n = int(counts.sum())
    if k_n == 0:
        return EncodedBatch([], np.zeros(1, dtype=np.int64), np.zeros(0, dtype=bool))
    starts = np.zeros(k_n + 1, dtype=np.int64)
    np.cumsum(counts, out=starts[1:])
    chunk_of = np.repeat(np.arange(k_n), counts)
    idx = np.arange(m_n) - starts[chunk_of]
    e = np.asarray(elapsed, dtype=np.int64)[chunk_of]

    # Prediction, as predict_words but with a per-member elapsed count.
    pred = base.copy()
    moved = base[:, 2:4].view("<i2") * (2.0 * pos_scale * e)[:, None]
    moved += VEL_SCALE * tick_rate
    moved /= 2.0 * VEL_SCALE * tick_rate
    np.floor(moved, out=moved)
    moved += base[:, 0:2]
    np.clip(moved, 0.0, 65535.0, out=moved)
    pred[:, 0:2] = moved
    kg = cur[:, W_KIND_GEN]
    delta = (e > 0) & (pred[:, W_KIND_GEN] == kg) & (kg & 0xFF != 0)
    differs = (cur != pred).any(axis=1)
    ops = np.where(delta, np.where(differs, OP_UPDATE, OP_UNCHANGED), OP_SPAWN).astype(np.uint8)
    spawn, upd = ops == OP_SPAWN, ops == OP_UPDATE
    n_spawn = np.bincount(chunk_of[spawn], minlength=k_n)
    n_upd = np.bincount(chunk_of[upd], minlength=k_n)

    # Residual columns: per (chunk, word) the width that holds every value (0 = absent).
    res = (cur[upd] - pred[upd]).view("<i2")
    present = res != 0
    uchunk = chunk_of[upd]
    width = np.zeros((k_n, 8), dtype=np.int64)
    per_word = np.zeros((k_n, 8), dtype=np.int64)
    with_upd = np.flatnonzero(n_upd)
    if len(with_upd):
        first = (np.cumsum(n_upd) - n_upd)[with_upd]
        has = np.add.reduceat(present.astype(np.int64), first, axis=0)
        wide = (present & ((res < -128) | (res > 127))).astype(np.int64)
        any_wide = np.add.reduceat(wide, first, axis=0) > 0
        per_word[with_upd] = has
        width[with_upd] = np.where(has > 0, np.where(any_wide, 2, 1), 0)
    res_bytes = (per_word * width).sum(axis=1)

    ops_len = (counts + 3) // 4
    upd_len = np.where(n_upd > 0, n_upd + 8 + res_bytes, 0)
    size = 9 + 2 * counts + ops_len + 16 * n_spawn + upd_len
    off = np.cumsum(size) - size
    buf = np.zeros(int(size.sum()), dtype=np.uint8)
    buf[off] = np.where(np.asarray(elapsed) == 0, FLAG_KEYFRAME, 0)
    header = np.zeros(k_n, dtype=_CHUNK_HEADER)
    header["cell"], header["elapsed"], header["count"] = cells, elapsed, counts
    buf[(off + 1)[:, None] + np.arange(8)] = header.view(np.uint8).reshape(k_n, 8)

    def put16(pos: np.ndarray, values: np.ndarray) -> None:
        v = values.astype("<u2")
        buf[pos] = v & 0xFF
        buf[pos + 1] = v >> 8

    put16(off[chunk_of] + 9 + 2 * idx, slots)
    off_ops = off + 9 + 2 * counts
    byte_pos = off_ops[chunk_of] + idx // 4
    bits = (ops << (2 * (idx % 4))).astype(np.uint8)
    firsts = np.flatnonzero(np.r_[True, byte_pos[1:] != byte_pos[:-1]])
    buf[byte_pos[firsts]] = np.add.reduceat(bits, firsts)  # disjoint bits: sum == or

    off_spawn = off_ops + ops_len
    if spawn.any():
        sp_chunk = chunk_of[spawn]
        rank = np.arange(len(sp_chunk)) - (np.cumsum(n_spawn) - n_spawn)[sp_chunk]
        pos = (off_spawn[sp_chunk] + 2 * rank)[:, None] \
            + 2 * n_spawn[sp_chunk][:, None] * np.arange(8)
        put16(pos, cur[spawn])

    if len(with_upd):
        off_mask = off_spawn + 16 * n_spawn
        rank = np.arange(len(uchunk)) - (np.cumsum(n_upd) - n_upd)[uchunk]
        buf[off_mask[uchunk] + rank] = np.packbits(present, axis=1, bitorder="little")[:, 0]
        off_w = off_mask + n_upd
        buf[off_w[with_upd][:, None] + np.arange(8)] = width[with_upd]
        # Residuals: chunk by chunk, word by word, member by member.
        e_u, e_w = np.nonzero(present)
        e_chunk = uchunk[e_u]
        order = np.lexsort((e_u, e_w, e_chunk))
        e_u, e_w, e_chunk = e_u[order], e_w[order], e_chunk[order]
        e_width = width[e_chunk, e_w]
        before = np.cumsum(e_width) - e_width
        first_entry = np.searchsorted(e_chunk, e_chunk, side="left")
        pos = (off_w + 8)[e_chunk] + before - before[first_entry]
        v = res[e_u, e_w].view("<u2")
        buf[pos] = v & 0xFF
        two = e_width == 2
        buf[pos[two] + 1] = v[two] >> 8

    raw = buf.tobytes()
    ends = (off + size).tolist()
    chunks = [raw[a:b] for a, b in zip(off.tolist(), ends, strict=True)]
    return EncodedBatch(chunks, starts, delta)
