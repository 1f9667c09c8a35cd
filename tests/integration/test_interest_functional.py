"""Interest management against a real server and real WebSocket clients on 127.0.0.1: two
players far apart on a big world do not see each other, then do once one walks over; what
each client holds is the server's state; the bytes are far below the whole world's."""

from __future__ import annotations

import math

import aiohttp
import numpy as np

from client_demo.client import Client
from tests.integration.conftest import make_params, wait_until

RADIUS, MARGIN, CELL = 300.0, 50.0, 150.0


def _params():
    return make_params(**{
        "world.width": 4500.0, "world.height": 4500.0, "world.seed": 7,
        "world.capacity": 3400, "npc.count": 3000, "npc.speed": 40.0,
        "player.max_speed": 1800.0, "player.accel": 100000.0, "projectile.enabled": False,
        "interest.enabled": True, "interest.radius": RADIUS, "interest.margin": MARGIN,
        "interest.cell": CELL, "interest.budget_kbps": 0.0})


def _sees(client: Client, slot: int) -> bool:
    state = client.mirror.state
    return slot < len(state) and state["kind"][slot] != 0


async def test_far_players_do_not_see_each_other_until_one_walks_over_functional(
        start_server):
    running = await start_server(_params())
    async with Client(running.ws_url, "walker") as a, Client(running.ws_url, "waiter") as b:
        for _ in range(5):
            await a.next_snapshot()
            await b.next_snapshot()
            await a.send_input(0.0, 0.0)
            await b.send_input(0.0, 0.0)
        welcome = a.welcome
        assert welcome.HasField("interest") and welcome.pos_scale == 8
        assert a.mirror.chunked is not None
        ax, ay = a.own_position()
        bx, by = b.own_position()
        # world.seed 7 spawns them thousands of units apart, far beyond radius + margin.
        assert math.hypot(ax - bx, ay - by) > 3 * (RADIUS + MARGIN + CELL)
        assert not _sees(a, b.entity) and not _sees(b, a.entity)
        room = next(iter(running.gateway.lobby.rooms.values()))
        assert 0 < np.count_nonzero(a.mirror.state["kind"]) < 400  # a neighbourhood only

        # Walk a towards b (bounded: a few seconds at 1800 units/s).
        async def step() -> bool:
            x, y = a.own_position()
            dx, dy = bx - x, by - y
            dist = math.hypot(dx, dy)
            if dist > 40:
                await a.send_input(dx / dist, dy / dist)
            else:
                await a.send_input(0.0, 0.0)
            await b.send_input(0.0, 0.0)
            await a.next_snapshot()
            return _sees(a, b.entity) and _sees(b, a.entity)

        for _ in range(30 * 8):
            if await step():
                break
        assert _sees(a, b.entity) and _sees(b, a.entity)

        # What a client holds for the newest tick equals the server's state of that tick.
        await a.send_input(0.0, 0.0)
        await a.next_snapshot()
        slots, words, as_of = a.mirror.chunked.view()
        assert (as_of == a.mirror.tick).all()  # no budget: every cell every tick
        server = room.history.get(a.mirror.tick)
        assert server is not None
        assert np.array_equal(words, server.view("<u2").reshape(-1, 8)[slots])
        assert a.stats.decode_errors == 0 and b.stats.decode_errors == 0

        # Bytes: a chunked snapshot against the whole world's one-tick deltas (what every
        # client gets without interest management) over the ticks the server still keeps.
        tick = room.tick_number
        ticks = [t for t in range(tick - 62, tick + 1)
                 if room.history.get(t) is not None and room.history.get(t - 1) is not None]
        whole = np.mean([len(room.history.payload_for(t, t - 1)[0]) for t in ticks])
        per_snapshot = b.stats.bytes_in / max(1, b.stats.frames_in)
        print(f"interest {per_snapshot:.0f} B/snapshot, whole world {whole:.0f} B/snapshot")
        assert per_snapshot * 3 < whole, (per_snapshot, whole)


async def test_a_budget_keeps_far_cells_fresh_within_a_second_functional(start_server):
    params = _params().with_changes({"interest.budget_kbps": 2.0, "interest.radius": 600.0})
    running = await start_server(params)
    async with Client(running.ws_url, "solo") as c:
        for _ in range(45):
            await c.send_input(0.0, 0.0)
            await c.next_snapshot()
        await wait_until(lambda: c.mirror.tick > 60, timeout=10.0)
        room = next(iter(running.gateway.lobby.rooms.values()))
        assert room.interest.oldest_age_s <= 1.0
        slots, words, as_of = c.mirror.chunked.view()
        ages = c.mirror.tick - as_of
        assert ages.max() <= 2 * 30 and (ages > 0).any()  # some far cells wait, not forever
        for t in np.unique(as_of).tolist():
            server = room.history.get(t)
            if server is not None:
                at = as_of == t
                assert np.array_equal(words[at], server.view("<u2").reshape(-1, 8)[slots[at]])
        assert c.stats.decode_errors == 0
        samples = await running.metrics()
        ages = [v for k, v in samples.items()
                if k.startswith("tickwire_interest_oldest_age_seconds{")]
        assert len(ages) == 1 and 0.0 <= ages[0] <= 1.0
        async with aiohttp.ClientSession() as http, \
                http.get(running.http_url + "/rooms") as resp:
            rooms = await resp.json()
        summary = rooms[0]["interest"]
        assert summary["radius"] == 600.0 and summary["budget_kbps"] == 2.0
        assert 0.0 <= summary["oldest_age_s"] <= 1.0 and summary["chunks_sent"] > 0
