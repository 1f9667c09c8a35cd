"""Record a real session (a gateway on 127.0.0.1, Python clients moving and firing, a live
parameter change midway) and replay the files headless: every state hash must match."""

from __future__ import annotations

import asyncio
import math

from client_demo.client import Client
from server.recording import PARAMS, RecordingConfig, read_records
from server.replay import replay_file
from tests.integration.conftest import make_params, wait_until


async def test_a_recorded_session_replays_with_equal_hashes_functional(start_server, tmp_path):
    running = await start_server(make_params(**{"npc.count": 10}), config_overrides={
        "recording": RecordingConfig(tmp_path, hash_every=10)})
    gateway = running.gateway
    clients = [Client(running.ws_url, f"p{i}") for i in range(3)]
    for c in clients:
        await c.connect()
    try:
        loop = asyncio.get_running_loop()
        start = loop.time()
        step = 0
        while loop.time() - start < 2.0:  # ~2 s of play at the tick rate
            for i, c in enumerate(clients):
                angle = step / 8 + 2 * i
                await c.send_input(math.cos(angle), math.sin(angle), aim=angle % math.pi,
                                   fire=(step + i) % 6 == 0)
            if step == 25:
                gateway.apply_params(gateway.params.with_changes(
                    {"player.max_speed": 300.0, "projectile.damage": 40}))
            step += 1
            await clients[0].next_snapshot()
        await clients[2].close()  # a leave in the middle of the recording
        await wait_until(lambda: gateway.params_version == 2)
        for _ in range(5):
            await clients[0].next_snapshot()
    finally:
        for c in clients:
            await c.close()
    room = next(iter(gateway.lobby.rooms.values()))
    await running.server.close()  # stops the rooms, then closes the recorders
    ticks = room.tick_number

    files = sorted(tmp_path.glob("*.twrec"))
    assert len(files) == 1
    kinds = [r.kind for r in read_records(files[0])]
    assert PARAMS in kinds
    result = replay_file(files[0])
    assert result.ok, result.summary()
    assert result.end_tick == ticks >= 45
    assert result.hashes_checked == ticks // 10


async def test_a_recording_directory_lost_after_startup_costs_no_join_functional(
        start_server, tmp_path, caplog):
    directory = tmp_path / "rec"
    directory.mkdir()
    running = await start_server(config_overrides={"recording": RecordingConfig(directory)})
    directory.rmdir()
    directory.write_text("a regular file now")  # e.g. an operator's mistake
    async with Client(running.ws_url, "first") as first:
        await first.next_snapshot()  # joined and playing: no 1011
    assert await running.metric("tickwire_recording_failures_total") == 1
    lines = [r for r in caplog.records if r.getMessage().startswith("recording stopped")]
    assert len(lines) == 1 and lines[0].exc_info is None


async def test_old_recordings_beyond_the_retention_are_deleted_at_start_functional(
        start_server, tmp_path):
    for i in range(5):
        (tmp_path / f"r{i}-20200101T000000-00001.twrec").write_bytes(b"old")
    running = await start_server(config_overrides={
        "recording": RecordingConfig(tmp_path, retain_files=2)})
    await wait_until(lambda: len(list(tmp_path.glob("*.twrec"))) == 2)
    assert await running.metric("tickwire_recordings_deleted_total") == 3
