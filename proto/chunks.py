"""Chunked snapshots (interest management): the chunk and personal-part codecs, and the
client's view.

Theory of operation
-------------------
With interest management a snapshot is a set of **chunks**, one per grid cell sent, plus a
**personal part** (proto/README.md, *Chunked snapshots*, is the byte-level spec; keep the
two in step). A delta chunk describes one cell at tick T against the same cell's chunk at
its baseline tick b, whose member list the client kept: 2 bits per previous member
(unchanged, updated, a new entity in that slot, or gone from the cell), then the members
added since, named by slot, with the spawn and residual sections of the payload codec
(``proto.codec``). So an NPC that stays in its cell and moves as predicted costs two bits,
and one encoding serves every client sent that (cell, b). A client applies an added op 0/1
member only when its own snapshot b carried that slot; otherwise it skips it and the
server sends that entity whole in the personal part. The personal part also says which
slots left the client's interest or no longer exist, and whether the client must reset.

Records travel as (n, 8) uint16 word rows (``codec.WORDS``) next to an ascending array of
slot numbers; everything here is pure NumPy and bytes. ``ChunkMirror`` is the client side:
its view (slot -> record, as_of tick), and of each recent snapshot the records it carried
and its chunks' member lists.
"""

from __future__ import annotations

import zlib
from collections import OrderedDict
from dataclasses import dataclass

import numpy as np

from proto.codec import (
    FLAG_KEYFRAME,
    OP_SPAWN,
    OP_UNCHANGED,
    OP_UPDATE,
    POS_SCALE,
    STATE_DTYPE,
    VEL_SCALE,
    W_KIND_GEN,
    CodecError,
    Reader,
    apply_spawns_and_updates,
    flags_and_body,
    predict_words,
    unpack_ops,
)

_CHUNK_HEADER = np.dtype([("cell", "<u4"), ("elapsed", "<u2"), ("count", "<u2")])
PERSONAL_RESET = 0x01
_U16 = np.dtype("<u2")
_EMPTY_SLOTS = np.zeros(0, dtype=np.int64)
_EMPTY_WORDS = np.zeros((0, 8), dtype="<u2")


def _check_slots(slots: np.ndarray, what: str) -> None:
    if len(slots) > 1 and not (np.diff(slots.astype(np.int64)) > 0).all():
        raise CodecError(f"{what} slots are not strictly ascending")


# -- chunks ---------------------------------------------------------------------------------

_OP_LEFT = 3  # a previous member that is no longer in the cell


def chunk_ops(prev: np.ndarray, members: np.ndarray, now: np.ndarray,
              base: np.ndarray | None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(rows, in_cell, same) of a chunk: its rows are the previous members then the added
    ones (`members` not in `prev`); `in_cell` says a row is a member now; `same` that the
    row's slot holds the entity it held at the baseline (`now`/`base`: (capacity, 8) words
    of the world now and at the baseline)."""
    added = members[~np.isin(members, prev)] if len(prev) else members
    rows = np.concatenate([prev, added]).astype(np.int64)
    in_cell = np.concatenate([np.isin(prev, members), np.ones(len(added), dtype=bool)])
    if base is None:
        same = np.zeros(len(rows), dtype=bool)
    else:
        kg_now, kg_base = now[rows, W_KIND_GEN], base[rows, W_KIND_GEN]
        same = (kg_now == kg_base) & (kg_now & 0xFF != 0)
    return rows, in_cell, same


def encode_chunk(cell: int, prev: np.ndarray, members: np.ndarray, now: np.ndarray,
                 base: np.ndarray | None, *, elapsed_ticks: int, tick_rate: int,
                 pos_scale: int = POS_SCALE) -> bytes:
    """One chunk (the reference for ``encode_chunks``): cell `cell` whose live entities now
    are `members` (ascending), against its members `prev` (ascending) at the baseline,
    `elapsed_ticks` earlier. `now` and `base` are (capacity, 8) words of the whole world
    now and at the baseline; `base` None (with `prev` empty, elapsed 0) is a keyframe."""
    if base is None and len(prev):
        raise ValueError("a keyframe chunk has no previous members")
    rows, in_cell, same = chunk_ops(prev, members, now, base)
    n_prev = len(prev)
    batch = encode_chunks(np.array([cell]), np.array([elapsed_ticks if base is not None else 0]),
                          np.array([n_prev]), np.array([len(rows) - n_prev]), rows,
                          in_cell, same, now[rows],
                          base[rows] if base is not None else np.zeros_like(now[rows]),
                          tick_rate=tick_rate, pos_scale=pos_scale)
    return batch.chunks[0]


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


@dataclass(frozen=True, slots=True)
class Kept:
    """What a client keeps of one applied snapshot: the records it carried, and each
    decoded chunk's members (cell -> ascending slots), the baseline of the next chunks."""

    carried: Carried
    cells: dict[int, np.ndarray]


