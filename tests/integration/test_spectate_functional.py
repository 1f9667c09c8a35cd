"""Spectators against real servers on 127.0.0.1: the replay app serves a recording's info
and frames (and only the page's files); `tickwire replay FILE --serve` runs it; a live
room streams one frame per tick to a spectator who takes no seat."""

from __future__ import annotations

import asyncio
import json
import subprocess
import time
import urllib.request

import aiohttp
import pytest
from aiohttp.test_utils import TestServer

from client_demo.client import Client
from server.gateway import GATEWAY_KEY, GatewayConfig, build_app
from server.nodeproc import TICKWIRE, free_port
from server.session import SessionLimits
from server.spectate import ReplayTimeline
from server.spectate_routes import build_replay_app
from sim.world import KIND_PLAYER
from tests.integration.conftest import make_params
from tests.unit.test_recording import play, recorded_room


@pytest.fixture
def recording(tmp_path):
    room, recorder = recorded_room(tmp_path)
    room.join(7, "a", 0.0)
    room.join(8, "b", 0.0)
    play(room, 90)
    recorder.close()
    (path,) = recorder.files
    return path


async def get(url: str) -> tuple[int, object]:
    async with aiohttp.ClientSession() as http, http.get(url) as resp:
        body = await resp.json() if resp.content_type == "application/json" \
            else await resp.text()
        return resp.status, body


async def test_replay_app_serves_info_frames_and_only_the_client_files_functional(recording):
    server = TestServer(build_replay_app(ReplayTimeline.load(recording)), host="127.0.0.1",
                        port=0)
    await server.start_server()
    try:
        base = f"http://127.0.0.1:{server.port}"
        status, info = await get(base + "/replay/info")
        assert status == 200
        assert (info["start_tick"], info["end_tick"], info["tick_rate"]) == (0, 90, 30)
        assert [p["player_id"] for p in info["players"]] == [7, 8]
        status, body = await get(base + "/replay/frames?from=10&count=5")
        assert status == 200 and [f["tick"] for f in body["frames"]] == [10, 11, 12, 13, 14]
        players = [row for row in body["frames"][0]["e"] if row[1] == KIND_PLAYER]
        assert sorted(row[9] for row in players) == [7, 8]  # owner column: player ids
        for bad in ("from=x", "count=0", "count=1e3"):
            assert (await get(base + f"/replay/frames?{bad}"))[0] == 400, bad
        status, page = await get(base + "/")
        assert status == 200 and 'id="seek"' in page
        assert (await get(base + "/replay.js"))[0] == 200
        assert (await get(base + "/render.js"))[0] == 200
        # ...and what they import (the client's own allow-list), nothing else.
        assert (await get(base + "/events.js"))[0] == 200
        assert (await get(base + "/gen/wire.js"))[0] == 200
        for other in ("/package.json", "/package-lock.json", "/../pyproject.toml"):
            assert (await get(base + other))[0] == 404, other
    finally:
        await server.close()


def test_replay_serve_command_serves_the_file_functional(recording, tmp_path):
    if not TICKWIRE.exists():
        pytest.skip(f"{TICKWIRE} is missing (run make install)")
    port = free_port()
    log = (tmp_path / "replay.log").open("wb")
    proc = subprocess.Popen([str(TICKWIRE), "replay", str(recording), "--serve",
                             "--port", str(port)], stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 20.0
        info = None
        while time.monotonic() < deadline and info is None:
            assert proc.poll() is None, (tmp_path / "replay.log").read_text()
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/replay/info",
                                            timeout=2.0) as resp:
                    info = json.loads(resp.read())
            except OSError:
                time.sleep(0.1)
        assert info is not None, "the replay server did not answer within 20 s"
        assert info["end_tick"] == 90 and info["file"] == str(recording)
    finally:
        proc.terminate()
        proc.wait(timeout=10)
        log.close()
    assert "serving" in (tmp_path / "replay.log").read_text()


def test_replay_serve_refuses_a_bad_file(tmp_path, capsys):
    from server.cli import main

    bad = tmp_path / "bad.rec"
    bad.write_bytes(b"nope")
    assert main(["replay", str(bad), "--serve"]) == 2
    assert "not a Tickwire recording" in capsys.readouterr().err


async def test_a_live_spectator_gets_a_frame_per_tick_and_takes_no_seat_functional():
    params = make_params(**{"npc.count": 3})
    # Names are shown to spectators under the same rule as /rooms: here the flag.
    app = build_app(GatewayConfig(params=params,
                                  limits=SessionLimits.for_tick_rate(params.tick_rate),
                                  public_player_names=True))
    server = TestServer(app, host="127.0.0.1", port=0)
    await server.start_server()
    gateway = app[GATEWAY_KEY]
    base = f"http://127.0.0.1:{server.port}"
    try:
        async with Client(f"ws://127.0.0.1:{server.port}/ws", "player") as player:
            await player.next_snapshot()
            room_id = player.welcome.room
            assert (await get(base + "/spectate/nope"))[0] == 404
            status, info = await get(base + f"/spectate/{room_id}")
            assert status == 200 and info["players"][0]["name"] == "player"

            frames, names = [], []
            async with aiohttp.ClientSession() as http, \
                    http.get(base + f"/spectate/{room_id}/events") as resp:
                assert resp.headers["Content-Type"].startswith("text/event-stream")
                kind = None
                while len(frames) < 10:
                    line = (await asyncio.wait_for(resp.content.readline(), 5.0)).decode()
                    if line.startswith("event: "):
                        kind = line[7:].strip()
                    elif line.startswith("data: "):
                        (frames if kind == "frame" else names).append(json.loads(line[6:]))
                    await player.send_input(1.0, 0.0)
                room = gateway.lobby.rooms[room_id]
                assert list(room.seats) == [player.player_id]  # the spectator has no seat
            ticks = [f["tick"] for f in frames]
            assert ticks == sorted(set(ticks))  # one frame per tick, in order
            assert names[0][0]["player_id"] == player.player_id
            mine = [row for row in frames[-1]["e"] if row[1] == KIND_PLAYER]
            assert [row[9] for row in mine] == [player.player_id]
            await player.next_snapshot()  # the player played on
    finally:
        await server.close()
