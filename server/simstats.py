"""Statistics over many seeded runs of ``tickwire sim``: is a balance change real or noise?

Theory of operation
-------------------
Each seed gives one value of each metric (``METRICS``). Over N seeds a metric has a mean
and a 95 % confidence interval from Student's t with N - 1 degrees of freedom (the
quantile from ``scipy.stats.t``). Two parameter files (the candidate and ``--against``
the base) are compared metric by metric with Welch's t-test (unequal variances: a change
can make a metric noisier as well as larger): the difference candidate - base, its 95 %
interval from the Welch-Satterthwaite degrees of freedom, the two-sided p-value, and
``significant`` when p < 0.05. Both files run the same seeds, which makes the test
conservative (a paired test could find smaller differences); it never finds more than is
there. A run where a metric is undefined (no deaths: no spawn-to-death time; no shots: no
hit rate) contributes no sample to that metric, and ``n`` says how many did.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy import stats

__all__ = ["ALPHA", "METRICS", "Comparison", "Summary", "compare", "summarize"]

ALPHA = 0.05  # two-sided: 95 % intervals, significant when p < 0.05

#: Per-run metrics compared across seeds: name -> (label, unit). Names are SimStats fields.
METRICS: dict[str, tuple[str, str]] = {
    "kills": ("kills by players (of players and NPCs)", ""),
    "player_kills": ("players killed by players", ""),
    "npc_kills": ("NPCs killed by players", ""),
    "deaths": ("player deaths", ""),
    "mean_spawn_to_death_s": ("mean time from spawn to death (ended lives)", "s"),
    "mean_speed": ("mean speed of live players", "units/s"),
    "shots": ("shots fired by players", ""),
    "hits": ("hits by players", ""),
    "hit_rate": ("hit rate (hits / shots)", ""),
}


@dataclass(frozen=True, slots=True)
class Summary:
    """One metric over the runs: sample count, mean, standard deviation (n - 1) and the
    95 % confidence interval of the mean (None with fewer than two samples)."""

    n: int
    mean: float | None
    sd: float | None
    ci95: tuple[float, float] | None

    def to_json(self) -> dict[str, object]:
        return {"n": self.n, "mean": self.mean, "sd": self.sd,
                "ci95": list(self.ci95) if self.ci95 else None}


@dataclass(frozen=True, slots=True)
class Comparison:
    """Candidate - base for one metric, by Welch's t-test."""

    diff: float | None
    ci95: tuple[float, float] | None
    df: float | None
    p: float | None
    significant: bool

    def to_json(self) -> dict[str, object]:
        return {"diff": self.diff, "ci95": list(self.ci95) if self.ci95 else None,
                "df": self.df, "p": self.p, "significant": self.significant}


def _clean(values: Sequence[float | None]) -> np.ndarray:
    return np.array([v for v in values if v is not None], dtype=np.float64)


def summarize(values: Sequence[float | None]) -> Summary:
    """Mean and 95 % t interval of ``values`` (``None`` entries are left out)."""
    x = _clean(values)
    n = int(x.size)
    if n == 0:
        return Summary(0, None, None, None)
    mean = float(x.mean())
    if n == 1:
        return Summary(1, mean, None, None)
    sd = float(x.std(ddof=1))
    half = float(stats.t.ppf(1 - ALPHA / 2, n - 1)) * sd / math.sqrt(n)
    return Summary(n, mean, sd, (mean - half, mean + half))


def compare(candidate: Sequence[float | None], base: Sequence[float | None]) -> Comparison:
    """Welch's t-test of mean(candidate) - mean(base); needs two samples on each side."""
    a, b = _clean(candidate), _clean(base)
    if a.size < 2 or b.size < 2:
        diff = float(a.mean() - b.mean()) if a.size and b.size else None
        return Comparison(diff, None, None, None, False)
    diff = float(a.mean() - b.mean())
    va, vb = a.var(ddof=1) / a.size, b.var(ddof=1) / b.size
    se = math.sqrt(va + vb)
    if se == 0.0:
        # Every run of both files gave the same value each: no noise to test against.
        return Comparison(diff, (diff, diff), None, 1.0 if diff == 0 else 0.0, diff != 0)
    df = (va + vb) ** 2 / (va**2 / (a.size - 1) + vb**2 / (b.size - 1))
    half = float(stats.t.ppf(1 - ALPHA / 2, df)) * se
    p = float(stats.ttest_ind(a, b, equal_var=False).pvalue)
    return Comparison(diff, (diff - half, diff + half), float(df), p, p < ALPHA)
