"""Benchmarks of interest management (issue 16), everything in memory.

A world of E entities (10k on 8000×8000, 50k on 16000×16000: the same density) moving in
straight lines that turn every 60 ticks, and 200 clients spread uniformly, each acking 2
ticks back (~67 ms of RTT at 30 Hz):

- ``test_interest_pass``: the grid assignment of every entity plus every client's interest
  cells (hysteresis) and send schedule under a byte allowance (``RoomCells``, all clients
  at once) — the per-tick bookkeeping before any encoding.
- ``test_chunked_tick``: one world step (moving and quantising the E entities) and one
  ``InterestRoom.deliveries`` — grid, every client's acks/cells/removals/schedule (whole-room
  array passes), the batch encode of every distinct (cell, baseline) chunk, and every
  client's personal part; ``extra_info`` has the chunks encoded and sent per tick and the
  bytes per client per tick (with the 8 KiB/s budget of bigworld).
- ``test_whole_world_tick`` (contrast, no interest management): the one whole-world delta
  every client would get, encoded once per tick, and its size per client.

Figures are data, never asserts; see bench/README.md.

Run: .venv/bin/pytest bench/test_bench_interest.py --benchmark-enable --benchmark-only
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from pytest_benchmark.fixture import BenchmarkFixture

from proto import codec
from server.interestroom import InterestRoom
from sim.params import Params

RATE = 30
CLIENTS = 200
SIZES = {10_000: 8000.0, 50_000: 16000.0}
WARMUP = 70  # ticks: past the 64-tick history ring, so rounds measure the steady state
LAG = 2


class _World:
    def __init__(self, entities: int, width: float, seed: int = 3) -> None:
        self.rng = np.random.default_rng(seed)
        self.width = width
        self.n = entities
        self.pos = self.rng.uniform(0, width, (entities, 2)).astype(np.float32)
        self.vel = self.rng.uniform(-50, 50, (entities, 2)).astype(np.float32)
        self.alive = np.ones(entities, dtype=bool)
        self.kind = np.full(entities, 2, dtype=np.uint8)
        self.kind[:CLIENTS] = 1
        self.scale = codec.pos_scale_for(width, width)
        self.tick = 0

    def step(self) -> np.ndarray:
        self.tick += 1
        if self.tick % 60 == 0:
            self.vel = self.rng.uniform(-50, 50, (self.n, 2)).astype(np.float32)
        self.pos += self.vel / RATE
        bounce = (self.pos < 0) | (self.pos > self.width)
        self.vel[bounce] *= -1
        np.clip(self.pos, 0, self.width, out=self.pos)
        n = self.n
        return codec.quantize(pos=self.pos, vel=self.vel, hp=np.full(n, 60), score=np.zeros(n),
                              kind=self.kind, gen=np.ones(n), aim=np.zeros(n),
                              flags=np.zeros(n, dtype=np.uint8), alive=self.alive,
                              pos_scale=self.scale)


def _params(width: float) -> Params:
    return Params().with_changes({
        "world.width": width, "world.height": width, "npc.count": 0,
        "interest.enabled": True, "interest.radius": 400.0, "interest.cell": 200.0,
        "interest.near": 100.0, "interest.margin": 50.0, "interest.budget_kbps": 8.0})


def _room(entities: int) -> tuple[_World, InterestRoom, codec.SnapshotHistory]:
    width = SIZES[entities]
    world = _World(entities, width)
    history = codec.SnapshotHistory(64, RATE, world.scale)
    room = InterestRoom(_params(width), entities, history)
    for row in range(CLIENTS):
        room.join(row)
    return world, room, history


_NO_HITS = (np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64))
_ROWS = list(range(CLIENTS))


def _tick(world: _World, room: InterestRoom, history: codec.SnapshotHistory) -> list[Any]:
    state = world.step()
    history.push(world.tick, state)
    acks = [max(0, world.tick - LAG)] * CLIENTS
    return room.deliveries(world.tick, state, world.pos, world.alive, _ROWS, _ROWS, acks,
                           _NO_HITS)


@pytest.mark.parametrize("entities", list(SIZES))
def test_interest_pass(benchmark: BenchmarkFixture, entities: int) -> None:
    world, room, _ = _room(entities)
    rows = np.arange(CLIENTS)
    world.step()
    kept: list[float] = []

    def one() -> None:
        room.grid.assign(world.pos, world.alive)
        centres = world.pos[:CLIENTS].astype(np.float64)
        keys, keep, dist = room.cells.update(rows, centres)
        est = np.full(keys.shape, 40, dtype=np.int64)
        room.cells.schedule(world.tick, rows, keys, keep, dist, est, np.full(CLIENTS, 273.0),
                            keep)
        kept.append(float(keep.sum(axis=1).mean()))

    benchmark(one)
    benchmark.extra_info["cells_per_client"] = float(np.mean(kept))


@pytest.mark.parametrize("entities", list(SIZES))
def test_chunked_tick(benchmark: BenchmarkFixture, entities: int) -> None:
    world, room, history = _room(entities)
    for _ in range(WARMUP):
        _tick(world, room, history)
    before = (room.encodes, room.chunks_sent)
    sizes: list[int] = []
    rounds = 0

    def one() -> None:
        nonlocal rounds
        parts = _tick(world, room, history)
        rounds += 1
        sizes.extend(sum(map(len, p.chunks)) + len(p.personal) + 24 for p in parts)

    benchmark.pedantic(one, rounds=30, iterations=1)
    info = benchmark.extra_info
    info["chunks_encoded_per_tick"] = (room.encodes - before[0]) / rounds
    info["chunks_sent_per_tick"] = (room.chunks_sent - before[1]) / rounds
    info["bytes_per_client_per_tick"] = float(np.mean(sizes))
    info["kib_per_client_per_s"] = float(np.mean(sizes)) * RATE / 1024


@pytest.mark.parametrize("entities", list(SIZES))
def test_whole_world_tick(benchmark: BenchmarkFixture, entities: int) -> None:
    world = _World(entities, SIZES[entities])
    history = codec.SnapshotHistory(64, RATE, world.scale)
    for _ in range(WARMUP):
        history.push(world.tick + 1, world.step())
    sizes: list[int] = []

    def one() -> None:
        state = world.step()
        history.push(world.tick, state)
        payload, _ = history.payload_for(world.tick, world.tick - LAG)
        sizes.append(len(payload) + 24)

    benchmark.pedantic(one, rounds=30, iterations=1)
    benchmark.extra_info["bytes_per_client_per_tick"] = float(np.mean(sizes))
    benchmark.extra_info["kib_per_client_per_s"] = float(np.mean(sizes)) * RATE / 1024
