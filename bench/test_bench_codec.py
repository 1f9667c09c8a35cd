"""Benchmarks of the snapshot codec on the arena's 1,000 NPCs (pytest-benchmark).

Figures are data, never asserts; see bench/README.md for the targets. Each benchmark does
check, outside the timed part, that what it measured decodes to the right state.

Run: .venv/bin/pytest bench/test_bench_codec.py --benchmark-enable --benchmark-only
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pytest
from pytest_benchmark.fixture import BenchmarkFixture

from proto import codec
from proto import tickwire_pb2 as pb
from sim.params import Params
from sim.step import Inputs, step
from sim.world import KIND_NPC, World

# Ticks 1..60 follow the turn at tick 0, so every NPC moves in a straight line (bouncing
# off walls) until tick 61: steady state for deltas. The turn tick is the worst case.
STEADY_TICK = 40
TURN_TICK = 61
CYCLE_TICKS = 120  # two full turn cycles, for the mean over a realistic stream


@dataclass(frozen=True)
class Stream:
    """Quantised snapshots by tick, exactly as ``Room`` builds them from the real sim."""

    states: dict[int, np.ndarray]
    tick_rate: int
    moving_fraction: float

    def moving(self, tick: int) -> int:
        """Live entities with a nonzero (quantised) velocity at `tick`."""
        s = self.states[tick]
        return int(np.count_nonzero((s["kind"] != 0) & ((s["vx"] != 0) | (s["vy"] != 0))))

    def delta(self, tick: int, age: int) -> bytes:
        return codec.encode(
            self.states[tick], self.states[tick - age], elapsed_ticks=age, tick_rate=self.tick_rate
        )


def quantize(world: World) -> np.ndarray:
    return codec.quantize(
        pos=world.pos,
        vel=world.vel,
        hp=world.hp,
        score=world.score,
        kind=world.kind,
        gen=world.gen,
        aim=world.aim,
        flags=world.flags,
        alive=world.alive,
    )


def arena_stream(params: Params, moving_fraction: float, ticks: int) -> Stream:
    """Step the arena world `ticks` times; a fixed (seeded) set of NPCs is held still so
    that exactly `moving_fraction` of them move."""
    world = World.create(params)
    npcs = world.slots_of(KIND_NPC)
    rng = np.random.default_rng(3)
    still = rng.permutation(npcs)[: round(len(npcs) * (1.0 - moving_fraction))]
    inputs = Inputs.empty(world.capacity)
    states = {0: quantize(world)}
    for _ in range(ticks):
        step(world, inputs)
        world.vel[still] = 0.0  # undo the turn for the still ones: they never move
        states[world.tick] = quantize(world)
    return Stream(states, params.tick_rate, moving_fraction)


# Session scope: each stream is stepped once, then shared by every benchmark.
@pytest.fixture(scope="session", params=[1.0, 0.1], ids=["100pct-moving", "10pct-moving"])
def stream(request: pytest.FixtureRequest, arena_params: Params) -> Stream:
    return arena_stream(arena_params, request.param, CYCLE_TICKS + 4)


def record_delta_size(
    benchmark: BenchmarkFixture, stream: Stream, payload: bytes, tick: int
) -> None:
    moving = stream.moving(tick)
    benchmark.extra_info["entities"] = int(np.count_nonzero(stream.states[tick]["kind"]))
    benchmark.extra_info["moving_entities"] = moving
    benchmark.extra_info["payload_bytes"] = len(payload)
    benchmark.extra_info["bytes_per_moving_entity"] = round(len(payload) / max(moving, 1), 3)
    benchmark.extra_info["deflated"] = bool(payload[0] & codec.FLAG_DEFLATE)


@pytest.mark.parametrize("age", [1, 2, 4], ids=lambda a: f"baseline-{a}-old")
def test_bench_delta_encode_1k(benchmark: BenchmarkFixture, stream: Stream, age: int) -> None:
    state, baseline = stream.states[STEADY_TICK], stream.states[STEADY_TICK - age]
    payload = benchmark(
        codec.encode, state, baseline, elapsed_ticks=age, tick_rate=stream.tick_rate
    )
    record_delta_size(benchmark, stream, payload, STEADY_TICK)
    assert codec.states_equal(codec.decode(payload, baseline), state)


def test_bench_delta_encode_1k_turn_tick(benchmark: BenchmarkFixture, stream: Stream) -> None:
    """The worst tick of the arena: every moving NPC picked a new direction at once."""
    state, baseline = stream.states[TURN_TICK], stream.states[TURN_TICK - 2]
    payload = benchmark(codec.encode, state, baseline, elapsed_ticks=2, tick_rate=stream.tick_rate)
    record_delta_size(benchmark, stream, payload, TURN_TICK)
    # The stream a client really sees: one delta per tick against a baseline 2 ticks old,
    # turn ticks included, as bytes per entity per snapshot (the scenario's metric).
    sizes = [len(stream.delta(t, 2)) for t in range(3, CYCLE_TICKS + 3)]
    entities = int(np.count_nonzero(state["kind"]))
    benchmark.extra_info["cycle_mean_bytes_per_entity"] = round(float(np.mean(sizes)) / entities, 3)
    assert codec.states_equal(codec.decode(payload, baseline), state)


def test_bench_delta_encode_and_serialize_1k(benchmark: BenchmarkFixture, stream: Stream) -> None:
    """Encode plus the shared ``ServerFrame`` bytes, as ``Room`` builds them per baseline."""
    state, baseline = stream.states[STEADY_TICK], stream.states[STEADY_TICK - 2]
    rate = stream.tick_rate

    def encode_and_serialize() -> bytes:
        payload = codec.encode(state, baseline, elapsed_ticks=2, tick_rate=rate)
        return pb.ServerFrame(
            snapshot=pb.Snapshot(
                tick=STEADY_TICK,
                baseline_tick=STEADY_TICK - 2,
                params_version=1,
                payload=payload,
                server_time=STEADY_TICK / rate,
            )
        ).SerializeToString()

    raw = benchmark(encode_and_serialize)
    snap = pb.ServerFrame.FromString(raw).snapshot
    record_delta_size(benchmark, stream, snap.payload, STEADY_TICK)
    benchmark.extra_info["frame_bytes"] = len(raw)
    assert codec.states_equal(codec.decode(snap.payload, baseline), state)


def test_bench_delta_decode_1k(benchmark: BenchmarkFixture, stream: Stream) -> None:
    state, baseline = stream.states[STEADY_TICK], stream.states[STEADY_TICK - 2]
    payload = stream.delta(STEADY_TICK, 2)
    decoded = benchmark(codec.decode, payload, baseline)
    record_delta_size(benchmark, stream, payload, STEADY_TICK)
    assert codec.states_equal(decoded, state)


def test_bench_keyframe_encode_1k(benchmark: BenchmarkFixture, stream: Stream) -> None:
    state = stream.states[STEADY_TICK]
    payload = benchmark(codec.encode, state, None, tick_rate=stream.tick_rate)
    entities = int(np.count_nonzero(state["kind"]))
    benchmark.extra_info["entities"] = entities
    benchmark.extra_info["keyframe_bytes"] = len(payload)
    benchmark.extra_info["keyframe_bytes_per_entity"] = round(len(payload) / entities, 3)
    assert codec.states_equal(codec.decode(payload, None), state)


def test_bench_keyframe_decode_1k(benchmark: BenchmarkFixture, stream: Stream) -> None:
    state = stream.states[STEADY_TICK]
    payload = codec.encode(state, None, tick_rate=stream.tick_rate)
    decoded = benchmark(codec.decode, payload, None)
    benchmark.extra_info["keyframe_bytes"] = len(payload)
    assert codec.states_equal(decoded, state)
