"""`tickwire sim`: run the game headless at full speed with scripted players and report
balance statistics — try a parameter change in seconds, without a server or clients.

Theory of operation
-------------------
One ``World`` is built from the parameters (``--seed`` replaces ``world.seed``), ``P``
players are added, and the world is stepped ``N`` times as fast as the CPU allows. Each
tick a behaviour writes every player's input row at once (NumPy over all players, no
per-player Python):

* ``wander`` — walk in a random direction, a new one every 1.5–2.5 s; aim where walking;
  pull the trigger on ~5 % of ticks.
* ``chase`` — head for the nearest other live player or NPC; the aim turns toward it at
  most ``TURN_RATE`` rad/s; fire when the aim is within ``FIRE_CONE`` rad of the target
  and the target is within the projectile's range.

The behaviours draw from their own generator seeded from ``--seed``, so the same seed
gives the same statistics (all but the wall-clock ``ticks_per_second``).

Statistics: kills (by players: of players and of NPCs), player deaths, mean time to kill
(seconds from a player's spawn or respawn to its death), mean speed of live players
(units/s, averaged over ticks and players), shots, hits, hit rate (hits / shots) and the
ticks per second achieved.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from sim.params import Params, ParamsError, load_params
from sim.step import Inputs, step
from sim.world import FLAG_DEAD, KIND_NPC, KIND_PLAYER, World

__all__ = ["BEHAVIORS", "SimStats", "add_sim_parser", "format_table", "run_sim"]

TURN_RATE = 6.0  # rad/s: how fast a chasing player's aim swings toward its target
FIRE_CONE = 0.15  # rad: a chaser fires when its aim is this close to the target's bearing
WANDER_FIRE_P = 0.05  # chance per tick that a wanderer pulls the trigger
_TWO_PI = 2.0 * math.pi


@dataclass(frozen=True, slots=True)
class SimStats:
    """Balance statistics of one headless run. Times in seconds, speeds in units/s."""

    behavior: str
    seed: int
    players: int
    npcs: int
    ticks: int
    tick_rate: int
    sim_seconds: float
    kills: int  # by players (of players and NPCs)
    player_kills: int
    npc_kills: int
    deaths: int  # of players
    mean_time_to_kill_s: float | None  # spawn/respawn -> death, None without deaths
    mean_speed: float  # live players, averaged over ticks and players
    shots: int
    hits: int
    hit_rate: float | None  # hits / shots, None without shots
    ticks_per_second: float  # wall clock: the only field that varies run to run

    def deterministic(self) -> dict[str, object]:
        """Every field a seed decides (all but ``ticks_per_second``)."""
        d = asdict(self)
        del d["ticks_per_second"]
        return d


class _Wander:
    def __init__(self, n: int, rng: np.random.Generator, tick_rate: int) -> None:
        self.rng = rng
        self.lo, self.hi = round(1.5 * tick_rate), round(2.5 * tick_rate) + 1
        self.heading = np.zeros(n)
        self.next_turn = np.zeros(n, dtype=np.int64)

    def __call__(self, world: World, slots: np.ndarray, inputs: Inputs) -> None:
        t = world.tick
        due = np.flatnonzero(self.next_turn <= t)
        if due.size:
            self.heading[due] = self.rng.random(due.size) * _TWO_PI
            self.next_turn[due] = t + self.rng.integers(self.lo, self.hi, due.size)
        inputs.move[slots, 0] = np.cos(self.heading)
        inputs.move[slots, 1] = np.sin(self.heading)
        inputs.aim[slots] = self.heading
        inputs.fire[slots] = self.rng.random(slots.size) < WANDER_FIRE_P


class _Chase:
    def __init__(self, n: int, rng: np.random.Generator, tick_rate: int) -> None:
        self.max_turn = TURN_RATE / tick_rate
        self.aim = rng.random(n) * _TWO_PI - math.pi

    def __call__(self, world: World, slots: np.ndarray, inputs: Inputs) -> None:
        p = world.params
        live = world.alive & ((world.flags & FLAG_DEAD) == 0)
        targets = np.flatnonzero(live & ((world.kind == KIND_PLAYER) | (world.kind == KIND_NPC)))
        move = np.zeros((slots.size, 2))
        fire = np.zeros(slots.size, dtype=np.bool_)
        if targets.size:
            diff = world.pos[targets][None, :, :].astype(np.float64) - \
                world.pos[slots][:, None, :].astype(np.float64)  # (P, T, 2)
            dist2 = np.einsum("ptk,ptk->pt", diff, diff)
            dist2[slots[:, None] == targets[None, :]] = np.inf  # never chase yourself
            nearest = np.argmin(dist2, axis=1)
            rows = np.arange(slots.size)
            has = np.isfinite(dist2[rows, nearest])
            d = diff[rows, nearest]
            dist = np.sqrt(dist2[rows, nearest])
            bearing = np.arctan2(d[:, 1], d[:, 0])
            off = (bearing - self.aim + math.pi) % _TWO_PI - math.pi
            turn = np.clip(off, -self.max_turn, self.max_turn)
            self.aim = np.where(has, (self.aim + turn + math.pi) % _TWO_PI - math.pi, self.aim)
            safe = np.where(has & (dist > 0), dist, 1.0)
            move = np.where(has[:, None], d / safe[:, None], 0.0)
            reach = p.projectile_speed * p.projectile_lifetime_s
            fire = has & (np.abs(off - turn) < FIRE_CONE) & (dist < reach)
        inputs.move[slots] = move
        inputs.aim[slots] = self.aim
        inputs.fire[slots] = fire


BEHAVIORS: dict[str, Callable[[int, np.random.Generator, int], object]] = {
    "wander": _Wander,
    "chase": _Chase,
}


def sim_params(params: Params, players: int, seed: int) -> Params:
    """``params`` with ``world.seed = seed`` and room for ``players`` players (the room
    limit and the slot count are raised if they are too small)."""
    changes: dict[str, object] = {"world.seed": seed}
    if players > params.max_players:
        changes["room.max_players"] = players
        needed = players + params.npc_count + params.max_projectiles
        if needed > params.capacity:
            changes["world.capacity"] = needed
    return params.with_changes(changes)


def run_sim(params: Params, *, ticks: int, players: int, behavior: str = "wander",
            seed: int = 1, clock: Callable[[], float] = time.perf_counter) -> SimStats:
    """Simulate ``ticks`` ticks with ``players`` scripted players; see the module docs.
    Raises ``ParamsError`` when the parameters cannot hold that many players, and
    ``ValueError`` for an unknown behaviour."""
    if behavior not in BEHAVIORS:
        raise ValueError(f"unknown behavior {behavior!r}; choose from {sorted(BEHAVIORS)}")
    params = sim_params(params, players, seed)
    world = World.create(params)
    slots = np.array([world.add_player(i + 1) for i in range(players)], dtype=np.int64)
    rng = np.random.Generator(np.random.PCG64([seed, 0x51A]))
    act = BEHAVIORS[behavior](players, rng, params.tick_rate)
    inputs = Inputs.empty(world.capacity)
    is_player = np.zeros(world.capacity, dtype=np.bool_)
    is_player[slots] = True
    spawn_tick = np.zeros(world.capacity, dtype=np.int64)  # per slot: last (re)spawn tick

    shots = hits = player_kills = npc_kills = deaths = 0
    ttk_ticks = 0
    speed_sum = 0.0
    speed_samples = 0
    started = clock()
    for _ in range(ticks):
        act(world, slots, inputs)  # type: ignore[operator]
        ev = step(world, inputs)
        shots += ev.shots
        hits += int(np.count_nonzero(is_player[ev.hits_shooter[ev.hits_shooter >= 0]]))
        if ev.respawned.size:
            spawn_tick[ev.respawned] = ev.tick
        if ev.kills_victim.size:
            by_player = ev.kills_killer >= 0
            by_player[by_player] = is_player[ev.kills_killer[by_player]]
            victims_players = is_player[ev.kills_victim]
            player_kills += int(np.count_nonzero(by_player & victims_players))
            npc_kills += int(np.count_nonzero(by_player & ~victims_players))
            dead = ev.kills_victim[victims_players]
            deaths += dead.size
            ttk_ticks += int((ev.tick - spawn_tick[dead]).sum())
        up = slots[(world.flags[slots] & FLAG_DEAD) == 0]
        if up.size:
            v = world.vel[up].astype(np.float64)
            speed_sum += float(np.sqrt((v * v).sum(axis=1)).sum())
            speed_samples += up.size
    elapsed = clock() - started
    rate = params.tick_rate
    return SimStats(
        behavior=behavior, seed=seed, players=players, npcs=params.npc_count, ticks=ticks,
        tick_rate=rate, sim_seconds=ticks / rate,
        kills=player_kills + npc_kills, player_kills=player_kills, npc_kills=npc_kills,
        deaths=deaths,
        mean_time_to_kill_s=(ttk_ticks / deaths / rate) if deaths else None,
        mean_speed=speed_sum / speed_samples if speed_samples else 0.0,
        shots=shots, hits=hits, hit_rate=hits / shots if shots else None,
        ticks_per_second=ticks / elapsed if elapsed > 0 else float("inf"),
    )


def format_table(stats: SimStats) -> str:
    """A two-column, human-readable table of the statistics."""
    def fmt(value: object, unit: str = "") -> str:
        if value is None:
            return "n/a"
        if isinstance(value, float):
            return f"{value:,.3f}{unit}"
        return f"{value}{unit}"

    rows = [
        ("behavior", fmt(stats.behavior)), ("seed", fmt(stats.seed)),
        ("players / NPCs", f"{stats.players} / {stats.npcs}"),
        ("simulated", f"{stats.ticks} ticks = {stats.sim_seconds:,.1f} s at "
                      f"{stats.tick_rate} Hz"),
        ("kills (players + NPCs)", f"{stats.kills} ({stats.player_kills} + {stats.npc_kills})"),
        ("player deaths", fmt(stats.deaths)),
        ("mean time to kill", fmt(stats.mean_time_to_kill_s, " s")),
        ("mean player speed", fmt(stats.mean_speed, " units/s")),
        ("shots / hits", f"{stats.shots} / {stats.hits}"),
        ("hit rate", "n/a" if stats.hit_rate is None else f"{stats.hit_rate:.1%}"),
        ("ticks per second", fmt(stats.ticks_per_second)),
    ]
    width = max(len(k) for k, _ in rows)
    return "\n".join(f"{k:<{width}}  {v}" for k, v in rows)


def run_sim_command(args: argparse.Namespace) -> int:
    try:
        params = load_params(args.params)
        stats = run_sim(params, ticks=args.ticks, players=args.players,
                        behavior=args.behavior, seed=args.seed)
    except (ParamsError, OSError) as exc:
        print(f"tickwire sim: {exc}", file=sys.stderr)
        return 2
    if args.json == "-":
        print(json.dumps(asdict(stats), indent=2))
        return 0
    print(format_table(stats))
    if args.json:
        Path(args.json).write_text(json.dumps(asdict(stats), indent=2) + "\n")
    return 0


def add_sim_parser(sub: argparse._SubParsersAction) -> None:
    def positive(text: str) -> int:
        value = int(text)
        if value <= 0:
            raise argparse.ArgumentTypeError(f"{value} is not a positive integer")
        return value

    p = sub.add_parser("sim", help="run the simulation headless with scripted players and "
                                   "report balance statistics")
    p.add_argument("--params", metavar="FILE", help="sim parameters TOML (default: built in)")
    p.add_argument("--ticks", type=positive, default=30 * 60, metavar="N",
                   help="ticks to simulate (default 1800 = 60 s at 30 Hz)")
    p.add_argument("--players", type=positive, default=16, metavar="P",
                   help="scripted players (default 16)")
    p.add_argument("--behavior", choices=sorted(BEHAVIORS), default="wander",
                   help="how the players act (default wander)")
    p.add_argument("--seed", type=int, default=1, metavar="S",
                   help="seeds the world and the behaviours; same seed, same stats (default 1)")
    p.add_argument("--json", metavar="OUT", help="also write the statistics as JSON to OUT "
                                                 "('-': only JSON, to stdout)")
    p.set_defaults(func=run_sim_command)
