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

Statistics of one run: kills (by players: of players and of NPCs), player deaths, the mean
time from a player's spawn or respawn to its death (over the lives that ended in the run;
lives still going at the end are not counted), mean speed of live players (units/s,
averaged over ticks and players), shots, hits, hit rate (hits / shots), the ticks per
second achieved, and two distributions: every ended life's length and each player's
kills.

One seed is one sample of a noisy game. ``--seeds N`` runs N seeds in parallel processes
and ``--against BASE.toml`` runs the same seeds with a second file; ``server.simstats``
turns the runs into means with 95 % confidence intervals and Welch's t-test of the
difference, and ``server.simreport`` draws the HTML report.
"""

from __future__ import annotations

import argparse
import json
import math
import multiprocessing
import os
import sys
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from sim.params import Params, ParamsError, load_params
from sim.step import Inputs, step
from sim.world import FLAG_DEAD, KIND_NPC, KIND_PLAYER, World

__all__ = ["BEHAVIORS", "SimStats", "add_sim_parser", "build_report", "format_report",
           "format_table", "run_seeds", "run_sim"]

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
    mean_spawn_to_death_s: float | None  # over ended lives; None without deaths
    mean_speed: float  # live players, averaged over ticks and players
    shots: int
    hits: int
    hit_rate: float | None  # hits / shots, None without shots
    ticks_per_second: float  # wall clock: the only field that varies run to run
    lives_s: tuple[float, ...] = ()  # each ended life, spawn/respawn -> death, seconds
    kills_per_player: tuple[int, ...] = ()  # kills (players + NPCs), one per player

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
    life_ticks: list[np.ndarray] = []
    kills_by_slot = np.zeros(world.capacity, dtype=np.int64)
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
            np.add.at(kills_by_slot, ev.kills_killer[by_player], 1)
            dead = ev.kills_victim[victims_players]
            deaths += dead.size
            life_ticks.append(ev.tick - spawn_tick[dead])
        up = slots[(world.flags[slots] & FLAG_DEAD) == 0]
        if up.size:
            v = world.vel[up].astype(np.float64)
            speed_sum += float(np.sqrt((v * v).sum(axis=1)).sum())
            speed_samples += up.size
    elapsed = clock() - started
    rate = params.tick_rate
    lives = np.concatenate(life_ticks) / rate if life_ticks else np.zeros(0)
    return SimStats(
        behavior=behavior, seed=seed, players=players, npcs=params.npc_count, ticks=ticks,
        tick_rate=rate, sim_seconds=ticks / rate,
        kills=player_kills + npc_kills, player_kills=player_kills, npc_kills=npc_kills,
        deaths=deaths,
        mean_spawn_to_death_s=float(lives.mean()) if deaths else None,
        mean_speed=speed_sum / speed_samples if speed_samples else 0.0,
        shots=shots, hits=hits, hit_rate=hits / shots if shots else None,
        ticks_per_second=ticks / elapsed if elapsed > 0 else float("inf"),
        lives_s=tuple(lives.tolist()),
        kills_per_player=tuple(kills_by_slot[slots].tolist()),
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
        ("mean time spawn -> death", fmt(stats.mean_spawn_to_death_s, " s")),
        ("mean player speed", fmt(stats.mean_speed, " units/s")),
        ("shots / hits", f"{stats.shots} / {stats.hits}"),
        ("hit rate", "n/a" if stats.hit_rate is None else f"{stats.hit_rate:.1%}"),
        ("ticks per second", fmt(stats.ticks_per_second)),
    ]
    width = max(len(k) for k, _ in rows)
    return "\n".join(f"{k:<{width}}  {v}" for k, v in rows)


def run_seeds(params: Params, seeds: Sequence[int], *, ticks: int, players: int,
              behavior: str = "wander", jobs: int = 1,
              against: Params | None = None) -> tuple[list[SimStats], list[SimStats]]:
    """``run_sim`` once per seed for ``params`` (and for ``against`` when given), in up to
    ``jobs`` worker processes. Returns (runs of params, runs of against) in seed order;
    each run equals ``run_sim`` with that seed in this process."""
    sets = [params] if against is None else [params, against]
    tasks = [(p, seed) for p in sets for seed in seeds]
    kwargs = {"ticks": ticks, "players": players, "behavior": behavior}
    workers = max(1, min(jobs, len(tasks)))
    if workers == 1:
        results = [run_sim(p, seed=seed, **kwargs) for p, seed in tasks]
    else:
        # spawn, not fork: the caller may hold threads (an event loop, a test runner), and
        # a forked child would inherit their locks mid-use.
        ctx = multiprocessing.get_context("spawn")
        with ProcessPoolExecutor(max_workers=workers, mp_context=ctx) as pool:
            futures = [pool.submit(run_sim, p, seed=seed, **kwargs) for p, seed in tasks]
            results = [f.result() for f in futures]
    n = len(seeds)
    return results[:n], results[n:]


def _side(label: str, params: Params, runs: list[SimStats], players: int) -> dict[str, Any]:
    from server.simstats import METRICS, summarize

    used = sim_params(params, players, runs[0].seed).to_dotted() if runs else {}
    used.pop("world.seed", None)  # one per run: see config.seeds
    return {
        "file": label,
        "params": used,
        "summary": {m: summarize([getattr(r, m) for r in runs]).to_json() for m in METRICS},
        "runs": [asdict(r) for r in runs],
    }


def build_report(*, ticks: int, players: int, behavior: str, seeds: Sequence[int],
                 jobs: int, candidate: tuple[str, Params, list[SimStats]],
                 base: tuple[str, Params, list[SimStats]] | None = None) -> dict[str, Any]:
    """The JSON report of a multi-seed run: config, metric names, each file's parameters,
    summaries and runs, and (with a base) the comparison of every metric."""
    # scipy loads here, not when `tickwire serve` builds its argument parser.
    from server.simstats import METRICS, compare

    report: dict[str, Any] = {
        "config": {"ticks": ticks, "players": players, "behavior": behavior,
                   "seeds": list(seeds), "jobs": jobs,
                   "sim_seconds": candidate[2][0].sim_seconds if candidate[2] else None},
        "metrics": {m: {"label": label, "unit": unit} for m, (label, unit) in METRICS.items()},
        "candidate": _side(candidate[0], candidate[1], candidate[2], players),
    }
    if base is not None:
        report["base"] = _side(base[0], base[1], base[2], players)
        report["comparison"] = {
            m: compare([getattr(r, m) for r in candidate[2]],
                       [getattr(r, m) for r in base[2]]).to_json() for m in METRICS}
        cand, other = report["candidate"]["params"], report["base"]["params"]
        report["params_changed"] = {k: {"candidate": cand[k], "base": other[k]}
                                    for k in cand if cand[k] != other[k]}
    return report


def _num(value: float | None, digits: int = 3) -> str:
    if value is None:
        return "n/a"
    return f"{value:,.{digits}f}"


def _with_ci(summary: dict[str, Any]) -> str:
    if summary["mean"] is None:
        return "n/a"
    ci = summary["ci95"]
    interval = f" [{_num(ci[0], 2)}, {_num(ci[1], 2)}]" if ci else ""
    return f"{_num(summary['mean'], 2)}{interval}"


def format_report(report: dict[str, Any]) -> str:
    """The multi-seed report as a text table: mean [95 % CI] per file, the difference with
    its interval and p-value, ``*`` where p < 0.05."""
    cfg = report["config"]
    lines = [f"{len(cfg['seeds'])} seeds ({cfg['seeds'][0]}..{cfg['seeds'][-1]}), "
             f"{cfg['players']} {cfg['behavior']} players, {cfg['ticks']} ticks each; "
             "mean [95% CI] over seeds"]
    has_base = "base" in report
    header = ["metric", "candidate"]
    if has_base:
        header += ["base", "difference", "p"]
        lines.insert(0, f"candidate: {report['candidate']['file']}   "
                        f"base: {report['base']['file']}")
        changed = report.get("params_changed") or {}
        if changed:
            lines.insert(1, "changed: " + ", ".join(
                f"{k} {v['base']} -> {v['candidate']}" for k, v in changed.items()))
    rows = [header]
    for m, meta in report["metrics"].items():
        unit = f" ({meta['unit']})" if meta["unit"] else ""
        row = [meta["label"] + unit, _with_ci(report["candidate"]["summary"][m])]
        if has_base:
            c = report["comparison"][m]
            row.append(_with_ci(report["base"]["summary"][m]))
            if c["diff"] is None:
                row += ["n/a", "n/a"]
            else:
                ci = c["ci95"]
                diff = f"{c['diff']:+,.2f}" + (f" [{ci[0]:+,.2f}, {ci[1]:+,.2f}]" if ci else "")
                row += [diff + (" *" if c["significant"] else ""),
                        "n/a" if c["p"] is None else f"{c['p']:.3g}"]
        rows.append(row)
    widths = [max(len(r[i]) for r in rows) for i in range(len(header))]
    lines += ["  ".join(cell.ljust(w) for cell, w in zip(r, widths, strict=True)).rstrip()
              for r in rows]
    if has_base:
        lines.append("* the difference is significant (Welch's t-test, p < 0.05)")
    return "\n".join(lines)


def _write_json(target: str, data: dict[str, Any]) -> None:
    text = json.dumps(data, indent=2)
    if target == "-":
        print(text)
    else:
        Path(target).write_text(text + "\n")


def run_sim_command(args: argparse.Namespace) -> int:
    try:
        params = load_params(args.params)
        base = load_params(args.against) if args.against else None
    except (ParamsError, OSError) as exc:
        print(f"tickwire sim: {exc}", file=sys.stderr)
        return 2
    label = args.params or "built-in defaults"
    seeds = list(range(args.seed, args.seed + args.seeds))
    quiet = args.json == "-"
    if args.seeds == 1 and base is None:
        try:
            stats = run_sim(params, ticks=args.ticks, players=args.players,
                            behavior=args.behavior, seed=args.seed)
        except ParamsError as exc:
            print(f"tickwire sim: {exc}", file=sys.stderr)
            return 2
        used = sim_params(params, args.players, args.seed).to_dotted()
        data = {**asdict(stats), "params_file": label, "params": used}
        if not quiet:
            print(format_table(stats))
        if args.json:
            _write_json(args.json, data)
        if args.html:
            report = build_report(ticks=args.ticks, players=args.players,
                                  behavior=args.behavior, seeds=seeds, jobs=1,
                                  candidate=(label, params, [stats]))
            _write_html(args.html, report)
        return 0
    jobs = args.jobs or min(len(seeds) * (2 if base else 1), os.cpu_count() or 1)
    try:
        runs, base_runs = run_seeds(params, seeds, ticks=args.ticks, players=args.players,
                                    behavior=args.behavior, jobs=jobs, against=base)
    except ParamsError as exc:
        print(f"tickwire sim: {exc}", file=sys.stderr)
        return 2
    report = build_report(ticks=args.ticks, players=args.players, behavior=args.behavior,
                          seeds=seeds, jobs=jobs, candidate=(label, params, runs),
                          base=(args.against, base, base_runs) if base else None)
    if not quiet:
        print(format_report(report))
    if args.json:
        _write_json(args.json, report)
    if args.html:
        _write_html(args.html, report)
    return 0


def _write_html(target: str, report: dict[str, Any]) -> None:
    from server.simreport import render_html  # matplotlib loads only for --html

    Path(target).write_text(render_html(report), encoding="utf-8")


def add_sim_parser(sub: argparse._SubParsersAction) -> None:
    def positive(text: str) -> int:
        value = int(text)
        if value <= 0:
            raise argparse.ArgumentTypeError(f"{value} is not a positive integer")
        return value

    p = sub.add_parser("sim", help="run the simulation headless with scripted players and "
                                   "report balance statistics")
    p.add_argument("--params", metavar="FILE", help="sim parameters TOML (default: built in)")
    p.add_argument("--against", metavar="BASE.toml",
                   help="also run the same seeds with BASE.toml and compare: each metric's "
                        "difference with its 95%% CI, marked where Welch's t-test finds it "
                        "significant")
    p.add_argument("--ticks", type=positive, default=30 * 60, metavar="N",
                   help="ticks to simulate (default 1800 = 60 s at 30 Hz)")
    p.add_argument("--players", type=positive, default=16, metavar="P",
                   help="scripted players (default 16)")
    p.add_argument("--behavior", choices=sorted(BEHAVIORS), default="wander",
                   help="how the players act (default wander)")
    p.add_argument("--seed", type=int, default=1, metavar="S",
                   help="seeds the world and the behaviours; same seed, same stats (default 1)")
    p.add_argument("--seeds", type=positive, default=1, metavar="N",
                   help="run seeds S..S+N-1 and report means with 95%% confidence intervals "
                        "(default 1)")
    p.add_argument("--jobs", type=positive, default=0, metavar="J",
                   help="worker processes for --seeds/--against (default: one per CPU, "
                        "at most one per run)")
    p.add_argument("--json", metavar="OUT", help="also write the statistics as JSON to OUT "
                                                 "('-': only JSON, to stdout)")
    p.add_argument("--html", metavar="FILE",
                   help="write a report with charts (time alive, kills per player, and "
                        "the A/B comparison with --against) to FILE")
    p.set_defaults(func=run_sim_command)
