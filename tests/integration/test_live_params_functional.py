"""Live parameters with one source of truth, against a real gateway on 127.0.0.1: bad admin
bodies are 400s that name the problem (never 500s); with a parameters file an admin change
is written into the file (comments kept) and applied by reading it back, so an unrelated
save keeps it and a restart of a real `tickwire serve` loads it; restart-only keys are
refused; the event stream reports each change and file error with the running version."""

from __future__ import annotations

import asyncio
import json
import os
import socket
from pathlib import Path

import aiohttp
import pytest

from server.admin import MAX_BODY_BYTES
from server.liveparams import LIVE_PARAMS_KEY
from server.nodeproc import TICKWIRE, ServerProcess, free_port
from sim.params import load_params
from tests.integration.conftest import make_params, wait_until

TOKEN = "s3cret-admin-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
REJECTED = 'tickwire_params_updates_total{result="rejected",source="admin"}'

PARAMS_TEXT = """\
# Designer's arena: comments and layout must survive an admin change.

[player]
max_speed = 220.0   # units/s, the one we keep tuning
hp = 100

[npc]
count = 0           # restart-only
speed = 50.0        # units/s
"""


async def post(url: str, *, json_body: object = None, data: bytes | None = None,
               headers: dict | None = None) -> tuple[int, dict]:
    async with aiohttp.ClientSession() as http, http.post(
            url + "/admin/params", json=json_body, data=data,
            headers={**AUTH, **(headers or {})}) as resp:
        return resp.status, await resp.json()


async def get_params(url: str) -> dict:
    async with aiohttp.ClientSession() as http, \
            http.get(url + "/admin/params", headers=AUTH) as resp:
        assert resp.status == 200
        return await resp.json()


def save(path: Path, text: str) -> None:
    """An editor's save: new text and an mtime no earlier save can have had."""
    path.write_text(text)
    st = os.stat(path)
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 10_000_000_000))


# -- bad bodies --------------------------------------------------------------------------

HUGE = "9" * 400
NESTED_100K = "[" * 100_000 + "]" * 100_000  # 200 KB: over the size limit
NESTED_20K = "[" * 20_000 + "]" * 20_000  # 40 KB: within it, deep enough to exhaust the stack


@pytest.mark.parametrize("body, status, message", [
    (f'{{"player.max_speed": {HUGE}}}', 400, "player.max_speed = 99999999"),
    (f'{{"player.hp": {HUGE}}}', 400, "player.hp = 99999999"),
    (NESTED_100K, 413, "at most 65536"),
    (NESTED_20K, 400, "nested too deeply"),
    ('{"player": ' * 5_000 + "1" + "}" * 5_000, 400, "nested too deeply"),
    ('{"player": {"max_speed": 250}, "player.max_speed": 260}', 400,
     "player.max_speed is given twice, as 'player.max_speed' and as 'player.max_speed'"),
    ('{"player_max_speed": 250, "player.max_speed": 260}', 400,
     "player.max_speed is given twice, as 'player_max_speed' and as 'player.max_speed'"),
    ('{"player.hp": 90, "player.hp": 91}', 400, "player.hp is given twice"),
    ('{"projectile.damage": ""}', 400, "projectile.damage is empty; expected int"),
    ('{"projectile.damage": null}', 400, "projectile.damage = None has type NoneType"),
    ('{"projectile.damage": "abc"}', 400, "projectile.damage = 'abc' has type str"),
    ('{"player.max_speed": NaN}', 400, "NaN is not a JSON number"),
    ('{"player.max_speed": Infinity}', 400, "Infinity is not a JSON number"),
    ('{"world.tick_rate": 60}', 400, "world.tick_rate only apply when the server starts"),
    ('{"player.max_speed": 1}' + " " * MAX_BODY_BYTES, 413, "at most 65536"),
    (b'{"player.hp": "\xff"}', 400, "not JSON"),
])
async def test_bad_admin_bodies_are_refused_with_a_reason_never_a_500_functional(
        start_server, body, status, message):
    running = await start_server(make_params(**{"npc.count": 0}),
                                 config_overrides={"admin_token": TOKEN})
    data = body if isinstance(body, bytes) else body.encode()
    got, answer = await post(running.http_url, data=data,
                             headers={"Content-Type": "application/json"})
    assert got == status, answer
    assert message in answer["error"], answer["error"]
    assert len(answer["error"]) < 300  # a huge value is cut, not echoed
    assert running.gateway.params_version == 1
    assert await running.metric(REJECTED) == 1
    # The server is fine afterwards: a good change still applies.
    got, answer = await post(running.http_url, json_body={"player.hp": 90})
    assert got == 200 and answer["version"] == 2