EMPTY_CARRIED = Carried(_EMPTY_SLOTS, _EMPTY_WORDS)


@dataclass(frozen=True, slots=True)
class DecodedChunk:
    cell: int
    baseline_tick: int  # 0 for a keyframe chunk
    members: np.ndarray  # the cell's live entities now (ascending), skipped ones included
    slots: np.ndarray  # the members the client could decode (ascending)
    words: np.ndarray  # their records
    skipped: int  # added members whose slot the baseline snapshot did not carry




def decode_chunk(chunk: bytes, *, tick: int, tick_rate: int, kept: dict[int, Kept],
                 pos_scale: int = POS_SCALE) -> DecodedChunk:
    """Decode one chunk of snapshot `tick`. `kept` maps tick -> what the client kept of
    its snapshot of that tick. Raises CodecError (and nothing else) on malformed input or
    a baseline the client does not keep."""
    try:
        return _decode_chunk(chunk, tick, tick_rate, kept, pos_scale)
    except CodecError:
        raise
    except (ValueError, TypeError, IndexError, OverflowError, zlib.error) as exc:
        raise CodecError(f"malformed chunk: {exc}") from exc


def _decode_chunk(chunk: bytes, tick: int, tick_rate: int, kept: dict[int, Kept],
                  pos_scale: int) -> DecodedChunk:
    flags, body = flags_and_body(chunk, "chunk")
    keyframe = bool(flags & FLAG_KEYFRAME)
    reader = Reader(body)
    header = reader.take(1, _CHUNK_HEADER)[0]
    cell, elapsed, n_prev = int(header["cell"]), int(header["elapsed"]), int(header["count"])
    if keyframe != (elapsed == 0):
        raise CodecError("a chunk's elapsed is 0 exactly when it is a keyframe")
    if keyframe and n_prev:
        raise CodecError("keyframe chunk with previous members")
    prev_ops = unpack_ops(reader.take_bytes((n_prev + 3) // 4), n_prev)
    n_add = int(reader.take(1, _U16)[0])
    added = reader.take(n_add, _U16).astype(np.int64)
    _check_slots(added, "added")
    add_ops = unpack_ops(reader.take_bytes((n_add + 3) // 4), n_add)
    if (add_ops == _OP_LEFT).any():
        raise CodecError("op 3 for an added member")
    if keyframe and (add_ops != OP_SPAWN).any():
        raise CodecError("keyframe chunk with a non-spawn op")
    baseline_tick = 0
    prev = _EMPTY_SLOTS
    if not keyframe:
        baseline_tick = tick - elapsed
        kept_b = kept.get(baseline_tick)
        if kept_b is None:
            raise CodecError(f"chunk baseline {baseline_tick} is not kept")
        prev = kept_b.cells.get(cell)
        if prev is None:
            raise CodecError(f"cell {cell} was not in snapshot {baseline_tick}")
        if len(prev) != n_prev:
            raise CodecError(f"cell {cell} had {len(prev)} members at {baseline_tick}, "
                             f"not {n_prev}")
        if len(np.intersect1d(prev, added)):
            raise CodecError("an added member was already a member")
    rows = np.concatenate([prev, added])
    ops = np.concatenate([prev_ops, add_ops])
    n = len(rows)
    out = np.zeros((n, 8), dtype="<u2")
    usable = np.zeros(n, dtype=bool)
    delta = (ops == OP_UNCHANGED) | (ops == OP_UPDATE)
    if not keyframe and delta.any():
        hit, idx = kept[baseline_tick].carried.lookup(rows)
        if (delta[:n_prev] & ~hit[:n_prev]).any():
            raise CodecError("a previous member's record is not in its baseline snapshot")
        usable = delta & hit
        out[usable] = kept[baseline_tick].carried.words[idx[usable]]
        out = predict_words(out, elapsed, tick_rate, pos_scale)
    apply_spawns_and_updates(reader, out, ops)
    stays = ops[:n_prev] != _OP_LEFT
    member_mask = np.concatenate([stays, np.ones(n_add, dtype=bool)])
    yielded = member_mask & (usable | (ops == OP_SPAWN))
    order = np.argsort(rows[member_mask], kind="stable")
    members = rows[member_mask][order]
    y_order = np.argsort(rows[yielded], kind="stable")
    skipped = int(np.count_nonzero(member_mask & ~yielded))
    return DecodedChunk(cell, baseline_tick, members, rows[yielded][y_order],
                        out[yielded][y_order], skipped)


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


def encode_personals(reset: np.ndarray, left: tuple[np.ndarray, np.ndarray],
                     gone: tuple[np.ndarray, np.ndarray], spawn: tuple[np.ndarray, np.ndarray],
                     spawn_words: np.ndarray) -> list[bytes]:
    """The personal parts of M clients in one vectorised pass, each the bytes
    ``encode_personal`` gives. `reset` (M,) bool; `left`, `gone` and `spawn` are
    (owner, slot) pairs of flat arrays, owner in [0, M) and the slots ascending within
    each owner; `spawn_words` (n, 8) the records of the spawn entries."""
    m = len(reset)
    lists = []
    for owner, slots in (left, gone, spawn):
        order = np.argsort(owner, kind="stable")
        owner = owner[order]
        n = np.bincount(owner, minlength=m)
        rank = np.arange(len(owner)) - (np.cumsum(n) - n)[owner]
        lists.append((owner, slots[order], n, rank, order))
    n_spawn = lists[2][2]
    size = 7 + 2 * (lists[0][2] + lists[1][2] + n_spawn) + 16 * n_spawn
    off = np.cumsum(size) - size
    buf = np.zeros(int(size.sum()), dtype=np.uint8)
    buf[off] = np.where(reset, PERSONAL_RESET, 0)

    def put16(pos: np.ndarray, values: np.ndarray) -> None:
        v = np.asarray(values).astype("<u2")
        buf[pos] = v & 0xFF
        buf[pos + 1] = v >> 8

    at = off + 1
    for owner, slots, n, rank, _ in lists:
        put16(at, n)
        put16(at[owner] + 2 + 2 * rank, slots)
        at = at + 2 + 2 * n
    owner, _, n, rank, order = lists[2]
    if len(owner):
        pos = (at[owner] + 2 * rank)[:, None] + 2 * n[owner][:, None] * np.arange(8)
        put16(pos, gather_rows(spawn_words, order))
    raw = buf.tobytes()
    return [raw[a:b] for a, b in zip(off.tolist(), (off + size).tolist(), strict=True)]


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
        self.kept: OrderedDict[int, Kept] = OrderedDict()
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
        cells: dict[int, np.ndarray] = {}
        skipped = 0  # counted once the snapshot is applied (a rejected one adds nothing)
        for chunk in chunks:
            d = decode_chunk(chunk, tick=tick, tick_rate=self.tick_rate, kept=self.kept,
                             pos_scale=self.pos_scale)
            if d.cell in cells:
                raise CodecError(f"cell {d.cell} twice in one snapshot")
            cells[d.cell] = d.members
            skipped += d.skipped
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
        self.skipped += skipped
        self.kept[tick] = Kept(Carried(slots, words), cells)
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
    """`encode_chunks`' result: chunk k is ``chunks[k]``; its rows (previous members, then
    added ones) are ``starts[k]:starts[k + 1]`` of the caller's row arrays. ``stays``
    marks the rows that are members now; ``skippable`` the added rows sent as op 0/1
    (the client applies those only when its baseline snapshot carried the slot)."""

    chunks: list[bytes]
    starts: np.ndarray
    stays: np.ndarray
    skippable: np.ndarray
    sizes: np.ndarray  # len(chunks[k]) (the framed length when `framed`)


def _pack_2bit(buf: np.ndarray, at: np.ndarray, rank: np.ndarray, ops: np.ndarray) -> None:
    """Write 2-bit `ops` at byte offsets `at` + rank // 4 (the bytes are zero before)."""
    if len(ops) == 0:
        return
    # Four ops share a byte in disjoint bits: or-ing them in place is their sum.
    np.bitwise_or.at(buf, at + (rank >> 2), (ops << ((rank & 3) << 1)).astype(np.uint8))


def encode_chunks(cells: np.ndarray, elapsed: np.ndarray, n_prev: np.ndarray,
                  n_add: np.ndarray, rows: np.ndarray, in_cell: np.ndarray, same: np.ndarray,
                  now: np.ndarray, base: np.ndarray, *, tick_rate: int,
                  pos_scale: int = POS_SCALE, framed: bool = False) -> EncodedBatch:
    """Encode K chunks in one vectorised pass (proto/README.md, *Chunk*).

    Chunk k is cell ``cells[k]`` against a baseline ``elapsed[k]`` ticks old (0 = a
    keyframe chunk, with no previous members). Its rows are the next ``n_prev[k]``
    previous members then ``n_add[k]`` added ones of `rows` (slots, each part ascending),
    with `in_cell` (a previous member is still in the cell), `same` (the slot holds the
    entity it held at the baseline), `now` (R, 8) their words now and `base` (R, 8) at the
    baseline. Cost: a fixed number of NumPy calls for the whole batch plus one bytes slice
    per chunk."""
    k_n = len(cells)
    n_prev = np.asarray(n_prev, dtype=np.int64)
    n_add = np.asarray(n_add, dtype=np.int64)
    counts = n_prev + n_add
    r_n = int(counts.sum())
    starts = np.zeros(k_n + 1, dtype=np.int64)
    np.cumsum(counts, out=starts[1:])
    if k_n == 0:
        return EncodedBatch([], starts, np.zeros(0, bool), np.zeros(0, bool),
                            np.zeros(0, dtype=np.int64))
    chunk_of = np.repeat(np.arange(k_n), counts)
    idx = np.arange(r_n) - starts[chunk_of]
    is_prev = idx < n_prev[chunk_of]
    e = np.asarray(elapsed, dtype=np.int64)[chunk_of]

    # Prediction, as predict_words but with a per-row elapsed count.
    pred = base.copy()
    # One axis at a time: on (R, 2) arrays NumPy loops over rows of length 2 (~2x dearer).
    factor = 2.0 * pos_scale * e
    for axis in (0, 1):
        moved = base[:, 2 + axis].view("<i2") * factor
        moved += VEL_SCALE * tick_rate
        moved /= 2.0 * VEL_SCALE * tick_rate
        np.floor(moved, out=moved)
        moved += base[:, axis]
        np.clip(moved, 0.0, 65535.0, out=moved)
        pred[:, axis] = moved
    delta = same & (e > 0) & in_cell
    # A row's 8 words as two uint64s: two compares instead of eight and an any().
    now64 = np.ascontiguousarray(now).view(np.uint64)
    pred64 = pred.view(np.uint64)
    differs = (now64[:, 0] != pred64[:, 0]) | (now64[:, 1] != pred64[:, 1])
    ops = np.where(delta, np.where(differs, OP_UPDATE, OP_UNCHANGED), OP_SPAWN)
    ops = np.where(in_cell, ops, _OP_LEFT).astype(np.uint8)
    spawn, upd = ops == OP_SPAWN, ops == OP_UPDATE
    n_spawn = np.bincount(chunk_of[spawn], minlength=k_n)
    n_upd = np.bincount(chunk_of[upd], minlength=k_n)

    # Residual columns: per (chunk, word) the width that holds every value (0 = absent).
    res = gather_rows(now - pred, upd).view("<i2")  # one gather, not two
    present = res != 0
    uchunk = chunk_of[upd]
    width = np.zeros((k_n, 8), dtype=np.int64)
    per_word = np.zeros((k_n, 8), dtype=np.int64)
    with_upd = np.flatnonzero(n_upd)
    if len(with_upd):
        first = (np.cumsum(n_upd) - n_upd)[with_upd]
        # One reduction for both: the count of present values (low 16 bits) and of wide
        # ones (high bits) per (chunk, word).
        code = present.astype(np.int32)
        code += ((res < -128) | (res > 127)) * np.int32(1 << 16)  # no masked add: ~7x
        sums = np.add.reduceat(code, first, axis=0)
        has = sums & 0xFFFF
        per_word[with_upd] = has
        width[with_upd] = np.where(has > 0, np.where(sums >> 16 > 0, 2, 1), 0)
    res_bytes = (per_word * width).sum(axis=1)

    prev_ops_len = (n_prev + 3) // 4
    add_ops_len = (n_add + 3) // 4
    upd_len = np.where(n_upd > 0, n_upd + 8 + res_bytes, 0)
    size = 9 + prev_ops_len + 2 + 2 * n_add + add_ops_len + 16 * n_spawn + upd_len
    if framed:
        # ServerFrame field 2 (snapshot) holding Snapshot field 8 (chunks): tag, length,
        # tag, length, then the chunk.
        inner = 1 + varint_size(size) + size
        head = 1 + varint_size(inner) + 1 + varint_size(size)
    else:
        head = np.zeros(k_n, dtype=np.int64)
    total = head + size
    start = np.cumsum(total) - total
    off = start + head
    buf = np.zeros(int(total.sum()), dtype=np.uint8)
    if framed:
        buf[start] = 0x12
        after = put_varints(buf, start + 1, inner)
        buf[after] = 0x42
        put_varints(buf, after + 1, size)
    buf[off] = np.where(np.asarray(elapsed) == 0, FLAG_KEYFRAME, 0)
    header = np.zeros(k_n, dtype=_CHUNK_HEADER)
    header["cell"], header["elapsed"], header["count"] = cells, elapsed, n_prev
    buf[(off + 1)[:, None] + np.arange(8)] = header.view(np.uint8).reshape(k_n, 8)

    def put16(pos: np.ndarray, values: np.ndarray) -> None:
        v = values.astype("<u2")
        buf[pos] = v & 0xFF
        buf[pos + 1] = v >> 8

    off_prev_ops = off + 9
    _pack_2bit(buf, off_prev_ops[chunk_of[is_prev]], idx[is_prev], ops[is_prev])
    off_nadd = off_prev_ops + prev_ops_len
    put16(off_nadd, n_add)
    added = ~is_prev
    add_rank = idx[added] - n_prev[chunk_of[added]]
    put16((off_nadd + 2)[chunk_of[added]] + 2 * add_rank, rows[added])
    off_add_ops = off_nadd + 2 + 2 * n_add
    _pack_2bit(buf, off_add_ops[chunk_of[added]], add_rank, ops[added])

    off_spawn = off_add_ops + add_ops_len
    if spawn.any():
        sp_chunk = chunk_of[spawn]
        rank = np.arange(len(sp_chunk)) - (np.cumsum(n_spawn) - n_spawn)[sp_chunk]
        pos = (off_spawn[sp_chunk] + 2 * rank)[:, None] \
            + 2 * n_spawn[sp_chunk][:, None] * np.arange(8)
        put16(pos, gather_rows(now, spawn))

    if len(with_upd):
        off_mask = off_spawn + 16 * n_spawn
        rank = np.arange(len(uchunk)) - (np.cumsum(n_upd) - n_upd)[uchunk]
        # The presence mask byte of each row (bit j: word j): the 8 bools of a row as one
        # little-endian uint64, their low bits gathered into the top byte by a multiply
        # (np.packbits' bitorder="little", ~8x faster on these short rows).
        gathered = present.view("<u8")[:, 0] * np.uint64(0x0102040810204080)
        buf[off_mask[uchunk] + rank] = gathered >> np.uint64(56)
        off_w = off_mask + n_upd
        buf[off_w[with_upd][:, None] + np.arange(8)] = width[with_upd]
        # Residuals: chunk by chunk, word by word, row by row.
        flat = np.flatnonzero(present)  # row-major, as np.nonzero (which is ~5x dearer)
        e_u, e_w = flat >> 3, flat & 7
        e_chunk = uchunk[e_u]
        # Stable by (chunk, word): the rows stay ascending (np.nonzero gives them so).
        group = e_chunk * 8 + e_w
        order = np.argsort(group.astype(np.uint16) if k_n <= 1 << 13 else group,
                           kind="stable")
        e_u, e_w, e_chunk = e_u[order], e_w[order], e_chunk[order]
        e_width = width[e_chunk, e_w]
        # A residual's place: its chunk's residual start, plus the widths before it in
        # this tick's run, less the residual bytes of the chunks before its chunk.
        before = np.cumsum(e_width) - e_width
        pos = (off_w + 8 - (np.cumsum(res_bytes) - res_bytes))[e_chunk] + before
        v = res[e_u, e_w].view("<u2")
        buf[pos] = v & 0xFF
        two = e_width == 2
        buf[pos[two] + 1] = v[two] >> 8

    raw = buf.tobytes()
    ends = (off + size).tolist()
    chunks = [raw[a:b] for a, b in zip(start.tolist(), ends, strict=True)]
    skippable = added & delta
    return EncodedBatch(chunks, starts, ops != _OP_LEFT, skippable, total)


def gather_rows(words: np.ndarray, idx: np.ndarray) -> np.ndarray:
    """``words[idx]`` for (n, 8) 16-bit records: each row copied as one 16-byte item
    when `words` is C-contiguous (NumPy's row gather copies 8 items a row, ~4x slower on
    the few thousand rows of a tick)."""
    if words.flags.c_contiguous and words.shape[1:] == (8,) and words.itemsize == 2:
        return words.view("V16")[idx].view(words.dtype)
    return words[idx]


def varint_size(n: np.ndarray) -> np.ndarray:
    """Bytes of the protobuf varint of each (non-negative, below 2**28) value."""
    return 1 + (n >= 1 << 7) + (n >= 1 << 14) + (n >= 1 << 21)


def put_varints(buf: np.ndarray, pos: np.ndarray, values: np.ndarray) -> np.ndarray:
    """Write the protobuf varint of each value at `pos`; returns the positions after."""
    if len(values) and values.max() < 1 << 14:
        # At most two bytes (every size in a tick's batch): no loop, no masks per byte.
        two = values >= 1 << 7
        buf[pos] = (values & 0x7F) | (two << 7)
        buf[pos[two] + 1] = values[two] >> 7
        return pos + 1 + two
    lens = varint_size(values)
    for j in range(int(lens.max()) if len(lens) else 0):
        at = lens > j
        more = np.where(lens[at] > j + 1, 0x80, 0)
        buf[pos[at] + j] = ((values[at] >> (7 * j)) & 0x7F) | more
    return pos + lens
