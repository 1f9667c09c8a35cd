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
        scaled = np.floor(np.asarray(pos, dtype=np.float64) / self.cell).astype(np.int64)
        cx = np.clip(scaled[:, 0], 0, self.columns - 1)
        cy = np.clip(scaled[:, 1], 0, self.rows - 1)
        return cx, cy

    def assign(self, pos: np.ndarray, live: np.ndarray) -> CellIndex:
        """Every live slot's cell, and the slots grouped by cell (one vectorised pass)."""
        cx, cy = self.cell_xy(pos)
        cell_of = np.where(live, cy * self.columns + cx, -1)
        live_slots = np.flatnonzero(live)
        live_cells = cell_of[live_slots]
        # A stable sort keeps slots ascending inside a cell; on 16-bit keys NumPy's stable
        # sort is a radix sort, ~15x faster than on int64 at 10k slots.
        keys = live_cells.astype(np.uint16) if self.cells <= 1 << 16 else live_cells
        order = live_slots[np.argsort(keys, kind="stable")]
        starts = np.zeros(self.cells + 1, dtype=np.int64)
        np.cumsum(np.bincount(live_cells, minlength=self.cells), out=starts[1:])
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
        dist = np.hypot(dy[:, None], dx[None, :]).reshape(-1)
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
        self.last_sent[sent_idx] = tick


@dataclass(slots=True)
class Schedule:
    """`RoomCells.schedule`'s result for M clients: every client's interest cells in the
    order offered (musts first), as flat arrays grouped by client (`client` ascending)."""

    client: np.ndarray  # index into the M clients
    cell: np.ndarray  # cell id
    sent: np.ndarray  # chosen this tick
    oldest_wait: int  # ticks the longest-waiting non-empty interest cell has waited