# -- the file is the truth ---------------------------------------------------------------

async def test_admin_change_is_written_into_the_file_and_survives_an_unrelated_save_functional(
        start_server, tmp_path):
    f = tmp_path / "arena.toml"
    f.write_text(PARAMS_TEXT)
    running = await start_server(load_params(f), config_overrides={
        "admin_token": TOKEN, "params_path": f})
    gateway = running.gateway

    status, body = await post(running.http_url, json_body={"player": {"max_speed": 260}})
    assert status == 200, body
    assert body["persisted"] is True and body["file"] == str(f)
    assert body["version"] == 2 == gateway.params_version
    assert body["changed"] == {"player.max_speed": 260.0}
    assert gateway.params.player_max_speed == 260.0
    # Only that value changed in the file; its comment and every other line stayed.
    assert f.read_text() == PARAMS_TEXT.replace("max_speed = 220.0", "max_speed = 260.0")

    # The designer saves an unrelated line of the file: the admin value stays.
    save(f, f.read_text().replace("speed = 50.0", "speed = 70.0"))
    await wait_until(lambda: gateway.params_version == 3)
    assert gateway.params.npc_speed == 70.0
    assert gateway.params.player_max_speed == 260.0

    # A key the file does not have yet is added to its table.
    status, body = await post(running.http_url, json_body={"npc.hp": 75})
    assert status == 200 and body["version"] == 4
    assert "[npc]" in f.read_text() and load_params(f).npc_hp == 75

    # What GET says is what runs.
    state = await get_params(running.http_url)
    assert state["version"] == gateway.params_version == 4
    assert state["values"]["player.max_speed"] == 260.0
    assert state["persisted"] is True and state["file_error"] is None


async def test_admin_change_on_a_broken_file_is_refused_and_the_file_untouched_functional(
        start_server, tmp_path):
    f = tmp_path / "arena.toml"
    f.write_text(PARAMS_TEXT)
    running = await start_server(load_params(f), config_overrides={
        "admin_token": TOKEN, "params_path": f})
    broken = PARAMS_TEXT.replace("hp = 100", "hp = -5")
    save(f, broken)
    live = running.server.app[LIVE_PARAMS_KEY]
    await wait_until(lambda: live.file_error is not None)
    status, body = await post(running.http_url, json_body={"player.max_speed": 300})
    assert status == 400
    assert "fix the file first" in body["error"] and "player.hp = -5" in body["error"]
    assert f.read_text() == broken
    assert running.gateway.params.player_max_speed == 220.0


async def test_event_stream_reports_version_changes_and_file_errors_functional(
        start_server, tmp_path):
    f = tmp_path / "arena.toml"
    f.write_text(PARAMS_TEXT)
    running = await start_server(load_params(f), config_overrides={
        "admin_token": TOKEN, "params_path": f})
    events: list[tuple[str, dict]] = []

    async with aiohttp.ClientSession() as http:
        async with http.get(running.http_url + "/admin/events") as resp:
            assert resp.status == 401
        async with http.get(running.http_url + "/admin/events", headers=AUTH) as resp:
            assert resp.status == 200
            assert resp.headers["Content-Type"].startswith("text/event-stream")

            async def read_event() -> tuple[str, dict]:
                kind, data = "", ""
                while True:
                    line = (await asyncio.wait_for(resp.content.readline(), 5.0)).decode()
                    if line.startswith("event: "):
                        kind = line[7:].strip()
                    elif line.startswith("data: "):
                        data = line[6:]
                    elif line == "\n" and kind:
                        events.append((kind, json.loads(data)))
                        return events[-1]

            kind, first = await read_event()
            assert kind == "state" and first["state"]["version"] == 1
            assert first["state"]["file"] == str(f)

            save(f, PARAMS_TEXT.replace("max_speed = 220.0", "max_speed = 240.0"))
            kind, ev = await read_event()
            assert kind == "applied" and ev["source"] == "file"
            assert ev["changed"] == {"player.max_speed": 240.0}
            assert ev["state"]["version"] == 2

            save(f, PARAMS_TEXT.replace("max_speed = 220.0", "max_speed = 9000.0"))
            kind, ev = await read_event()
            assert kind == "file_error"
            assert "player.max_speed = 9000.0 is out of range" in ev["error"]
            assert ev["state"]["version"] == 2 and ev["state"]["file_error"] == ev["error"]

            status, _body = await post(running.http_url, json_body={"player.hp": 120})
            # The broken file refuses the admin change too; fixing the file applies it.
            assert status == 400
            save(f, PARAMS_TEXT.replace("count = 0 ", "count = 5 "))
            kind, ev = await read_event()
            assert kind == "applied" and ev["state"]["version"] == 3
            assert ev["state"]["file_error"] is None
            assert ev["changed"] == {"player.max_speed": 220.0}
            # npc.count is restart-only: held as pending, not applied.
            assert ev["state"]["pending_restart"] == {"npc.count": 5}
            assert running.gateway.params.npc_count == 0


