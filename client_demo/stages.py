"""Load shapes: k6-style ramp stages and the join/leave times they give each bot (sans-I/O).

Theory of operation
-------------------
`--stages 10s:50,30s:50,10s:0` is a piecewise-linear target: the number of bots goes from
0 (or the previous stage's target) to each stage's target, linearly over that stage's
duration. Bot `i` (0-based) is connected while the target is above `i`, so bot 0 joins at
the start of the first rising stage and a falling stage lets the highest-numbered bots go
first. A target can rise again after a fall; a bot then joins again as a new player.

The plain `--count N --ramp R` run is the same shape with stages `R:N` and an open end
(the last target holds until the run stops). Everything here takes times as arguments, so
the schedule is unit-tested without a clock.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

MAX_STAGES = 100
MAX_STAGE_S = 24 * 3600.0
_STAGE = re.compile(r"^\s*(\d+(?:\.\d*)?|\.\d+)(ms|s|m|h)?\s*:\s*(\d+)\s*$")
_UNIT_S = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, None: 1.0}


class StageError(ValueError):
    """A --stages text that cannot be used; the message names the bad part."""


@dataclass(frozen=True)
class Stage:
    """Reach `target` bots, linearly, over `duration_s` seconds."""

    duration_s: float
    target: int


def parse_stages(text: str, max_bots: int) -> tuple[Stage, ...]:
    """Parse `10s:50,30s:50,10s:0` (units ms, s, m, h; a bare number is seconds)."""
    parts = text.split(",")
    if not text.strip() or len(parts) > MAX_STAGES:
        raise StageError(f"--stages: give 1 to {MAX_STAGES} stages like 10s:50,30s:50,10s:0")
    out = []
    for part in parts:
        m = _STAGE.match(part)
        if m is None:
            raise StageError(f"--stages: cannot parse {part.strip()!r}; expected DURATION:BOTS "
                             "such as 30s:50 (units ms, s, m, h)")
        duration = float(m.group(1)) * _UNIT_S[m.group(2)]
        target = int(m.group(3))
        if not (math.isfinite(duration) and 0.0 <= duration <= MAX_STAGE_S):
            raise StageError(f"--stages: duration of {part.strip()!r} is out of range "
                             f"[0, {MAX_STAGE_S:g}] s")
        if target > max_bots:
            raise StageError(f"--stages: {target} bots in {part.strip()!r} is more than "
                             f"{max_bots}")
        out.append(Stage(duration, target))
    if max(s.target for s in out) == 0:
        raise StageError("--stages: no stage has any bots")
    if sum(s.duration_s for s in out) <= 0:
        raise StageError("--stages: the stages last 0 s in total")
    return tuple(out)


def total_s(stages: tuple[Stage, ...]) -> float:
    return sum(s.duration_s for s in stages)


def peak(stages: tuple[Stage, ...]) -> int:
    """The most bots connected at once: how many bots the run needs."""
    return max(s.target for s in stages)


def target_at(stages: tuple[Stage, ...], t: float) -> float:
    """The (fractional) number of bots wanted `t` seconds after the start; the last target
    holds after the last stage."""
    if t < 0:
        return 0.0
    level = 0.0
    t0 = 0.0
    for s in stages:
        if s.duration_s > 0 and t < t0 + s.duration_s:
            return level + (s.target - level) * (t - t0) / s.duration_s
        level, t0 = float(s.target), t0 + s.duration_s
    return level


def bot_intervals(stages: tuple[Stage, ...], i: int) -> list[tuple[float, float]]:
    """When bot `i` is connected: [(join_s, leave_s)], times from the start; `leave_s` is
    `math.inf` when it stays until the run stops."""
    out: list[tuple[float, float]] = []
    on: float | None = None
    level = 0.0
    t0 = 0.0
    for s in stages:
        f0, f1, d = level, float(s.target), s.duration_s
        if on is None and f0 <= i < f1:  # rising through i: connected once f(t) > i
            on = t0 + (i - f0) / (f1 - f0) * d
        if on is not None and f1 <= i < f0:  # falling through i: gone once f(t) <= i
            out.append((on, t0 + (f0 - i) / (f0 - f1) * d))
            on = None
        level, t0 = f1, t0 + d
    if on is not None:
        out.append((on, math.inf))
    return out


def ramp_stages(count: int, ramp_s: float) -> tuple[Stage, ...]:
    """The plain run's shape: ramp to `count` over `ramp_s`, then hold."""
    return (Stage(ramp_s, count),)


def client_seconds(stages: tuple[Stage, ...], bots: list[int], w0: float, w1: float) -> float:
    """Seconds of connection the schedule gives `bots` inside the window [w0, w1]."""
    total = 0.0
    for i in bots:
        for on, off in bot_intervals(stages, i):
            total += max(0.0, min(off, w1) - max(on, w0))
    return total
