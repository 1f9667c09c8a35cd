"""Interest management in NumPy: a uniform grid, each client's cells, and the send schedule.

Theory of operation
-------------------
``Grid`` cuts the world into square cells of side ``cell`` (``columns x rows``; the last
column and row absorb the remainder). ``Grid.assign`` puts every live slot into its cell
in one vectorised pass per tick: the cell of each slot, then the slots sorted by cell
(a stable argsort, so slots stay ascending inside a cell) with per-cell offsets from a
bincount, so a cell's members are one slice. No per-entity Python loop anywhere.

``ClientCells`` is one client's interest: the cells whose rectangle lies within
``radius`` of its player, with hysteresis (a cell enters at ``radius`` and leaves only
beyond ``radius + margin``), so an entity near the edge does not flicker in and out. It
also carries the per-cell send schedule: cells within ``near`` go every tick;
the others earn priority every tick they wait (more when nearer) and are offered highest
priority first while the client's byte allowance (``Allowance``) lasts; a cell that has
waited a whole second is sent regardless, so nothing starves.

Everything is pure: positions and ticks in, index arrays out. The server side
(``server.interestroom``) turns the chosen cells into shared chunk encodings.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

__all__ = ["Allowance", "CellIndex", "ClientCells", "Grid", "RoomCells", "Schedule", "in_sorted",
           "recorded_send",
           "sorted_unique"]


def sorted_unique(values: np.ndarray) -> np.ndarray:
    """``np.unique(values)`` by a sort and a neighbour compare (NumPy 2's np.unique hashes
    first, several times slower on the int64 keys of a tick). A concatenation of sorted
    runs sorts in about linear time (timsort finds the runs)."""
    out = np.sort(values, kind="stable")
    if len(out) < 2:
        return out
    keep = np.empty(len(out), dtype=bool)
    keep[0] = True
    np.not_equal(out[1:], out[:-1], out=keep[1:])
    return out[keep]


def recorded_send(tick: int, last_sent: np.ndarray, cells: np.ndarray, grid: Grid,
                  block: int, max_wait: int) -> np.ndarray:
    """The last-sent tick to record for `cells` sent at `tick` (`last_sent` before): the
    send tick, except a cell's first send since it entered (`last_sent` 0), recorded on
    its *slot* at or before `tick`, so that its next overdue send falls on that slot, up
    to `max_wait` ticks early. A slot is one tick in every `max_wait`, the same for the
    cells of a `block` x `block` square of the grid, spread over blocks by a hash.

    Cells that enter together (a client's whole window at its join, or every client's at
    a server start) are sent together; far cells on a budget that covers only the near
    ones are then sent only when overdue, so that cohort came due together a second later
    and again every second: one tick in 30 encoded and sent ~15x the usual bytes (issue
    16: tick p99 4x the median). On slots the cohorts' overdue sends are spread over the
    second and stay spread (a cell sent when overdue is next overdue `max_wait` later, on
    the same slot); a cell still waits at most `max_wait`. Slots by block, not by cell:
    an entity moving between two cells sent on different ticks is a spawn (a whole
    record in the personal part) instead of a delta op, so per-cell slots cost ~5% more
    bytes, while blocks about the interest radius wide cost none (bigworld measured
    ~5% fewer); and the clients covering a block send it on the same tick, so more of
    them share each chunk. Never records 0 (it means "not sent since it entered")."""
    col, row = cells % grid.columns // block, cells // grid.columns // block
    slot = tick - (tick + ((row * 4099 + col) * 0x9E3779B1 >> 16)) % max_wait
    slot[slot == 0] = tick  # a slot at tick 0, at a room's start: just the send tick
    return np.where(last_sent == 0, slot, tick)


def _rows_index(rows: np.ndarray) -> slice | np.ndarray:
    """`rows` as a slice when they are consecutive and ascending (the usual room: seats
    0..M-1), so the per-row state is read and written as views, not gathered copies."""
    if len(rows) and rows[-1] - rows[0] == len(rows) - 1 and (
            len(rows) == 1 or (np.diff(rows) == 1).all()):
        return slice(int(rows[0]), int(rows[-1]) + 1)
    return rows


def in_sorted(values: np.ndarray, sorted_arr: np.ndarray) -> np.ndarray:
    """``np.isin(values, sorted_arr)`` for an ascending `sorted_arr`, by binary search
    (np.isin's table method is far slower on the small arrays of a tick)."""
    if len(sorted_arr) == 0:
        return np.zeros(len(values), dtype=bool)
    at = np.searchsorted(sorted_arr, values)
    at[at == len(sorted_arr)] = 0
    return sorted_arr[at] == values


@dataclass(frozen=True, slots=True)
class CellIndex:
    """Where every live slot is this tick. ``cell_of[s]`` is slot s's cell (-1 when not
    live); the members of cell c are ``order[starts[c]:starts[c + 1]]`` (ascending)."""

    cell_of: np.ndarray
    order: np.ndarray
    starts: np.ndarray

    def members(self, cell: int) -> np.ndarray:
        return self.order[self.starts[cell] : self.starts[cell + 1]]

    def counts(self, cells: np.ndarray) -> np.ndarray:
        return self.starts[cells + 1] - self.starts[cells]


@dataclass(frozen=True, slots=True)
class Grid:
    cell: float
    columns: int
    rows: int

    @classmethod
    def for_world(cls, width: float, height: float, cell: float) -> Grid:
        if cell <= 0:
            raise ValueError("cell size must be positive")
        return cls(cell, max(1, math.ceil(width / cell)), max(1, math.ceil(height / cell)))

    @property
    def cells(self) -> int:
        return self.columns * self.rows

    def cell_xy(self, pos: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(cx, cy) of positions (n, 2), clamped into the grid."""
        xy = self._cell_xy(pos)
        return xy[:, 0], xy[:, 1]

    def _cell_xy(self, pos: np.ndarray) -> np.ndarray:
        # In float64 (float32 positions divided in float32 could round across a cell
        # edge), floored and clamped in place. Scalar bounds: a per-axis (2,) bound
        # broadcast over (n, 2) costs ~10x (NumPy loops over rows of length 2).
        scaled = np.asarray(pos, dtype=np.float64) / self.cell
        np.floor(scaled, out=scaled)
        np.fmax(scaled, 0.0, out=scaled)  # fmax/fmin: NaN to the edge, not through
        if self.columns == self.rows:
            np.fmin(scaled, self.columns - 1, out=scaled)
        else:
            np.fmin(scaled[:, 0], self.columns - 1, out=scaled[:, 0])
            np.fmin(scaled[:, 1], self.rows - 1, out=scaled[:, 1])
        return scaled.astype(np.int64)

    def assign(self, pos: np.ndarray, live: np.ndarray) -> CellIndex:
        """Every live slot's cell, and the slots grouped by cell (one vectorised pass)."""
        xy = self._cell_xy(pos)
        cell_of = np.where(live, xy[:, 1] * self.columns + xy[:, 0], -1)
        # One stable sort of every slot by cell, the dead (-1) last: slots stay ascending
        # inside a cell. On 16-bit keys NumPy's stable sort is a radix sort, ~15x faster
        # than on int64 at 10k slots (-1 becomes 0xFFFF, above every cell).
        keys = cell_of.astype(np.uint16) if self.cells < 0xFFFF else \
            np.where(live, cell_of, self.cells)
        counts = np.bincount(cell_of + 1, minlength=self.cells + 1)  # [0]: not live
        order = np.argsort(keys, kind="stable")[: len(cell_of) - counts[0]]
        starts = np.zeros(self.cells + 1, dtype=np.int64)
        np.cumsum(counts[1:], out=starts[1:])
        return CellIndex(cell_of, order, starts)

    def around(self, centre: tuple[float, float], reach: float) -> tuple[np.ndarray, np.ndarray]:
        """(cell ids ascending, distance from `centre` to each cell's rectangle) of the
        cells within `reach`."""
        x, y = centre
        c = self.cell
        x0 = max(0, math.floor((x - reach) / c))
        x1 = min(self.columns - 1, math.floor((x + reach) / c))
        y0 = max(0, math.floor((y - reach) / c))
        y1 = min(self.rows - 1, math.floor((y + reach) / c))
        if x1 < x0 or y1 < y0:
            return np.zeros(0, dtype=np.int64), np.zeros(0)
        cxs = np.arange(x0, x1 + 1)
        cys = np.arange(y0, y1 + 1)
        # Distance from a point to a rectangle: per axis, how far outside the interval.
        dx = np.maximum(np.maximum(cxs * c - x, x - (cxs + 1) * c), 0.0)
        dy = np.maximum(np.maximum(cys * c - y, y - (cys + 1) * c), 0.0)
        dist = np.sqrt((dy * dy)[:, None] + (dx * dx)[None, :]).reshape(-1)
        ids = (cys[:, None] * self.columns + cxs[None, :]).reshape(-1)
        near = dist <= reach
        return ids[near], dist[near]


class Allowance:
    """A client's byte allowance: `per_tick` bytes earned each tick, kept up to
    `burst` ticks' worth; `per_tick` 0 means unlimited."""

    def __init__(self, per_tick: float, burst: float = 2.0) -> None:
        self.per_tick = per_tick
        self.cap = per_tick * burst
        self.tokens = self.cap

    @property
    def unlimited(self) -> bool:
        return self.per_tick <= 0

    def earn(self) -> None:
        self.tokens = min(self.cap, self.tokens + self.per_tick)

    def spend(self, size: int) -> None:
        self.tokens -= size

    @property
    def left(self) -> bool:
        return self.unlimited or self.tokens > 0


class ClientCells:
    """One client's interest cells with hysteresis, and their send schedule.

    `cells` (ascending ids), `dist`, `priority` and `last_sent` (tick, 0 = never since the
    cell entered) are aligned arrays."""

    def __init__(self, grid: Grid, radius: float, margin: float, tick_rate: int,
                 near: float | None = None) -> None:
        self.grid = grid
        self.radius = radius
        self.near = radius / 2 if near is None else near
        self.margin = margin
        self.max_wait = tick_rate  # ticks: a cell waits at most a second
        self.slot_block = max(1, round(radius / grid.cell))  # cells (``recorded_send``)
        self.cells = np.zeros(0, dtype=np.int64)
        self.dist = np.zeros(0)
        self.priority = np.zeros(0)
        self.last_sent = np.zeros(0, dtype=np.int64)

    def update(self, centre: tuple[float, float]) -> None:
        """Recompute the interest cells around `centre`: a cell enters within `radius`,
        and one already in stays while within `radius + margin`."""
        ids, dist = self.grid.around(centre, self.radius + self.margin)
        was = in_sorted(ids, self.cells)
        keep = (dist <= self.radius) | was
        ids, dist = ids[keep], dist[keep]
        if len(ids) == len(self.cells) and (ids == self.cells).all():
            self.dist = dist  # the usual tick: the same cells, a little moved
            return
        pos = np.searchsorted(self.cells, ids)
        pos = np.minimum(pos, max(len(self.cells) - 1, 0))
        old = (self.cells[pos] == ids) if len(self.cells) else np.zeros(len(ids), dtype=bool)
        priority = np.zeros(len(ids))
        last_sent = np.zeros(len(ids), dtype=np.int64)
        priority[old] = self.priority[pos[old]]
        last_sent[old] = self.last_sent[pos[old]]
        self.cells, self.dist, self.priority, self.last_sent = ids, dist, priority, last_sent

    def plan(self, tick: int) -> tuple[np.ndarray, int]:
        """(indices into `cells` in the order to offer them, how many of the first must be
        sent whatever the budget): near and overdue cells first, then by priority."""
        must = (self.dist <= self.near) | (tick - self.last_sent >= self.max_wait)
        musts = np.flatnonzero(must)
        rest = np.flatnonzero(~must)
        rest = rest[np.argsort(-self.priority[rest], kind="stable")]
        return np.concatenate([musts, rest]), len(musts)

    def sent(self, tick: int, sent_idx: np.ndarray) -> None:
        """Cells `sent_idx` (indices into `cells`) went out this tick; the others waited."""
        # Nearer cells earn faster (about 2 at the player, 2/3 at the radius).
        self.priority += self.radius / (self.radius / 2 + self.dist + 1e-9)
        self.priority[sent_idx] = 0.0
        self.last_sent[sent_idx] = recorded_send(tick, self.last_sent[sent_idx],
                                                 self.cells[sent_idx], self.grid,
                                                 self.slot_block, self.max_wait)


@dataclass(slots=True)
class Schedule:
    """`RoomCells.schedule`'s result for M clients: every client's cells sent this tick, in
    the order offered (musts first, then by priority), as flat arrays grouped by client
    (`client` ascending)."""

    client: np.ndarray  # index into the M clients
    cell: np.ndarray  # cell id
    oldest_wait: int  # ticks the longest-waiting non-empty interest cell has waited


class RoomCells:
    """Every client's interest cells and send schedule at once: ``ClientCells`` for a
    whole room, with no per-client Python loop.

    The cells a client can have lie in a fixed ``window x window`` block of cells around
    it (everything within ``radius + margin``), so one update computes all clients'
    candidates, distances and hysteresis as (M, window²) arrays. A row's schedule state
    (in interest, priority, last sent) is kept aligned with its window, (rows, window²)
    arrays read and written a row at a time; when a client's window moves (it crossed a
    cell edge: a few clients a tick) its state is shifted along. `in_interest` holds the
    same membership by absolute cell (``row * stride + cell``, ``stride = cells + 1``: the
    last column is a sentinel for "no cell", never of interest) for lookups by cell. Same
    rules and the same order of float operations as ``ClientCells``, so the two agree
    exactly (a law in tests/unit/test_interest_vector.py)."""

    _NOWHERE = -(1 << 40)  # the window origin of a row with no cells yet

    def __init__(self, grid: Grid, radius: float, margin: float, tick_rate: int,
                 near: float | None = None, rows: int = 0) -> None:
        self.grid = grid
        self.radius = radius
        self.near = radius / 2 if near is None else near
        self.margin = margin
        self.max_wait = tick_rate
        self.slot_block = max(1, round(radius / grid.cell))  # cells (``recorded_send``)
        self.stride = grid.cells + 1
        self.window = math.floor(2 * (radius + margin) / grid.cell) + 2
        k = self.window**2
        self.rows = 0
        self.in_interest = np.zeros(0, dtype=bool)
        self.origin = np.zeros((0, 2), dtype=np.int64)  # (column, row) of window cell 0
        self.win_in = np.zeros((0, k), dtype=bool)
        self.win_priority = np.zeros((0, k))
        self.win_last = np.zeros((0, k), dtype=np.int64)
        self.dropped = np.zeros(0, dtype=np.int64)  # `update`'s cells that left interest
        self.window_cells = np.zeros((0, 0), dtype=np.int64)  # `update`'s keys less the row
        self.grow(rows)

    def grow(self, rows: int) -> None:
        """Room for seat rows below `rows`."""
        if rows <= self.rows:
            return
        n = max(rows, 2 * self.rows)
        more = n - self.rows
        k = self.window**2
        self.in_interest = np.concatenate([self.in_interest,
                                           np.zeros(more * self.stride, dtype=bool)])
        self.origin = np.concatenate([self.origin, np.full((more, 2), self._NOWHERE)])
        self.win_in = np.concatenate([self.win_in, np.zeros((more, k), dtype=bool)])
        self.win_priority = np.concatenate([self.win_priority, np.zeros((more, k))])
        self.win_last = np.concatenate([self.win_last, np.zeros((more, k), dtype=np.int64)])
        self.rows = n

    def clear(self, row: int) -> None:
        """Row `row` has no interest cells (a new or departed client)."""
        self.in_interest[row * self.stride : (row + 1) * self.stride] = False
        self.origin[row] = self._NOWHERE
        self.win_in[row] = False
        self.win_priority[row] = 0.0
        self.win_last[row] = 0

    def _cell_ids(self, origin: np.ndarray) -> np.ndarray:
        """(M, window²) cell ids of windows at `origin` (M, 2), -1 outside the grid."""
        g, step = self.grid, np.arange(self.window)
        cx = origin[:, :1] + step
        cy = origin[:, 1:] + step
        inside = ((cy >= 0) & (cy < g.rows))[:, :, None] & ((cx >= 0) & (cx < g.columns))[
            :, None, :]
        ids = cy[:, :, None] * g.columns + cx[:, None, :]
        return np.where(inside, ids, -1).reshape(len(origin), -1)

    def cells_of(self, row: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(cell ids ascending, their last-sent ticks, their priorities) of row `row`."""
        at = np.flatnonzero(self.win_in[row])
        ids = self._cell_ids(self.origin[row : row + 1])[0]
        return ids[at], self.win_last[row, at], self.win_priority[row, at]

    def update(self, rows: np.ndarray, centres: np.ndarray) -> tuple[np.ndarray, np.ndarray,
                                                                       np.ndarray]:
        """Recompute the interest cells of seat `rows` around `centres` (M, 2): a cell
        enters within `radius`, and one already in stays while within `radius + margin`.
        Returns (keys (M, K) flat keys of each window, `in` mask (M, K), dist (M, K)), and
        sets `dropped`: the flat keys ``row * stride + cell`` of the cells that left these
        rows' interest (the only cells whose members a view may have to give up), and
        `window_cells`: `keys` less ``row * stride`` (the cell ids, `cells` for none)."""
        g, c, w = self.grid, self.grid.cell, self.window
        reach = self.radius + self.margin
        m, k = len(rows), w * w
        step = np.arange(w)
        # Both axes at once: (M, 2) corners and (M, 2, window) columns and rows.
        origin = np.maximum(np.floor((centres - reach) / c), 0).astype(np.int64)
        cxy = origin[:, :, None] + step
        top = np.minimum(np.floor((centres + reach) / c), (g.columns - 1, g.rows - 1))
        at = centres[:, :, None]
        # Distance from a point to a rectangle: per axis, how far outside the interval.
        d = np.maximum(np.maximum(cxy * c - at, at - (cxy + 1) * c), 0.0)
        d *= d
        # sqrt of the sum of squares, not np.hypot (~6x dearer); Grid.around does the same
        # float operations, so the two agree exactly.
        dist = np.sqrt(d[:, 1, :, None] + d[:, 0, None, :]).reshape(m, w * w)
        inside_grid = cxy <= top[:, :, None]
        valid = (inside_grid[:, 1, :, None] & inside_grid[:, 0, None, :]).reshape(m, w * w)
        valid &= dist <= reach
        ids = (cxy[:, 1, :, None] * g.columns + cxy[:, 0, None, :]).reshape(m, w * w)
        base = (rows * self.stride)[:, None]
        cells = np.where(valid, ids, g.cells)
        keys = cells + base

        sel = _rows_index(rows)
        was = self.win_in[sel]
        moved = np.flatnonzero((origin != self.origin[sel]).any(axis=1))
        inside = self.in_interest
        if len(moved):
            # The window moved: its cells leave `in_interest` by id; the state of the
            # cells still in the window shifts with it (the others were out of reach).
            old_ids = self._cell_ids(self.origin[rows[moved]])
            old_keys = (base[moved] + old_ids)[was[moved]]
            inside[old_keys] = False
            shift = origin[moved] - self.origin[rows[moved]]  # old index = new + shift
            oi = step[None, :, None] + shift[:, 1, None, None]
            oj = step[None, None, :] + shift[:, 0, None, None]
            ok = ((oi >= 0) & (oi < w) & (oj >= 0) & (oj < w)).reshape(len(moved), -1)
            src = (np.clip(oi, 0, w - 1) * w + np.clip(oj, 0, w - 1)).reshape(len(moved), -1)
            moved_rows = rows[moved]
            # Direct (row, column) gathers: np.take_along_axis's own overhead is ~10 us.
            was[moved] = was[moved[:, None], src] & ok
            for arr in (self.win_priority, self.win_last):
                arr[moved_rows] = np.where(ok, arr[moved_rows[:, None], src], 0)
            self.origin[moved_rows] = origin[moved]
        keep = valid & ((dist <= self.radius) | was)
        # `in_interest` by id: entries that changed (cells of moved windows all re-enter).
        changed = keep != was
        changed[moved] = keep[moved]
        inside[keys[changed & keep]] = True
        lost = changed & ~keep
        gone = np.flatnonzero(lost)  # few: their keys without an (M, K) add
        dropped = [ids.reshape(-1)[gone] + base[gone // k, 0]]
        if len(gone):
            inside[dropped[0]] = False
        if len(moved):
            dropped.append(old_keys[~inside[old_keys]])
        self.dropped = np.concatenate(dropped) if len(dropped) > 1 else dropped[0]
        # A cell out of interest has no schedule: one that left comes back as new. Entries
        # out of interest are 0 already (cleared, shifted in as 0, or zeroed on leaving),
        # so only the ones that left now are zeroed.
        left = np.flatnonzero(was & ~keep)
        if len(left):
            r_left, j_left = rows[left // k], left % k
            self.win_priority[r_left, j_left] = 0.0
            self.win_last[r_left, j_left] = 0
        self.win_in[sel] = keep
        self.window_cells = cells
        return keys, keep, dist

    def schedule(self, tick: int, rows: np.ndarray, keys: np.ndarray, keep: np.ndarray,
                 dist: np.ndarray, est: np.ndarray, tokens: np.ndarray | None,
                 nonempty: np.ndarray) -> tuple[Schedule, np.ndarray]:
        """Plan and record this tick's sends for the clients of `update`: near and
        overdue cells first (ascending), then the rest by priority, while each client's
        byte allowance `tokens` (None: unlimited) lasts before each; `est` (M, K) is each
        cell's estimated size, `nonempty` (M, K) whether it has members. Returns the
        schedule and what each client spent (estimated)."""
        m, k = keys.shape
        sel = _rows_index(rows)
        last = self.win_last[sel]
        prio = self.win_priority[sel]
        must = keep & ((dist <= self.near) | (tick - last >= self.max_wait))
        rest = keep & ~must
        # Musts go first, in cell order, whatever the cost; then the rest by priority,
        # highest first, while tokens remain before each. Only the rows that can afford a
        # cell past their musts need their rest ordered (under a tight budget, as at
        # bigworld, few or none: the musts alone spend it), so only those are sorted.
        if tokens is None:
            cost = np.zeros(m, dtype=np.int64)
            ranked = np.flatnonzero(rest.any(axis=1))
        else:
            cost = np.where(must, est, 0).sum(axis=1)
            ranked = np.flatnonzero((cost < tokens) & rest.any(axis=1))
        at = np.flatnonzero(must)  # flat (M*K) indices, by row then cell
        if len(ranked):
            r_rest = rest[ranked]
            by_row = np.argsort(np.where(r_rest, -prio[ranked], np.inf), axis=1, kind="stable")
            r_at = (by_row + (ranked * k)[:, None])[np.take_along_axis(r_rest, by_row, axis=1)]
            if tokens is not None:
                # Spent before each: the row's musts, then its rest in offer order.
                r_ci = r_at // k
                e = est.ravel()[r_at]
                spent = np.cumsum(e)
                n = r_rest.sum(axis=1)
                first = np.cumsum(n) - n
                spent -= np.repeat((spent - e)[first] - cost[ranked], n)
                ok = spent - e < tokens[r_ci]
                r_at = r_at[ok]
                np.add.at(cost, r_ci[ok], e[ok])
            # Each row's musts, then its rest: a stable sort by row of the two runs.
            at = np.concatenate([at, r_at])
            at = at[np.argsort(at // k, kind="stable")]
        ci_o = at // k
        cells = keys.ravel()[at] - (rows * self.stride)[ci_o]
        # Nearer cells earn faster (about 2 at the player, 2/3 at the radius); a cell sent
        # starts again from 0. The float operations of ``ClientCells.sent``, in place:
        # prio + radius / (radius / 2 + dist + 1e-9) where in interest, else 0.
        earn = dist + self.radius / 2
        earn += 1e-9
        np.divide(self.radius, earn, out=earn)
        earn += prio
        np.multiply(earn, keep, out=earn)
        prio = earn
        np.put(prio, at, 0.0)  # flat indices of the (M, K) arrays
        np.put(last, at, recorded_send(tick, last.take(at), cells, self.grid, self.slot_block,
                                       self.max_wait))
        self.win_priority[sel], self.win_last[sel] = prio, last
        # The longest wait of a non-empty interest cell (0 with none).
        oldest = tick - int(np.where(nonempty & keep, last, tick).min()) if m else 0
        return Schedule(ci_o, cells, oldest), cost
