"""Input commands of one room: arrival buffers, validation, bounded per-seat queues.

Theory of operation
-------------------
Seats are rows ``0..rows-1`` (the room assigns them). Everything a command needs after it
arrives lives in arrays indexed by row, so the per-tick work is NumPy over all seats.

Arrival (once per Input frame, the only per-frame Python): the commands of a frame whose
``seq`` is above the seat's newest queued one are appended to one byte buffer, nine
little-endian float64 values each (row, seq, move x/y, aim, buttons, and the view claim
of lag compensation: view tick, next tick, blend), which is one array per flush without
a conversion. Older ones are redundant copies and are skipped unread.

Validation has two modes with the same rules, reasons and labels:

- deferred (``defer_checks=True``): nothing is checked per frame. ``flush`` (run at the
  start of each tick, and early when the buffers grow past ``FLUSH_AT`` commands) checks
  every buffered command at once in NumPy and returns the rejections as
  ``(row, reason, count)``.
- immediate: each new command is checked when it arrives (one chained comparison when it is
  fine) and ``receive`` returns the reasons at once; ``flush`` only queues.

The rules, in the order today's clients rely on: per seat and in arrival order, a command
whose ``seq`` is not above the newest accepted one is a redundant copy (ignored, not
counted); otherwise it is rejected as ``non_finite`` (move or aim NaN/inf),
``out_of_range`` (|move| > 1 or |aim| > 2π), ``unknown_buttons``, ``bad_view`` (a view
claim with ``view_next_tick < view_tick``, ``view_tick`` 0, or a blend outside [0, 1]; no
claim is all zeros) or ``seq_jump`` (more than ``MAX_SEQ_JUMP`` above the newest
accepted), else accepted. The newest accepted ``seq`` is
a running maximum, so in NumPy it is a cumulative maximum per seat; only a ``seq_jump``
breaks that (a rejected command does not advance it), and the few seats with one are
replayed command by command.

Queues: accepted commands go into a ring per row of ``width`` slots. Appending past
``room.input_queue`` drops the oldest (counted in ``dropped``). ``take`` runs once per tick:
each seat earns one step of budget (up to ``inputs_per_tick``), spends one per command
taken, and a queue whose shortest length over a window of one second stayed above one is
trimmed to one (counted in ``trimmed``). See ``server.room`` for why.

The usual tick skips the rings: when a flush finds one accepted command per seat and every
queue empty (each client sends one command per tick and the previous tick took them all),
the commands are kept as they are and the next ``take`` applies them directly, with the
same budget, window and result as the ring would give. Anything else that reads or changes
a queue before that ``take`` (another flush, ``queued``, ``clear_queue``, ``length``) first
puts them into the rings, so the fast path is invisible outside. ``direct=False`` turns it
off (the tests compare both).
"""

from __future__ import annotations

import array
import math
import struct
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from proto import tickwire_pb2 as pb

MAX_CMDS_PER_FRAME = 8
MAX_SEQ_JUMP = 1024
FLUSH_AT = 4096  # buffered commands that trigger an early flush (bounds the buffers' memory)
AIM_LIMIT = 2 * math.pi + 1e-6
KNOWN_BUTTONS = 0x1

# Rejection reasons (metric labels) by code; 0 is "accepted".
REASONS = ("", "non_finite", "out_of_range", "unknown_buttons", "seq_jump", "bad_view")
_NON_FINITE, _OUT_OF_RANGE, _UNKNOWN_BUTTONS, _SEQ_JUMP, _BAD_VIEW = 1, 2, 3, 4, 5
# Values per buffered command: row, seq, mx, my, aim, buttons, view a, view b, blend.
BUFFER_VALUES_PER_CMD = 9
_FIELDS = BUFFER_VALUES_PER_CMD
# A buffered command as bytes: the nine values as little-endian float64 (exact for every
# uint32 seq, tick and button mask, and for every float32 value, NaN payloads included).
_PACK_CMD = struct.Struct(f"<{_FIELDS}d").pack
BUFFER_BYTES_PER_CMD = 8 * _FIELDS
_RING = _FIELDS - 1  # per queued command: the same without the row
_SHOT_COLUMNS = [0, 5, 6, 7, 3]  # ring columns of a shot: seq, view a, view b, blend, aim
_BUFFER_SHOT_COLUMNS = [c + 1 for c in _SHOT_COLUMNS]  # the same in a buffered command
_NO_FLOOR = 1 << 30  # "no window minimum yet" for the standing-queue trim
_ROW_KEY = 1 << 33  # above any uint32 seq: row * _ROW_KEY + seq orders by row, then seq
_VALUE_LIMITS = np.array([1.0, 1.0, AIM_LIMIT, KNOWN_BUTTONS])  # |mx|, |my|, |aim|, buttons
_ALL_OK = np.ones(1, dtype=np.bool_)  # "every view claim is fine" (there is none)
# "no unknown bit" is "buttons <= KNOWN_BUTTONS" only while the known bits are the low ones
assert KNOWN_BUTTONS & (KNOWN_BUTTONS + 1) == 0


