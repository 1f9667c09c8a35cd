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

__all__ = ["Allowance", "CellIndex", "ClientCells", "Grid", "in_sorted"]


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
        order = live_slots[np.argsort(live_cells, kind="stable")]
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
