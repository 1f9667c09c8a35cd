"""Live parameters and the admin API against a real gateway on 127.0.0.1: tokens, validation,
a change reaching connected clients (Params frame + snapshot version) without dropping
them, the parameters file watched and applied, and the kick route."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import aiohttp
import pytest

from client_demo.client import Client
from proto import tickwire_pb2 as pb
from server.admin import KICK_REASON
from tests.integration.conftest import make_params, wait_until

TOKEN = "s3cret-admin-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


class VersionClient(Client):
    """A client that also remembers the params version of Params frames and snapshots."""

    params_frames: list[int]
    snapshot_versions: list[int]

    def _on_frame(self, data: bytes) -> None:
        frame = pb.ServerFrame()
        frame.ParseFromString(data)
        kind = frame.WhichOneof("kind")
        if not hasattr(self, "params_frames"):
            self.params_frames, self.snapshot_versions = [], []
        if kind == "params":
            self.params_frames.append(frame.params.version)
        elif kind == "snapshot":
            self.snapshot_versions.append(frame.snapshot.params_version)
        super()._on_frame(data)


async def request(method: str, url: str, *, headers: dict | None = None,
                  json: object = None, data: bytes | None = None
                  ) -> tuple[int, object]:
    async with aiohttp.ClientSession() as http, http.request(
            method, url, headers=headers, json=json, data=data) as resp:
        body = await resp.json() if resp.content_type == "application/json" \
            else await resp.text()
        return resp.status, body


async def start_admin(start_server, **overrides):
    return await start_server(make_params(**{"npc.count": 0}),
                              config_overrides={"admin_token": TOKEN, **overrides})


async def test_admin_routes_are_off_without_a_token_functional(start_server):
    running = await start_server()
    for method, path in (("GET", "/admin/params"), ("POST", "/admin/params"),
                         ("GET", "/admin"), ("POST", "/admin/rooms/r1/kick/1")):
        status, _ = await request(method, running.http_url + path, headers=AUTH)
        assert status == 404, path


async def test_admin_api_needs_the_right_bearer_token_functional(start_server):
    running = await start_admin(start_server)
    url = running.http_url + "/admin/params"
    for headers in (None, {"Authorization": "Bearer wrong"}, {"Authorization": TOKEN},
                    {"Authorization": f"Basic {TOKEN}"}):
        status, _ = await request("GET", url, headers=headers)
        assert status == 401, headers
        status, _ = await request("POST", url, headers=headers, json={"player.hp": 90})
        assert status == 401, headers
    assert running.gateway.params.player_hp == 100
    status, page = await request("GET", running.http_url + "/admin")
    assert status == 200 and "<form" in page  # the page itself needs no token


async def test_get_params_returns_version_values_and_schema_functional(start_server):
    running = await start_admin(start_server)
    status, body = await request("GET", running.http_url + "/admin/params", headers=AUTH)
    assert status == 200
    assert body["version"] == 1
    assert body["values"]["player.max_speed"] == 220.0
    speed = body["schema"]["player.max_speed"]
    assert speed["min"] == 1.0 and speed["max"] == 2000.0 and speed["unit"] == "units/s"
    assert speed["type"] == "float" and speed["live"] is True and speed["doc"]
    assert body["schema"]["world.tick_rate"]["live"] is False
    assert set(body["values"]) == set(body["schema"])


@pytest.mark.parametrize("payload, message", [
    ({"player.max_speed": 99999}, "player.max_speed = 99999.0 is out of range [1.0, 2000.0]"),
    ({"player.maxspeed": 10}, "unknown parameter 'player.maxspeed'"),
    ({"player.hp": "lots"}, "expected int"),
    ([1, 2], "JSON object"),
])
async def test_post_params_rejects_invalid_changes_with_the_reason_functional(
        start_server, payload, message):
    running = await start_admin(start_server)
    status, body = await request("POST", running.http_url + "/admin/params", headers=AUTH,
                                 json=payload)
    assert status == 400 and message in body["error"]
    assert running.gateway.params_version == 1
    status, body = await request("POST", running.http_url + "/admin/params", headers=AUTH,
                                 data=b"{not json")
    assert status == 400 and "JSON" in body["error"]


async def test_a_live_change_reaches_connected_clients_who_stay_connected_functional(
        start_server):
    running = await start_admin(start_server)
    async with VersionClient(running.ws_url, "a") as a, VersionClient(running.ws_url, "b") as b:
        await a.next_snapshot()
        await b.next_snapshot()
        assert a.snapshot_versions[-1] == 1

        status, body = await request("POST", running.http_url + "/admin/params",
                                     headers=AUTH, json={"player.max_speed": 300})
        assert status == 200
        assert body["version"] == 2 and body["changed"] == {"player.max_speed": 300.0}
        # No parameters file: applied in memory, and the answer says it is not kept.
        assert body["persisted"] is False and body["file"] is None

        for c in (a, b):
            await wait_until(lambda c=c: c.params_frames == [2] and c.snapshot_versions[-1] == 2)
            assert c.params.player_max_speed == pytest.approx(300.0)
            await c.next_snapshot()  # still connected, still ticking
            assert not c.closed.is_set()
        room = next(iter(running.gateway.lobby.rooms.values()))
        assert room.params.player_max_speed == 300.0
        status, body = await request("GET", running.http_url + "/admin/params", headers=AUTH)
        assert body["version"] == 2 and body["values"]["player.max_speed"] == 300.0

    # A room created after the change starts with the current params and version.
    running.gateway.lobby.rooms.clear()
    async with VersionClient(running.ws_url, "late") as late:
        await late.next_snapshot()
        assert late.welcome.params_version == 2
        assert late.params.player_max_speed == pytest.approx(300.0)


async def test_kick_closes_the_socket_with_1008_and_frees_the_seat_functional(start_server):
    running = await start_admin(start_server)
    async with Client(running.ws_url, "victim") as victim, Client(running.ws_url, "other") as other:
        await victim.next_snapshot()
        room_id = victim.welcome.room
        base = running.http_url + "/admin/rooms"
        assert (await request("POST", f"{base}/nope/kick/{victim.player_id}",
                              headers=AUTH))[0] == 404
        assert (await request("POST", f"{base}/{room_id}/kick/999", headers=AUTH))[0] == 404
        assert (await request("POST", f"{base}/{room_id}/kick/x", headers=AUTH))[0] == 404
        assert (await request("POST", f"{base}/{room_id}/kick/{victim.player_id}"))[0] == 401

        status, _ = await request("POST", f"{base}/{room_id}/kick/{victim.player_id}",
                                  headers=AUTH)
        assert status == 200
        code, _reason = await victim.wait_closed()
        assert code == 1008
        assert victim.kick is not None and victim.kick.reason == KICK_REASON
        room = running.gateway.lobby.rooms[room_id]
        assert victim.player_id not in room.seats
        await other.next_snapshot()
        assert not other.closed.is_set()


def write_params(path: Path, text: str, mtime_s: float) -> None:
    path.write_text(text)
    os.utime(path, (mtime_s, mtime_s))  # distinct mtimes even within the fs granularity


async def test_a_saved_params_file_applies_live_and_a_bad_one_is_rejected_functional(
        start_server, tmp_path, caplog):
    caplog.set_level(logging.INFO, logger="tickwire")
    f = tmp_path / "params.toml"
    write_params(f, "[npc]\ncount = 0\n", 1_000_000.0)
    running = await start_server(make_params(**{"npc.count": 0}),
                                 config_overrides={"params_path": f})
    gateway = running.gateway
    async with VersionClient(running.ws_url, "a") as a:
        await a.next_snapshot()

        write_params(f, "[npc]\ncount = 0\n[player]\nmax_speed = 280.0\n", 1_000_010.0)
        await wait_until(lambda: gateway.params_version == 2)
        assert gateway.params.player_max_speed == 280.0
        await wait_until(lambda: a.params_frames == [2])

        write_params(f, "[npc]\ncount = 0\n[player]\nmax_speed = 5000.0\n", 1_000_020.0)
        await wait_until(lambda: "player.max_speed = 5000.0 is out of range" in caplog.text)
        assert gateway.params_version == 2 and gateway.params.player_max_speed == 280.0

        write_params(f, "[npc]\ncount = 3\n[player]\nmax_speed = 280.0\n", 1_000_030.0)
        await wait_until(lambda: "only apply after a restart" in caplog.text
                         and "npc.count" in caplog.text)
        assert gateway.params_version == 2 and gateway.params.npc_count == 0
        await a.next_snapshot()
        assert not a.closed.is_set()
