"""Hitscan over a real gateway: a client's view claim travels in InputCmd, the shot is
resolved against that view, both clients get the Shots frame, and /rooms and /metrics
report the rewind. Real aiohttp server on loopback, real WebSocket clients."""

from __future__ import annotations

import math

import aiohttp

from client_demo.client import Client
from proto import tickwire_pb2 as pb
from tests.integration.conftest import make_params, wait_until


async def test_a_view_claim_is_resolved_and_reported_functional(start_server) -> None:
    running = await start_server(make_params(**{
        "npc.count": 0, "weapon.kind": "hitscan", "weapon.range": 2000.0,
        "weapon.cooldown_s": 0.1, "player.hp": 10000}))
    shots_seen: list[pb.Shot] = []

    class ShotClient(Client):
        def _on_frame(self, data: bytes) -> None:
            frame = pb.ServerFrame.FromString(data)
            if frame.WhichOneof("kind") == "shots":
                shots_seen.extend(frame.shots.shots)
            super()._on_frame(data)

    async with ShotClient(running.ws_url, "shooter") as shooter, \
            Client(running.ws_url, "target") as target:
        await shooter.next_snapshot()
        await target.next_snapshot()
        for seq in range(1, 13):  # bounded: 12 ticks of fire with the cooldown at 3 ticks
            tick = await shooter.next_snapshot()
            await target.send_input()
            me = shooter.own_position()
            there = shooter.mirror.position(target.entity)
            assert me is not None and there is not None
            aim = math.atan2(there[1] - me[1], there[0] - me[0])
            cmd = pb.InputCmd(seq=seq, aim=aim, buttons=1, view_tick=tick,
                              view_next_tick=tick, view_blend=0.0)
            await shooter.send_raw(pb.ClientFrame(input=pb.Input(
                ack_tick=shooter.mirror.ack_tick, cmds=[cmd])).SerializeToString())
        await wait_until(lambda: len([s for s in shots_seen if s.shooter == shooter.entity])
                         >= 3)
        mine = [s for s in shots_seen if s.shooter == shooter.entity]
        assert all(s.target == target.entity for s in mine), mine
        assert all(0 < s.rewind_ms <= 250 and not s.clamped for s in mine)

        async with aiohttp.ClientSession() as http, \
                http.get(running.http_url + "/rooms") as resp:
            (room,) = await resp.json()
        hs = room["hitscan"]
        assert hs["shots"] >= 3 and hs["hits"] == hs["shots"] and hs["clamped_share"] == 0.0
        assert hs["rewind_ms_le"]["+Inf"] == hs["shots"]
    # The gateway exports the room's counts in the same tick handler that sent the frames.
    metrics = await running.metrics()
    assert metrics["tickwire_hitscan_shots_total"] >= 3
    assert metrics["tickwire_hitscan_hits_total"] >= 3
    assert metrics["tickwire_hitscan_rewind_seconds_count"] >= 3
