"""Benchmarks of one ``Room.tick(now)`` in the arena scenario, everything in memory.

M players (50 or 200) have joined; each sends one Input per tick, a unit direction that
changes every 60 inputs (the arena's client), acking the tick before the newest so every
snapshot is a delta against a baseline 2 ticks old (~67 ms of RTT at 30 Hz). The timed
part is the tick alone: expire seats, apply inputs, step the sim, quantise, push into
the history, encode per distinct baseline, build every seat's delivery. The inputs are
submitted in the untimed setup of each round; ``submit`` has its own benchmark.

Figures are data, never asserts; see bench/README.md for the targets.

Run: .venv/bin/pytest bench/test_bench_room.py --benchmark-enable --benchmark-only
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pytest
from pytest_benchmark.fixture import BenchmarkFixture

from proto import tickwire_pb2 as pb
from server.room import Room, TickResult
from sim.params import Params

WARMUP_TICKS = 10  # enough for every seat to have an ack in the ring
ROUNDS = 200  # ~6.7 s of game: spans NPC turn ticks (every 60) like a real run
DIRECTION_CHANGE_INPUTS = 60


class Bots:
    """M in-memory clients that steer in random directions and ack 2 ticks back."""

    def __init__(self, room: Room, players: int, seed: int = 5) -> None:
        self.room = room
        self.rng = np.random.default_rng(seed)
        self.ids = list(range(1, players + 1))
        for pid in self.ids:
            room.join(pid, f"bot{pid}", now=0.0)
        self.angle = self.rng.uniform(0.0, 2.0 * math.pi, players)
        self.seq = 0  # every bot sends in lockstep, so one counter serves them all

    def now(self) -> float:
        """The time of the room's next tick, in seconds."""
        return (self.room.tick_number + 1) / self.room.params.tick_rate

    def submit_all(self) -> None:
        self.seq += 1
        if self.seq % DIRECTION_CHANGE_INPUTS == 0:
            self.angle = self.rng.uniform(0.0, 2.0 * math.pi, len(self.ids))
        ack = max(0, self.room.tick_number - 1)
        for pid, angle in zip(self.ids, self.angle, strict=True):
            self.room.submit(
                pid,
                pb.Input(
                    ack_tick=ack,
                    cmds=[
                        pb.InputCmd(
                            seq=self.seq,
                            client_tick=self.room.tick_number + 1,
                            move_x=math.cos(angle),
                            move_y=math.sin(angle),
                            aim=float(angle),
                        )
                    ],
                ),
            )

    def setup_round(self) -> tuple[tuple[float], dict[str, Any]]:
        """pytest-benchmark's untimed per-round setup: the inputs of one tick arrive."""
        self.submit_all()
        return (self.now(),), {}


def warm_room(params: Params, players: int) -> Bots:
    bots = Bots(Room("bench", params), players)
    for _ in range(WARMUP_TICKS):
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


@pytest.mark.parametrize("players", [50, 200], ids=lambda m: f"{m}-players")
def test_bench_room_tick(benchmark: BenchmarkFixture, arena_params: Params, players: int) -> None:
    bots = warm_room(arena_params, players)
    result = benchmark.pedantic(bots.room.tick, setup=bots.setup_round, rounds=ROUNDS, iterations=1)
    record_tick(benchmark, bots, result)
    # Sanity, outside the timing: every bot got a delta against a baseline 2 ticks old.
    assert len(result.deliveries) == players
    assert not any(d.keyframe for d in result.deliveries)
    assert (
        pb.ServerFrame.FromString(result.deliveries[0].snapshot_shared).snapshot.baseline_tick
        == result.tick - 2
    )


@pytest.mark.parametrize("players", [50, 200], ids=lambda m: f"{m}-players")
def test_bench_room_submit_one_input_per_player(
    benchmark: BenchmarkFixture, arena_params: Params, players: int
) -> None:
    """The per-tick cost of queueing M Input frames (already parsed) between ticks."""
    bots = warm_room(arena_params, players)

    def tick_between_rounds() -> tuple[tuple[()], dict[str, Any]]:
        bots.room.tick(bots.now())  # untimed: drain the queues like a real tick would
        return (), {}

    benchmark.pedantic(bots.submit_all, setup=tick_between_rounds, rounds=ROUNDS, iterations=1)
    benchmark.extra_info["players"] = players
    assert bots.room.inputs_rejected == {}
    assert bots.room.inputs_dropped == 0