def check_cmd(seq: int, move_x: float, move_y: float, aim: float, buttons: int,
              last_seq: int, view: tuple[int, int, float] = (0, 0, 0.0)) -> str | None:
    """Why one command is unacceptable, or None (the scalar form of the rules). `view`:
    (view_tick, view_next_tick, view_blend)."""
    if not (math.isfinite(move_x) and math.isfinite(move_y) and math.isfinite(aim)):
        return "non_finite"
    if abs(move_x) > 1.0 or abs(move_y) > 1.0 or abs(aim) > AIM_LIMIT:
        return "out_of_range"
    if buttons & ~KNOWN_BUTTONS:
        return "unknown_buttons"
    if not view_ok(*view):
        return "bad_view"
    if seq - last_seq > MAX_SEQ_JUMP:
        return "seq_jump"
    return None


def view_ok(view_a: int, view_b: int, blend: float) -> bool:
    """No claim (all zero), or two ticks in order and a blend in [0, 1] (NaN fails)."""
    return (view_a == 0 and view_b == 0 and blend == 0.0) or (
        0 < view_a <= view_b and 0.0 <= blend <= 1.0)


def _views_ok(cmds: np.ndarray) -> np.ndarray:
    """`view_ok` over the buffered commands' columns 6..8."""
    va, vb, blend = cmds[:, 6], cmds[:, 7], cmds[:, 8]
    with np.errstate(invalid="ignore"):
        return (((va == 0) & (vb == 0) & (blend == 0.0))
                | ((va > 0) & (va <= vb) & (blend >= 0.0) & (blend <= 1.0)))


@dataclass(slots=True)
class Taken:
    """The commands one tick takes, for the seats that move (arrays aligned with `rows`).

    `move` (n,2), `aim`, `fire` are what the tick's own step applies; `shot` (n,5) float64
    holds the seq, view tick, next view tick, blend and aim of each row's first firing
    command of the tick (the one that names and aims the shot; zeros where none fired);
    `early` holds, per pre-move round r, the rows that took more than r+1 commands and
    their r-th command's move and aim (applied before the tick's step, in round order)."""

    rows: np.ndarray
    move: np.ndarray
    aim: np.ndarray
    fire: np.ndarray
    early: list[tuple[np.ndarray, np.ndarray, np.ndarray]]
    shot: np.ndarray
    # Each row's queue length before this take: how many ticks its last command waited
    # (the room widens a shot's rewind allowance by it).
    waited: np.ndarray