async def test_without_a_file_admin_changes_say_they_are_not_persisted_functional(
        start_server):
    running = await start_server(make_params(**{"npc.count": 0}),
                                 config_overrides={"admin_token": TOKEN})
    status, body = await post(running.http_url, json_body={"player.max_speed": 300})
    assert status == 200 and body["persisted"] is False and body["version"] == 2
    state = await get_params(running.http_url)
    assert state["persisted"] is False and state["file"] is None
    assert state["values"]["player.max_speed"] == 300.0


# -- a real restart ----------------------------------------------------------------------

def test_admin_change_survives_a_restart_of_tickwire_serve_functional(tmp_path):
    import urllib.request

    if not TICKWIRE.exists():
        pytest.skip(f"{TICKWIRE} is missing (run make install)")
    f = tmp_path / "arena.toml"
    f.write_text(PARAMS_TEXT)
    srv = ServerProcess(port=free_port(), log_path=tmp_path / "serve.log",
                        extra_args=["--params", str(f), "--admin-token", TOKEN])

    def call(method: str, body: dict | None = None) -> dict:
        req = urllib.request.Request(srv.base_url + "/admin/params", method=method,
                                     headers={**AUTH, "Content-Type": "application/json"},
                                     data=json.dumps(body).encode() if body else None)
        with urllib.request.urlopen(req, timeout=5.0) as resp:
            return json.loads(resp.read())

    with srv:
        answer = call("POST", {"player.max_speed": 260})
        assert answer["persisted"] is True and answer["version"] == 2
        assert call("GET")["values"]["player.max_speed"] == 260.0
        srv.restart()
        after = call("GET")
        assert after["values"]["player.max_speed"] == 260.0
        assert after["version"] == 1  # a new process counts from 1
    assert "max_speed = 260.0   # units/s, the one we keep tuning" in f.read_text()


async def test_an_admin_event_stream_that_stops_reading_is_cut_functional(start_server):
    """A page that stops reading (asleep, a stuck proxy) fills the socket buffers and blocks
    the stream's write; the stall bound cuts it (counted, logged), and streams still open."""
    running = await start_server(make_params(**{"npc.count": 0}), config_overrides={
        "admin_token": TOKEN, "admin_stall_s": 0.5})
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.setblocking(False)
    loop = asyncio.get_running_loop()
    name = "tickwire_admin_streams_cut_total"
    try:
        await loop.sock_connect(sock, ("127.0.0.1", running.port))
        await loop.sock_sendall(sock, b"GET /admin/events HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                                      b"Authorization: Bearer " + TOKEN.encode() + b"\r\n\r\n")
        # ...and never reads. Large events (64 KiB each) fill the socket buffers quickly.
        live = running.server.app[LIVE_PARAMS_KEY]
        for _ in range(400):
            if (await running.metrics()).get(name, 0) == 1:
                break
            live.feed.publish({"event": "applied", "padding": "x" * 65536})
            await asyncio.sleep(0.02)
        else:
            raise AssertionError("the stalled admin stream was not cut after 400 events")
    finally:
        sock.close()
    async with aiohttp.ClientSession() as http, \
            http.get(running.http_url + "/admin/events", headers=AUTH) as resp:
        assert resp.status == 200
        line = await asyncio.wait_for(resp.content.readline(), 5.0)
        assert line.startswith(b"event: state")

