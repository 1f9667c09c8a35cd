"""Bot behaviours, sans-I/O: what a scripted player does next.

Given what the bot sees (its own position, the other live entities from its decoded
mirror) a behaviour returns the next command `(move_x, move_y, aim, fire)`. Randomness
comes from the seeded `random.Random` it is given, so a behaviour is reproducible and
testable without a socket or a clock.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass

import numpy as np

#: Every behaviour `tickwire bots --behavior` accepts.
BEHAVIORS = ("wander", "chase", "idle", "spam", "arena")

Command = tuple[float, float, float, bool]


# -- behaviours (sans-I/O) ------------------------------------------------------------------

@dataclass
class Behavior:
    """Base: no movement. `rate_factor` = inputs per server tick."""

    rng: random.Random
    tick_rate: int = 30
    rate_factor: float = 1.0

    def command(self, own: tuple[float, float] | None, others: np.ndarray | None) -> Command:
        return 0.0, 0.0, 0.0, False


@dataclass
class Idle(Behavior):
    """Join and ack only: an input every tick with no move."""


@dataclass
class Wander(Behavior):
    """A random direction that changes every ~2 s, occasional fire along it."""

    fire_chance: float = 0.05
    _left: int = 0
    _dir: tuple[float, float] = (0.0, 0.0)

    def _turn_every(self) -> int:
        # ~2 s of inputs, ±25% so a swarm does not turn in lockstep.
        base = 2.0 * self.tick_rate * self.rate_factor
        return max(1, round(base * self.rng.uniform(0.75, 1.25)))

    def command(self, own: tuple[float, float] | None, others: np.ndarray | None) -> Command:
        if self._left <= 0:
            angle = self.rng.uniform(-math.pi, math.pi)
            self._dir = (math.cos(angle), math.sin(angle))
            self._left = self._turn_every()
        self._left -= 1
        dx, dy = self._dir
        return dx, dy, math.atan2(dy, dx), self.rng.random() < self.fire_chance


@dataclass
class Spam(Wander):
    """Wander, but at twice the tick rate: exercises the server's per-tick input cap."""

    rate_factor: float = 2.0


@dataclass
class Arena(Behavior):
    """SCENARIO-arena: a random unit direction that changes every 60 inputs; no firing."""

    turn_every: int = 60
    _n: int = 0
    _dir: tuple[float, float] = (1.0, 0.0)

    def command(self, own: tuple[float, float] | None, others: np.ndarray | None) -> Command:
        if self._n % self.turn_every == 0:
            angle = self.rng.uniform(-math.pi, math.pi)
            self._dir = (math.cos(angle), math.sin(angle))
        self._n += 1
        dx, dy = self._dir
        return dx, dy, math.atan2(dy, dx), False


@dataclass
class Chase(Behavior):
    """Move toward the nearest other player or NPC, aim at it, fire when in range."""

    fire_range: float = 400.0
    _fallback: Wander | None = None

    def command(self, own: tuple[float, float] | None, others: np.ndarray | None) -> Command:
        if own is None or others is None or len(others) == 0:
            if self._fallback is None:
                self._fallback = Wander(self.rng, self.tick_rate, fire_chance=0.0)
            return self._fallback.command(own, others)
        d = others - np.asarray(own, dtype=np.float64)
        dist2 = np.einsum("ij,ij->i", d, d)
        i = int(np.argmin(dist2))
        dx, dy = float(d[i, 0]), float(d[i, 1])
        dist = math.sqrt(float(dist2[i]))
        aim = math.atan2(dy, dx)
        if dist < 1e-6:
            return 0.0, 0.0, aim, True
        return dx / dist, dy / dist, aim, dist <= self.fire_range


def make_behavior(name: str, rng: random.Random, tick_rate: int) -> Behavior:
    """A fresh behaviour by name (one of `BEHAVIORS`)."""
    classes: dict[str, type[Behavior]] = {
        "wander": Wander, "chase": Chase, "idle": Idle, "spam": Spam, "arena": Arena,
    }
    try:
        cls = classes[name]
    except KeyError:
        raise ValueError(f"unknown behaviour {name!r}; one of {', '.join(BEHAVIORS)}") from None
    return cls(rng, tick_rate)
