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
