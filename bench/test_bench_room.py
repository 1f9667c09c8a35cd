"""Benchmarks of one ``Room.tick(now)`` in the arena scenario, everything in memory.

M players (50 or 200) have joined; each sends one Input per tick, a unit direction that
changes every 60 inputs (the arena's client), acking the tick before the newest so every
snapshot is a delta against a baseline 2 ticks old (~67 ms of RTT at 30 Hz). The timed
part is the tick alone: validate and queue the inputs (``defer_input_checks``), expire
seats, apply inputs, step the sim, quantise, push into the history, encode per baseline,
build every seat's delivery. The inputs are submitted in the untimed setup of each round;
``submit`` has its own benchmarks (µs per parsed ``Input`` frame into the room's buffers).

Each benchmark runs in both input modes: ``at-once`` (each command checked in ``submit``)
and ``deferred`` (checked once per tick in NumPy). ``hostile_acks`` is issue #11 item 5:
31 of the seats each ack their own old tick, every tick; ``extra_info["encodes_per_tick"]``
shows the bound. Before/after ratios against another git ref: ``python -m bench.room_ab``.

Figures are data, never asserts; see bench/README.md for the targets.

Run: .venv/bin/pytest bench/test_bench_room.py --benchmark-enable --benchmark-only
"""

from __future__ import annotations

import math
import time
from typing import Any

import numpy as np
import pytest
from pytest_benchmark.fixture import BenchmarkFixture

from proto import tickwire_pb2 as pb
from server.room import Room, TickResult
from sim.params import Params

MODES = {"at-once": False, "deferred": True}
HOSTILE_LAGS = range(3, 34)  # 31 seats, each acking its own old tick (3..33 back)

WARMUP_TICKS = 10  # enough for every seat to have an ack in the ring
ROUNDS = 200  # ~6.7 s of game: spans NPC turn ticks (every 60) like a real run
DIRECTION_CHANGE_INPUTS = 60


class Bots:
    """M in-memory clients that steer in random directions and ack 2 ticks back (or, for
    the seats in `lags`, their own number of ticks back). Each Input carries the newest
    command and the two before it, as the shipped clients resend unacknowledged ones."""

    def __init__(self, room: Room, players: int, seed: int = 5,
                 lags: dict[int, int] | None = None) -> None:
        self.room = room
        self.rng = np.random.default_rng(seed)
        self.ids = list(range(1, players + 1))
        self.lags = lags or {}
        for pid in self.ids:
            room.join(pid, f"bot{pid}", now=0.0)
        self.angle = self.rng.uniform(0.0, 2.0 * math.pi, players)
        self.seq = 0  # every bot sends in lockstep, so one counter serves them all

    def now(self) -> float:
        """The time of the room's next tick, in seconds."""
        return (self.room.tick_number + 1) / self.room.params.tick_rate

    def frames(self) -> list[pb.Input]:
        """The next Input of every bot (parsed messages, as the gateway hands them over)."""
        self.seq += 1
        if self.seq % DIRECTION_CHANGE_INPUTS == 0:
            self.angle = self.rng.uniform(0.0, 2.0 * math.pi, len(self.ids))
        newest = self.room.tick_number
        out = []
        for pid, angle in zip(self.ids, self.angle, strict=True):
            cmds = [pb.InputCmd(seq=seq, client_tick=newest + 1 - (self.seq - seq),
                                move_x=math.cos(angle), move_y=math.sin(angle),
                                aim=float(angle))
                    for seq in range(max(1, self.seq - 2), self.seq + 1)]
            ack = max(0, newest + 1 - self.lags.get(pid, 2))
            out.append(pb.Input(ack_tick=ack, cmds=cmds))
        return out

    def submit(self, frames: list[pb.Input]) -> None:
        for pid, frame in zip(self.ids, frames, strict=True):
            self.room.submit(pid, frame)

    def submit_all(self) -> None:
        self.submit(self.frames())

    def setup_round(self) -> tuple[tuple[float], dict[str, Any]]:
        """pytest-benchmark's untimed per-round setup: the inputs of one tick arrive."""
        self.submit_all()
        return (self.now(),), {}


def warm_room(params: Params, players: int, *, deferred: bool = False,
              lags: dict[int, int] | None = None, warmup: int = WARMUP_TICKS) -> Bots:
    bots = Bots(Room("bench", params, defer_input_checks=deferred), players, lags=lags)
    for _ in range(warmup):
        bots.submit_all()
        bots.room.tick(bots.now())
    return bots