class SeatInputs:
    """Every seat's commands in one room. Rows are assigned by the owner (the room)."""

    def __init__(self, rows: int, width: int, *, defer_checks: bool,
                 direct: bool = True) -> None:
        self.defer_checks = defer_checks
        self.direct = direct  # the usual tick's commands skip the rings (module docstring)
        self.width = width
        self.rejected: Counter[str] = Counter()  # per reason, over the room's life
        self.dropped = 0  # queue overflow: the oldest commands beyond room.input_queue
        self.trimmed = 0  # dropped to cut a standing queue (input delay)
        # Written per frame, so a typed array (an item store is as cheap as a list's, far
        # cheaper than a NumPy one), read per tick through a NumPy view of the same memory
        # (no list-to-array conversion: after the tick's sleep that conversion code is cold,
        # see bench/results/issue12-fixed-cost.md). Never resized: the view holds it.
        self.newest_seq = array.array("q", bytes(8 * rows))  # newest accepted seq per row
        self._newest_view = np.frombuffer(self.newest_seq, dtype=np.int64)
        # The buffered commands, packed: nine float64 per command (row, seq, move_x, move_y,
        # aim, buttons, view_tick, view_next_tick, view_blend), one struct pack per command
        # and a zero-copy float64 view per flush (a list of Python numbers took NumPy's
        # sequence conversion, ~20 µs warm and 50-65 µs after the tick's sleep at 50 seats).
        self.buffer = bytearray()  # owned here; the room only reads its length
        # Written once per tick.
        self.budget = np.zeros(rows, dtype=np.int64)
        self.last_applied = np.zeros(rows, dtype=np.int64)
        self._window_min = np.full(rows, _NO_FLOOR, dtype=np.int64)
        self._window_ticks = np.zeros(rows, dtype=np.int64)
        self._head = np.zeros(rows, dtype=np.int64)
        self._length = np.zeros(rows, dtype=np.int64)
        # The last flush's commands when they skip the rings: (rows, commands as buffered,
        # one per row). Set only while every queue is empty.
        self._direct: tuple[np.ndarray, np.ndarray] | None = None
        # The rings: per row and slot, the command's (seq, move_x, move_y, aim, buttons,
        # view_tick, view_next_tick, view_blend) as float64 (exact: seqs, ticks and buttons
        # are uint32, the values float32), so queueing and taking are one scatter and one
        # gather.
        self._ring = np.zeros((rows, width, _RING), dtype=np.float64)

    # -- per frame ------------------------------------------------------------------------

    def receive(self, row: int, cmds: Sequence[pb.InputCmd]) -> Sequence[str]:
        """Buffer the new commands of one frame (oldest first, at most 8 by the caller).

        Returns the reasons of commands rejected now (immediate mode); () when deferred."""
        newest = self.newest_seq[row]
        buffer = self.buffer
        if self.defer_checks:
            for cmd in cmds:
                seq = cmd.seq
                if seq > newest:
                    buffer += _PACK_CMD(row, seq, cmd.move_x, cmd.move_y, cmd.aim, cmd.buttons,
                                        cmd.view_tick, cmd.view_next_tick, cmd.view_blend)
            return ()
        rejected: list[str] = []
        for cmd in cmds:
            seq = cmd.seq
            if seq <= newest:
                continue  # a redundant copy of a command we already have
            mx, my, aim, buttons = cmd.move_x, cmd.move_y, cmd.aim, cmd.buttons
            va, vb, blend = cmd.view_tick, cmd.view_next_tick, cmd.view_blend
            # NaN and inf fail these comparisons too: one test for the common case.
            if (-1.0 <= mx <= 1.0 and -1.0 <= my <= 1.0 and -AIM_LIMIT <= aim <= AIM_LIMIT
                    and not buttons & ~KNOWN_BUTTONS and seq - newest <= MAX_SEQ_JUMP
                    and view_ok(va, vb, blend)):
                buffer += _PACK_CMD(row, seq, mx, my, aim, buttons, va, vb, blend)
                newest = seq
            else:
                reason = check_cmd(seq, mx, my, aim, buttons, newest, (va, vb, blend))
                assert reason is not None
                rejected.append(reason)
                self.rejected[reason] += 1
        self.newest_seq[row] = newest
        return rejected

    @property
    def length(self) -> np.ndarray:
        """Commands queued per row (read-only; commands waiting to skip the rings count)."""
        self._to_rings()
        return self._length

    @property
    def buffered(self) -> int:
        """Commands received and not yet flushed into the queues."""
        return len(self.buffer) // BUFFER_BYTES_PER_CMD

    # -- per tick ---------------------------------------------------------------------------

    def flush(self, limit: int) -> list[tuple[int, str, int]]:
        """Validate (deferred mode) and queue every buffered command, `limit` being
        room.input_queue. Returns the rejections found now as (row, reason, count)."""
        if not self.buffer:
            return []
        self._to_rings()  # a second flush before a take: the first one's commands first
        # The packed bytes become the commands' array as they are (the array keeps them).
        packed, self.buffer = self.buffer, bytearray()
        cmds = np.frombuffer(packed, dtype="<f8").reshape(-1, _FIELDS)
        rows = cmds[:, 0].astype(np.int64)
        if len(rows) > 1 and np.bincount(rows).max() > 1:  # a seat sent several: group
            order = np.argsort(rows, kind="stable")  # arrival order kept within a seat
            cmds, rows = cmds[order], rows[order]
            first = np.empty(len(rows), dtype=np.bool_)  # the first command of each seat
            first[0] = True
            np.not_equal(rows[1:], rows[:-1], out=first[1:])
        else:  # one command per seat, the steady state: nothing to group
            first = None
        seq = cmds[:, 1].astype(np.int64)
        rejections: list[tuple[int, str, int]] = []
        if self.defer_checks:
            accepted, rejections = self._validate(rows, seq, cmds, first)
            if accepted is not None:  # None: every command accepted
                rows, seq, cmds = rows[accepted], seq[accepted], cmds[accepted]
                if first is not None:
                    first = np.empty(len(rows), dtype=np.bool_)
                    if len(rows):
                        first[0] = True
                        np.not_equal(rows[1:], rows[:-1], out=first[1:])
                    if first.all():  # what is left is one command per seat
                        first = None
        self._enqueue(rows, seq, cmds, first, limit)
        return rejections

    def _validate(self, rows: np.ndarray, seq: np.ndarray, cmds: np.ndarray,
                  first: np.ndarray | None
                  ) -> tuple[np.ndarray | None, list[tuple[int, str, int]]]:
        """The accepted mask of commands grouped by row (None when all are), and the
        rejections by row. Updates `newest_seq` for every row seen. `first` marks each
        row's first command (None: one command per row).

        Every buffered command is above its row's newest seq as of the last flush (the
        buffer skipped the rest), so a row with one command has no redundant copy."""
        # |move_x|, |move_y|, |aim|, buttons: buttons has no unknown bit iff it is 0 or 1,
        # and |NaN| <= x, |inf| <= x are both False, so one comparison finds every bad
        # value (the reasons are worked out only when there is one).
        values = np.abs(cmds[:, 2:6])
        # No view claims at all (all zeros: no hitscan shot) is the usual tick.
        views = _views_ok(cmds) if cmds[:, 6:9].any() else _ALL_OK
        newest_now = self._newest_view  # written in place: every return below commits
        start = newest_now[rows]
        if (first is None and (values <= _VALUE_LIMITS).all()
                and (views is _ALL_OK or views.all())
                and int((seq - start).max()) <= MAX_SEQ_JUMP):
            # The steady state: one fine command per seat, each new (see above).
            newest_now[rows] = seq
            return None, []
        if views is _ALL_OK:
            views = np.ones(len(rows), dtype=np.bool_)
        fine = (values <= _VALUE_LIMITS).all(axis=1) & views
        if first is None:  # one command per seat (the steady state): no running maximum
            before = start
            new = np.ones(len(rows), dtype=np.bool_)
        else:
            # Newest accepted seq before each command, assuming no seq_jump: a running
            # maximum of the fine commands' seqs per row (rows are sorted, so the key
            # restarts at each row).
            key = rows * _ROW_KEY + np.where(fine, seq, start)
            after = np.maximum.accumulate(key) - rows * _ROW_KEY
            before = np.empty_like(after)
            before[1:] = after[:-1]
            before[first] = start[first]
            new = seq > before
        jump = new & fine & (seq - before > MAX_SEQ_JUMP)
        accepted = new & fine
        if fine.all() and not jump.any():
            if first is None:
                newest_now[rows] = seq
            else:
                np.maximum.at(newest_now, rows, np.where(new, seq, 0))
            return (None if accepted.all() else accepted), []

        reason = np.zeros(len(seq), dtype=np.int64)
        reason[~views] = _BAD_VIEW
        reason[values[:, 3] > KNOWN_BUTTONS] = _UNKNOWN_BUTTONS
        reason[~(values[:, :3] <= _VALUE_LIMITS[:3]).all(axis=1)] = _OUT_OF_RANGE
        reason[~np.isfinite(values[:, :3]).all(axis=1)] = _NON_FINITE
        field_reason = reason.copy()
        reason[~new] = 0  # redundant copies are not counted, whatever they hold
        if jump.any():
            self._replay(np.flatnonzero(np.isin(rows, rows[jump])), rows, seq, start,
                         field_reason, reason, accepted)
        np.maximum.at(newest_now, rows[accepted], seq[accepted])

        counted = reason != 0
        rejections: list[tuple[int, str, int]] = []
        pairs, counts = np.unique(rows[counted] * len(REASONS) + reason[counted],
                                  return_counts=True)
        for pair, count in zip(pairs.tolist(), counts.tolist(), strict=True):
            label = REASONS[pair % len(REASONS)]
            self.rejected[label] += count
            rejections.append((pair // len(REASONS), label, count))
        return (None if accepted.all() else accepted), rejections

    @staticmethod
    def _replay(idx: np.ndarray, rows: np.ndarray, seq: np.ndarray, start: np.ndarray,
                field_reason: np.ndarray, reason: np.ndarray, accepted: np.ndarray) -> None:
        """The rules command by command at positions `idx` (every command of the rows with
        a seq_jump: a rejected command does not advance the newest seq, so the running
        maximum does not hold there). Rewrites `reason` and `accepted` at `idx`."""
        newest = 0
        for i in idx.tolist():
            if i == 0 or rows[i] != rows[i - 1]:
                newest = int(start[i])
            s = int(seq[i])
            if s <= newest:
                reason[i], accepted[i] = 0, False
            elif field_reason[i]:
                reason[i], accepted[i] = field_reason[i], False
            elif s - newest > MAX_SEQ_JUMP:
                reason[i], accepted[i] = _SEQ_JUMP, False
            else:
                reason[i], accepted[i] = 0, True
                newest = s

    def _enqueue(self, rows: np.ndarray, seq: np.ndarray, cmds: np.ndarray,
                 first: np.ndarray | None, limit: int) -> None:
        """Append accepted commands (grouped by row, oldest first; `first` marks each
        row's first command, None when there is one per row) to the rings."""
        if not len(rows):
            return
        if limit > self.width:
            self._widen(limit)
        width = self.width
        if first is None:
            if self.direct and not self._length.any():  # the usual tick (module docstring)
                self._direct = (rows, cmds)
                return
            had = self._length[rows]
            if (had < limit).all():  # one command per row, each with room: nothing drops
                self._ring[rows, (self._head[rows] + had) % width] = cmds[:, 1:]
                self._length[rows] = had + 1
                return
            uniq, counts = rows, 1
        else:
            starts = np.flatnonzero(first)
            uniq = rows[starts]
            counts = np.diff(starts, append=len(rows))
        had = self._length[uniq]
        # One append at a time, each dropping the oldest while the queue is over `limit`:
        # a queue already over a lowered limit keeps its length.
        final = np.maximum(had, np.minimum(had + counts, limit))
        drop = had + counts - final
        if drop.any():
            drop_old = np.minimum(drop, had)
            drop_new = drop - drop_old
            self.dropped += int(drop.sum())
            self._head[uniq] = (self._head[uniq] + drop_old) % width
            had = had - drop_old
        else:
            drop_new = drop
        if first is None:  # one command per row
            keep = drop_new == 0
            r = rows[keep]
            p = (self._head[r] + had[keep]) % width
            self._ring[r, p] = cmds[keep, 1:]
        else:
            rank = np.arange(len(rows)) - np.repeat(starts, counts)
            c = rank >= np.repeat(drop_new, counts)
            p = (np.repeat(self._head[uniq] + had - drop_new, counts)[c] + rank[c]) % width
            self._ring[rows[c], p] = cmds[c, 1:]
        self._length[uniq] = final

    def _to_rings(self) -> None:
        """Queue the commands waiting to skip the rings, as the ring path would have."""
        if self._direct is None:
            return
        rows, cmds = self._direct
        self._direct = None
        self._ring[rows, self._head[rows]] = cmds[:, 1:]  # every such queue is empty
        self._length[rows] = 1

    def _widen(self, width: int) -> None:
        """Grow the rings to `width` slots (room.input_queue went up), oldest first."""
        old = (np.arange(self.width)[None, :] + self._head[:, None]) % self.width
        ring = np.zeros((len(self._head), width, _RING), dtype=np.float64)
        ring[:, : self.width] = self._ring[np.arange(len(self._head))[:, None], old]
        self._ring = ring
        self._head[:] = 0
        self.width = width

    def take(self, cap: int, window: int) -> Taken:
        """One tick for every row: earn budget, trim standing queues, take commands.

        `cap` is room.inputs_per_tick, `window` the trim window in ticks (one second).
        Whole arrays, no row selection: a free row has an empty queue, so it takes
        nothing, and `reset` clears what it accumulates before the row is used again."""
        budget = np.minimum(self.budget + 1, cap)
        if self._direct is not None:
            return self._take_direct(budget, window)
        width = self.width
        length = self._length
        n = np.minimum(budget, length)
        # The standing-queue trim: the window's shortest queue (after this tick's take).
        window_min = np.minimum(self._window_min, length - n)
        self._window_ticks += 1
        due = self._window_ticks >= window
        if due.any():
            surplus = np.where(due, np.maximum(window_min - 1, 0), 0)
            self.trimmed += int(surplus.sum())
            window_min[due] = _NO_FLOOR
            self._window_ticks[due] = 0
        else:
            surplus = 0
        self._window_min = window_min
        head = self._head + surplus  # the trimmed commands are the oldest
        self._head = (head + n) % width
        self._length = length - surplus - n
        self.budget = budget - n

        m_rows = n.nonzero()[0]
        m_head, m_n = head[m_rows], n[m_rows]
        taken = self._ring[m_rows, (m_head + m_n - 1) % width]  # each row's last command
        self.last_applied[m_rows] = taken[:, 0]
        fire = (taken[:, 4].astype(np.int64) & 1) != 0
        # The shot's (seq, view tick, next view tick, blend, aim): of the oldest firing
        # command.
        shot = np.zeros((len(m_rows), 5), dtype=np.float64)
        named = np.zeros(len(m_rows), dtype=np.bool_)
        early = []
        for r in range(int(m_n.max()) - 1 if len(m_n) else 0):
            sel = np.flatnonzero(r < m_n - 1)  # rows with a command after the r-th
            s_rows = m_rows[sel]
            cmd = self._ring[s_rows, (m_head[sel] + r) % width]
            fired = (cmd[:, 4].astype(np.int64) & 1) != 0
            first_fire = fired & ~named[sel]
            shot[sel[first_fire]] = cmd[first_fire][:, _SHOT_COLUMNS]
            named[sel] |= fired
            fire[sel] |= fired
            early.append((s_rows, cmd[:, 1:3].astype(np.float32), cmd[:, 3].astype(np.float32)))
        if fire.any():
            last_names = fire & ~named
            shot[last_names] = taken[last_names][:, _SHOT_COLUMNS]
        return Taken(rows=m_rows, move=taken[:, 1:3].astype(np.float32),
                     aim=taken[:, 3].astype(np.float32), fire=fire, early=early, shot=shot,
                     waited=length[m_rows])

    def _take_direct(self, budget: np.ndarray, window: int) -> Taken:
        """`take` when the last flush's commands skipped the rings: every queue is empty
        but for that one command per row, so each such row takes it (its budget is at
        least one), no row is left with a queue (the window minimum is 0 everywhere, and a
        window that ends trims nothing), and no row has an earlier command to pre-move."""
        assert self._direct is not None
        rows, cmds = self._direct
        self._direct = None
        budget[rows] -= 1
        self.budget = budget
        self._window_min.fill(0)
        self._window_ticks += 1
        due = self._window_ticks >= window
        if due.any():
            self._window_min[due] = _NO_FLOOR
            self._window_ticks[due] = 0
        self.last_applied[rows] = cmds[:, 1]
        fire = (cmds[:, 5].astype(np.int64) & 1) != 0
        shot = np.zeros((len(rows), 5), dtype=np.float64)
        if fire.any():
            shot[fire] = cmds[fire][:, _BUFFER_SHOT_COLUMNS]
        return Taken(rows=rows, move=cmds[:, 2:4].astype(np.float32),
                     aim=cmds[:, 4].astype(np.float32), fire=fire, early=[], shot=shot,
                     waited=np.ones(len(rows), dtype=np.int64))

    # -- seats ------------------------------------------------------------------------------

    def reset(self, row: int) -> None:
        """A seat starts over (joined, resumed, or the row was freed): empty queue, no
        budget, sequence numbers from 1. Flush first: buffered commands belong to the old
        state of the row."""
        self.newest_seq[row] = 0
        self.clear_queue(row)
        self.budget[row] = 0
        self.last_applied[row] = 0
        self._window_min[row] = _NO_FLOOR
        self._window_ticks[row] = 0

    def clear_queue(self, row: int) -> None:
        self._to_rings()
        self._length[row] = 0

    def queued(self, row: int) -> list[tuple[int, float, float, float, bool]]:
        """(seq, move_x, move_y, aim, fire) of a row's queued commands, oldest first
        (flush first to include buffered ones)."""
        self._to_rings()
        at = (self._head[row] + np.arange(self._length[row])) % self.width
        return [(int(seq), mx, my, aim, bool(int(buttons) & 1))
                for seq, mx, my, aim, buttons in self._ring[row, at, :5].tolist()]