class RoomCells:
    """Every client's interest cells and send schedule at once: ``ClientCells`` for a
    whole room, as dense per-(seat row, cell) arrays, with no per-client Python loop.

    Row r's state lives at flat index ``r * stride + cell`` of `in_interest`,
    `priority` and `last_sent` (``stride = cells + 1``: the last column is a sentinel for
    "no cell", always out of interest). The cells a client can have lie in a fixed
    ``window x window`` block around it (everything within ``radius + margin``), so one
    update computes all clients' candidates, distances and hysteresis as (M, window²)
    arrays. Same rules and the same order of float operations as ``ClientCells``, so the
    two agree exactly (a law in tests/unit/test_interest_vector.py)."""

    def __init__(self, grid: Grid, radius: float, margin: float, tick_rate: int,
                 near: float | None = None, rows: int = 0) -> None:
        self.grid = grid
        self.radius = radius
        self.near = radius / 2 if near is None else near
        self.margin = margin
        self.max_wait = tick_rate
        self.stride = grid.cells + 1
        self.window = math.floor(2 * (radius + margin) / grid.cell) + 2
        self.rows = 0
        self.in_interest = np.zeros(0, dtype=bool)
        self.priority = np.zeros(0)
        self.last_sent = np.zeros(0, dtype=np.int64)
        # Each row's window at its last update (flat keys, the sentinel where no cell):
        # every interest cell of the row lies in it, so a move never scans the whole grid.
        self.prev_keys = np.zeros((0, self.window**2), dtype=np.int64)
        self.grow(rows)

    def grow(self, rows: int) -> None:
        """Room for seat rows below `rows`."""
        if rows <= self.rows:
            return
        n = max(rows, 2 * self.rows)
        extra = (n - self.rows) * self.stride
        self.in_interest = np.concatenate([self.in_interest, np.zeros(extra, dtype=bool)])
        self.priority = np.concatenate([self.priority, np.zeros(extra)])
        self.last_sent = np.concatenate([self.last_sent, np.zeros(extra, dtype=np.int64)])
        fresh = np.arange(self.rows, n)[:, None] * self.stride + self.grid.cells
        self.prev_keys = np.concatenate(
            [self.prev_keys, np.broadcast_to(fresh, (n - self.rows, self.window**2))])
        self.rows = n

    def clear(self, row: int) -> None:
        """Row `row` has no interest cells (a new or departed client)."""
        at = slice(row * self.stride, (row + 1) * self.stride)
        self.in_interest[at] = False
        self.priority[at] = 0.0
        self.last_sent[at] = 0
        self.prev_keys[row] = row * self.stride + self.grid.cells

    def cells_of(self, row: int) -> tuple[np.ndarray, np.ndarray]:
        """(cell ids ascending, their last-sent ticks) of row `row`'s interest."""
        at = slice(row * self.stride, (row + 1) * self.stride - 1)
        cells = np.flatnonzero(self.in_interest[at])
        return cells, self.last_sent[at][cells]

    def update(self, rows: np.ndarray, centres: np.ndarray) -> tuple[np.ndarray, np.ndarray,
                                                                       np.ndarray]:
        """Recompute the interest cells of seat `rows` around `centres` (M, 2): a cell
        enters within `radius`, and one already in stays while within `radius + margin`.
        Returns (keys (M, K) flat keys of each window, `in` mask (M, K), dist (M, K))."""
        g, c, w = self.grid, self.grid.cell, self.window
        reach = self.radius + self.margin
        x, y = centres[:, 0], centres[:, 1]
        step = np.arange(w)
        cx = np.maximum(np.floor((x - reach) / c), 0).astype(np.int64)[:, None] + step
        cy = np.maximum(np.floor((y - reach) / c), 0).astype(np.int64)[:, None] + step
        x1 = np.minimum(np.floor((x + reach) / c), g.columns - 1)[:, None]
        y1 = np.minimum(np.floor((y + reach) / c), g.rows - 1)[:, None]
        # Distance from a point to a rectangle: per axis, how far outside the interval.
        dx = np.maximum(np.maximum(cx * c - x[:, None], x[:, None] - (cx + 1) * c), 0.0)
        dy = np.maximum(np.maximum(cy * c - y[:, None], y[:, None] - (cy + 1) * c), 0.0)
        m = len(rows)
        dist = np.hypot(dy[:, :, None], dx[:, None, :]).reshape(m, w * w)
        valid = ((cy <= y1)[:, :, None] & (cx <= x1)[:, None, :]).reshape(m, w * w)
        valid &= dist <= reach
        ids = (cy[:, :, None] * g.columns + cx[:, None, :]).reshape(m, w * w)
        keys = np.where(valid, ids, g.cells) + (rows * self.stride)[:, None]
        inside = self.in_interest
        keep = valid & ((dist <= self.radius) | inside[keys])
        old = self.prev_keys[rows]
        inside[old] = False
        inside[keys[keep]] = True
        # A cell that left forgets its schedule: it comes back as new.
        gone = old[~inside[old]]
        self.priority[gone] = 0.0
        self.last_sent[gone] = 0
        self.prev_keys[rows] = keys
        return keys, keep, dist

    def schedule(self, tick: int, keys: np.ndarray, keep: np.ndarray, dist: np.ndarray,
                 est: np.ndarray, tokens: np.ndarray | None,
                 nonempty: np.ndarray) -> tuple[Schedule, np.ndarray]:
        """Plan and record this tick's sends for the clients of `update`: near and
        overdue cells first (ascending), then the rest by priority, while each client's
        byte allowance `tokens` (None: unlimited) lasts before each; `est` (M, K) is each
        cell's estimated size, `nonempty` (M, K) whether it has members. Returns the
        schedule and what each client spent (estimated)."""
        m, k = keys.shape
        last = self.last_sent[keys]
        prio = self.priority[keys]
        must = (dist <= self.near) | (tick - last >= self.max_wait)
        # The offer order, one stable sort per client row: musts (-inf) in cell order,
        # then the rest by priority, highest first; cells not in interest (+inf) last.
        rank_key = np.where(keep, np.where(must, -np.inf, -prio), np.inf)
        by_row = np.argsort(rank_key, axis=1, kind="stable")
        kept = np.take_along_axis(keep, by_row, axis=1)
        at = (by_row + (np.arange(m) * k)[:, None])[kept]  # flat (M*K) indices, in order
        ci_o = at // k
        counts = kept.sum(axis=1)
        first = np.cumsum(counts) - counts
        rank = np.arange(len(at)) - first[ci_o]
        e = est.ravel()[at]
        spent = np.cumsum(e)
        spent -= (spent - e)[first[ci_o]] if len(e) else 0
        must_o = must.ravel()[at]
        if tokens is None:
            take = counts
            cost = np.zeros(m, dtype=np.int64)
        else:
            # Musts go whatever the cost; then cells while tokens remain before each.
            stop = ~((spent - e < tokens[ci_o]) | must_o)
            take = counts.copy()
            # A client's first stop (entries are grouped by client, in offer order).
            stops = np.flatnonzero(stop)
            firsts = stops[np.r_[True, ci_o[stops[1:]] != ci_o[stops[:-1]]]] if len(stops) \
                else stops
            take[ci_o[firsts]] = rank[firsts]
            cost = np.zeros(m, dtype=np.int64)
            has = take > 0
            cost[has] = spent[first[has] + take[has] - 1]
        sent_o = rank < take[ci_o]
        # Nearer cells earn faster (about 2 at the player, 2/3 at the radius).
        flat = keys.ravel()[at]
        prio_o = prio.ravel()[at] + self.radius / (self.radius / 2 + dist.ravel()[at] + 1e-9)
        prio_o[sent_o] = 0.0
        last_o = np.where(sent_o, tick, last.ravel()[at])
        self.priority[flat] = prio_o
        self.last_sent[flat] = last_o
        full = nonempty.ravel()[at]
        oldest = int((tick - last_o[full]).max()) if full.any() else 0
        cells = flat - (keys[:, 0] // self.stride * self.stride)[ci_o]
        return Schedule(ci_o, cells, sent_o, oldest), cost