def record_tick(benchmark: BenchmarkFixture, bots: Bots, result: TickResult) -> None:
    room = bots.room
    entities = int(np.count_nonzero(room.last_state["kind"]))
    snapshot_bytes = [len(d.snapshot_shared) + len(d.snapshot_personal) for d in result.deliveries]
    benchmark.extra_info["players"] = len(bots.ids)
    benchmark.extra_info["entities"] = entities
    benchmark.extra_info["deliveries"] = len(result.deliveries)
    benchmark.extra_info["keyframes"] = sum(d.keyframe for d in result.deliveries)
    benchmark.extra_info["distinct_shared_frames"] = len(
        {id(d.snapshot_shared) for d in result.deliveries}
    )
    benchmark.extra_info["snapshot_bytes_per_client"] = int(np.mean(snapshot_bytes))
    benchmark.extra_info["bytes_per_entity_per_snapshot"] = round(
        float(np.mean(snapshot_bytes)) / entities, 3
    )


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("entities", [1000, 100], ids=lambda e: f"E{e}")
@pytest.mark.parametrize("players", [1, 50, 200], ids=lambda m: f"M{m}")
def test_bench_room_tick(benchmark: BenchmarkFixture, arena_params: Params, players: int,
                         entities: int, mode: str) -> None:
    params = arena_params.with_changes({"npc.count": entities})
    bots = warm_room(params, players, deferred=MODES[mode])
    result = benchmark.pedantic(bots.room.tick, setup=bots.setup_round, rounds=ROUNDS, iterations=1)
    record_tick(benchmark, bots, result)
    # Sanity, outside the timing: every bot got a delta against a baseline 2 ticks old.
    assert len(result.deliveries) == players
    assert not any(d.keyframe for d in result.deliveries)
    assert (
        pb.ServerFrame.FromString(result.deliveries[0].snapshot_shared).snapshot.baseline_tick
        == result.tick - 2
    )
    assert result.input_rejections == []


COLD_ROUNDS = 60  # each round sleeps a tick period first: ~2 s


@pytest.mark.parametrize(("entities", "players"), [(100, 1), (1000, 200)],
                         ids=["E100-M1", "E1000-M200"])
def test_bench_room_tick_after_a_tick_period(benchmark: BenchmarkFixture,
                                             arena_params: Params, entities: int,
                                             players: int) -> None:
    """One tick after a tick period's sleep (untimed), as a live server runs it. During
    the sleep other processes run on the core, so the tick starts with cold caches and
    each NumPy call costs 2-3x what the back-to-back rounds above measure: at E = 100
    with one seat (a room's fixed cost) this, not ``test_bench_room_tick``, is the figure
    a live server's CPU follows."""
    params = arena_params.with_changes({"npc.count": entities})
    bots = warm_room(params, players, deferred=True)

    def after_a_period() -> tuple[tuple[float], dict[str, Any]]:
        time.sleep(1.0 / params.tick_rate)
        return bots.setup_round()

    result = benchmark.pedantic(bots.room.tick, setup=after_a_period, rounds=COLD_ROUNDS,
                                iterations=1)
    record_tick(benchmark, bots, result)
    assert len(result.deliveries) == players
    assert result.input_rejections == []


def ack_lags(acks: str, players: int) -> dict[int, int]:
    """Each seat's ack lag in ticks (2 when absent) for an ack pattern."""
    if acks == "hostile":  # 31 seats, each its own old tick
        return {players - i: lag for i, lag in enumerate(HOSTILE_LAGS)}
    if acks == "rtt_spread":  # honest seats with RTTs from ~30 to ~270 ms: lags 2..9
        return {pid: 2 + pid % 8 for pid in range(1, players + 1)}
    return {}


@pytest.mark.parametrize("acks", ["honest", "rtt_spread", "hostile"])
def test_bench_room_tick_hostile_acks(benchmark: BenchmarkFixture, arena_params: Params,
                                      acks: str) -> None:
    """E = 1000, M = 200; `hostile`: 31 seats each ack their own old tick every tick (the
    probe of issue #11 item 5, which made ticks 3.5x slower); `rtt_spread`: honest seats
    whose RTTs spread their acks over 8 ticks; `honest`: every seat acks the same tick."""
    lags = ack_lags(acks, 200)
    bots = warm_room(arena_params, 200, deferred=True, lags=lags, warmup=max(HOSTILE_LAGS) + 10)
    room = bots.room
    encodes: list[int] = []

    def tick(now: float) -> TickResult:
        before = room.history.encodes
        result = room.tick(now)
        encodes.append(room.history.encodes - before)
        return result

    result = benchmark.pedantic(tick, setup=bots.setup_round, rounds=ROUNDS, iterations=1)
    record_tick(benchmark, bots, result)
    benchmark.extra_info["encodes_per_tick_max"] = max(encodes)
    benchmark.extra_info["encodes_per_tick_mean"] = round(float(np.mean(encodes)), 2)
    benchmark.extra_info["baselines_snapped"] = room.baselines_snapped
    assert max(encodes) <= room._baselines.max_deltas + 1


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("players", [50, 200], ids=lambda m: f"M{m}")
def test_bench_room_submit_one_input_per_player(
    benchmark: BenchmarkFixture, arena_params: Params, players: int, mode: str
) -> None:
    """M ``Room.submit`` calls, one parsed Input (3 commands, 1 new) per seat: the per-tick
    cost of the frames between two ticks. ``extra_info["us_per_submit"]`` is per frame."""
    bots = warm_room(arena_params, players, deferred=MODES[mode])

    def next_frames() -> tuple[tuple[list[pb.Input]], dict[str, Any]]:
        bots.room.tick(bots.now())  # untimed: drain the buffers like a real tick would
        return (bots.frames(),), {}

    benchmark.pedantic(bots.submit, setup=next_frames, rounds=ROUNDS, iterations=1)
    benchmark.extra_info["players"] = players
    if benchmark.stats is not None:
        benchmark.extra_info["us_per_submit"] = round(
            benchmark.stats.stats.median * 1e6 / players, 3)
    bots.room.tick(bots.now())
    assert bots.room.inputs_rejected == {}
    assert bots.room.inputs_dropped == 0
