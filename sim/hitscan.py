"""Hitscan shots tested against the world as each shooter saw it (lag compensation).

Theory of operation
-------------------
A client draws other entities in the past: between two snapshot ticks ``a <= b`` it has,
blended by ``beta`` in [0, 1] (``a + beta * (b - a)`` is its view time ``tau``, in ticks).
Its fire command carries that view. In the step of tick ``t`` the world being made is
tick ``N = t + 1``; the rewind depth of a shot is ``N - tau`` ticks. ``resolve_views``
turns claims into the rows to test:

* no claim (``a == 0``), a malformed one (``b < a``, a blend that is not finite) or one in
  the future (``tau > N``): tested at ``N``, the present (depth 0);
* deeper than the shot's limit (``weapon.max_rewind_ms``, and the room's own estimate of
  what the shooter's latency allows, whichever is smaller) or older than the history:
  clamped to the limit (``tau = N - limit``, split into ``floor(tau)``, the next tick and
  the fraction) and flagged ``clamped``;
* else the claim as it is: the rows ``a`` and ``b`` blended by ``beta``, exactly what the
  client drew (even when a skipped snapshot makes ``b - a > 1``).

``trace`` then tests every shot against every candidate in one vectorised pass (chunks of
shooters bound the temporary arrays): a ray from the shooter's present position along its
aim, against circles at the blended positions. A candidate is a live, not-dead player or
NPC *now* whose ``life`` (``sim.history``) at both rewound rows equals its life now and
which was collidable at both; never the shooter itself. So a target that died, respawned,
left, or teleported after the moment the shooter saw it is not hit by that shot (the
shooter saw a previous life of the slot, and nothing of it stands there any more). The
nearest entry point along the ray within ``weapon.range`` wins; a tie goes to the lower
slot. Arithmetic is float32 (the view time is float64 from integers and one float32), so
replays are bit-exact. Nothing here writes the world: live state never rewinds.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from sim.history import History

__all__ = ["RayHits", "Views", "cast_rays", "resolve_views", "trace"]

F32 = np.float32
_PAIRS_PER_CHUNK = 1 << 18  # shooter x candidate pairs per pass: ~10 MB of temporaries


@dataclass(slots=True)
class Views:
    """Resolved views, one row per shot: ticks ``a``, ``b`` (int64), ``beta`` (float32),
    ``depth`` (float64 ticks, N - tau), ``clamped`` (bool)."""

    a: np.ndarray
    b: np.ndarray
    beta: np.ndarray
    depth: np.ndarray
    clamped: np.ndarray


@dataclass(slots=True)
class RayHits:
    """Per shot: ``target`` slot (int64, -1 = miss), ``distance`` to the entry point or the
    range on a miss (float32), ``end`` (S,2) float32 where the ray stopped."""

    target: np.ndarray
    distance: np.ndarray
    end: np.ndarray


def resolve_views(now: int, view_a: np.ndarray, view_b: np.ndarray, blend: np.ndarray,
                  limit_ticks: np.ndarray, oldest: int) -> Views:
    """The rows to test for each shot (see the module docstring). ``now`` is N, the tick
    being made; ``limit_ticks`` (float, per shot) the deepest rewind allowed; ``oldest``
    the oldest tick the history holds."""
    a = np.asarray(view_a, dtype=np.int64)
    b = np.asarray(view_b, dtype=np.int64)
    beta = np.asarray(blend, dtype=np.float32)
    claimed = (a > 0) & (b >= a) & np.isfinite(beta)
    beta = np.where(claimed, np.clip(beta, F32(0.0), F32(1.0)), F32(0.0)).astype(np.float32)
    tau = np.where(claimed, a + beta.astype(np.float64) * (b - a), float(now))
    tau = np.minimum(tau, float(now))
    floor = np.maximum(float(now) - np.asarray(limit_ticks, dtype=np.float64), float(oldest))
    floor = np.minimum(floor, float(now))
    clamped = tau < floor
    tau = np.maximum(tau, floor)
    # Unclamped claims keep their own rows and blend; the rest are split afresh.
    as_claimed = claimed & ~clamped & (b <= now) & (a >= oldest)
    fa = np.floor(tau).astype(np.int64)
    fb = np.minimum(fa + 1, now)
    frac = (tau - fa).astype(np.float32)
    return Views(
        a=np.where(as_claimed, a, fa),
        b=np.where(as_claimed, b, fb),
        beta=np.where(as_claimed, beta, frac).astype(np.float32),
        depth=float(now) - tau,
        clamped=clamped,
    )


def _entry(ox: np.ndarray, oy: np.ndarray, dx: np.ndarray, dy: np.ndarray,
           cx: np.ndarray, cy: np.ndarray, r: np.ndarray, max_dist: float) -> np.ndarray:
    """Distance along each ray (origin o, unit direction d) to where it enters the circle
    (centre c, radius r); 0 from inside; +inf when it misses or enters beyond max_dist.
    float32, elementwise over broadcastable arrays."""
    wx = cx - ox
    wy = cy - oy
    along = wx * dx + wy * dy
    dist2 = wx * wx + wy * wy
    r2 = r * r
    perp2 = np.maximum(dist2 - along * along, F32(0.0))
    inside = dist2 <= r2
    entry = np.where(inside, F32(0.0), along - np.sqrt(np.maximum(r2 - perp2, F32(0.0))))
    hit = (perp2 <= r2) & (inside | (along >= F32(0.0))) & (entry <= F32(max_dist))
    return np.where(hit, entry, F32(np.inf)).astype(np.float32, copy=False)


def cast_rays(origin: np.ndarray, direction: np.ndarray, max_dist: float,
              centres: np.ndarray, radii: np.ndarray, eligible: np.ndarray
              ) -> tuple[np.ndarray, np.ndarray]:
    """Rays against circles, S rays by K candidates: ``origin``, ``direction`` (S,2)
    float32 (unit length), ``centres`` (S,K,2), ``radii`` (S,K) or (K,), ``eligible``
    (S,K) bool. Returns (index of the nearest circle hit per ray, -1 for none; its entry
    distance, +inf for none). A ray starting inside a circle hits it at distance 0."""
    o = origin.astype(np.float32, copy=False)
    d = direction.astype(np.float32, copy=False)
    r = np.broadcast_to(np.asarray(radii, dtype=np.float32), centres.shape[:2])
    entry = _entry(o[:, 0:1], o[:, 1:2], d[:, 0:1], d[:, 1:2], centres[..., 0],
                   centres[..., 1], r, max_dist)
    entry = np.where(eligible, entry, F32(np.inf))
    nearest = np.argmin(entry, axis=1)  # the first minimum: the lower slot on a tie
    best = np.take_along_axis(entry, nearest[:, None], axis=1)[:, 0]
    return np.where(np.isfinite(best), nearest, -1).astype(np.int64), best


def trace(history: History, now: int, shooters: np.ndarray, origin: np.ndarray,
          direction: np.ndarray, max_dist: float, views: Views) -> RayHits:
    """Test every shot at its resolved view (rows must be in ``history``; ``now`` staged).
    ``shooters`` (S,) slots, ``origin``/``direction`` (S,2) float32.

    Two passes. A broad one on present positions: ``reach`` per candidate is how far it
    ever was from where it is now, over the window's rows of its present life (a shot can
    only hit it in that life), plus its largest radius; a candidate further than that from
    the ray's line, or beyond its span, cannot be hit. The exact test then runs on the
    surviving (shot, candidate) pairs at their blended positions."""
    s = shooters.size
    target = np.full(s, -1, dtype=np.int64)
    distance = np.full(s, F32(max_dist), dtype=np.float32)
    row_now = now % history.depth
    cand = np.flatnonzero(history.collidable[row_now])
    if cand.size and s:
        here = history.pos[row_now, cand]
        life_now = history.life[row_now, cand]
        window = history.rows(np.arange(int(min(views.a.min(), views.b.min())), now + 1))
        off = history.pos[window[:, None], cand] - here  # (W,K,2)
        same = history.life[window[:, None], cand] == life_now
        moved2 = np.where(same, off[..., 0] * off[..., 0] + off[..., 1] * off[..., 1],
                          F32(0.0))
        reach = np.sqrt(moved2.max(axis=0)) + history.radius[window[:, None], cand].max(axis=0)
        reach = (reach * F32(1.001) + F32(0.01))[None, :]  # float32 rounding room
        cx, cy = here[:, 0][None, :], here[:, 1][None, :]
        ox, oy = origin[:, 0:1], origin[:, 1:2]
        dx, dy = direction[:, 0:1], direction[:, 1:2]
        half = F32(max_dist / 2.0)
        span = half + reach
        pair_s, pair_k = [], []
        chunk = max(1, _PAIRS_PER_CHUNK // cand.size)
        for lo in range(0, s, chunk):  # a few passes at most: bounds memory, not a hot loop
            sl = slice(lo, lo + chunk)
            # In place where possible: this pass is S x K and dominates the cost.
            wx = cx - ox[sl]
            wy = cy - oy[sl]
            along = wx * dx[sl]
            along += wy * dy[sl]
            np.multiply(wx, dy[sl], out=wx)
            np.multiply(wy, dx[sl], out=wy)
            wx -= wy  # the signed distance from the ray's line
            np.abs(wx, out=wx)
            near = wx <= reach
            along -= half  # |along - range/2| <= range/2 + reach: within the ray's span
            np.abs(along, out=along)
            near &= along <= span
            i, k = np.nonzero(near)
            pair_s.append(i + lo)
            pair_k.append(k)
        si = np.concatenate(pair_s)
        c = cand[np.concatenate(pair_k)]
        keep = c != shooters[si]  # never the shooter itself
        si, c = si[keep], c[keep]
        if si.size:
            ra, rb, rn = history.rows(views.a[si]), history.rows(views.b[si]), row_now
            pa = history.pos[ra, c]
            pb = history.pos[rb, c]
            centre = pa + (pb - pa) * views.beta[si, None]
            life_now = history.life[rn, c]
            ok = ((history.life[ra, c] == life_now) & (history.life[rb, c] == life_now)
                  & history.collidable[ra, c] & history.collidable[rb, c])
            entry = _entry(origin[si, 0], origin[si, 1], direction[si, 0], direction[si, 1],
                           centre[:, 0], centre[:, 1], history.radius[ra, c], max_dist)
            hit = ok & np.isfinite(entry)
            si, c, entry = si[hit], c[hit], entry[hit]
            # Nearest entry per shot; on a tie the lower slot.
            order = np.lexsort((c, entry, si))
            si, c, entry = si[order], c[order], entry[order]
            first = np.ones(si.size, dtype=np.bool_)
            first[1:] = si[1:] != si[:-1]
            target[si[first]] = c[first]
            distance[si[first]] = entry[first]
    end = (origin + direction * distance[:, None]).astype(np.float32)
    return RayHits(target=target, distance=distance, end=end)
