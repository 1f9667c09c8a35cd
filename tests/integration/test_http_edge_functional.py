"""The HTTP edge against a real server on 127.0.0.1: malformed Origin/Host headers, the
static allow-list, /rooms names behind the admin token, the per-tick JSON cache."""

from __future__ import annotations

import asyncio
import base64
import logging
import os

import aiohttp
import pytest

from client_demo.client import Client
from server.metrics import parse_metrics
from server.routes import HTTP_CACHE_KEY
from tests.integration.conftest import wait_until

ADMIN = "edge-admin-token-0123456789"


async def raw_upgrade(port: int, headers: dict[str, str], path: str = "/ws") -> tuple[int, str]:
    """Send an upgrade request with exactly these extra headers (aiohttp's client would
    refuse to send malformed ones); (status, whole response text)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        lines = [f"GET {path} HTTP/1.1", "Upgrade: websocket", "Connection: Upgrade",
                 f"Sec-WebSocket-Key: {base64.b64encode(os.urandom(16)).decode()}",
                 "Sec-WebSocket-Version: 13"]
        headers = {"Host": f"127.0.0.1:{port}", **headers}
        lines += [f"{k}: {v}" for k, v in headers.items()]
        writer.write(("\r\n".join(lines) + "\r\n\r\n").encode())
        await writer.drain()
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
        status = int(head.split(b" ", 2)[1])
        body = b""
        if status != 101:
            body = await asyncio.wait_for(reader.read(4096), 5)
        return status, (head + body).decode(errors="replace")
    finally:
        writer.close()


MALFORMED = [
    # (headers, status, label)
    ({"Origin": "http://127.0.0.1:abc"}, 400, "origin_malformed"),
    ({"Origin": "http://[::1"}, 400, "origin_malformed"),
    ({"Origin": "http://a:99999"}, 400, "origin_malformed"),
    ({"Origin": "http://127.0.0.1:1", "Host": "a:b"}, 400, "host_malformed"),
    ({"Origin": "http://x", "Host": "[::1"}, 400, "host_malformed"),
]


@pytest.mark.parametrize(("headers", "status", "label"), MALFORMED,
                         ids=[f"{h}" for h, _, _ in MALFORMED])
async def test_a_malformed_origin_or_host_gets_400_and_a_counted_label_functional(
        start_server, caplog, headers, status, label):
    running = await start_server()
    got, text = await raw_upgrade(running.port, headers)
    assert got == status, text
    assert "Traceback" not in text and "500" not in text.split("\r\n")[0]
    assert await running.metric(
        f'tickwire_handshakes_rejected_total{{reason="{label}"}}') == 1
    assert await running.metric("tickwire_connections_total") == 0
    assert not [r for r in caplog.records if r.exc_info], "a traceback was logged"
    # The server still serves a well-formed upgrade afterwards.
    ok, _ = await raw_upgrade(running.port, {"Origin": running.http_url})
    assert ok == 101


async def test_malformed_origins_are_charged_to_the_per_ip_rate_functional(start_server):
    running = await start_server(config_overrides={"connects_per_ip_per_s": 0.01,
                                                   "connect_burst_per_ip": 3})
    statuses = [(await raw_upgrade(running.port, {"Origin": "http://[::1"}))[0]
                for _ in range(5)]
    assert statuses == [400, 400, 400, 429, 429]
    # ... and a well-formed attempt from the same address is refused too: no way around.
    assert (await raw_upgrade(running.port, {}))[0] == 429
    assert await running.metric('tickwire_handshakes_rejected_total{reason="ip_rate"}') == 3


async def test_a_pinned_public_origin_ignores_the_host_header_functional(start_server):
    running = await start_server(config_overrides={"public_origin": "https://game.example"})
    # DNS rebinding: the page's origin and the Host header agree, and are not ours.
    rebound = {"Origin": "http://evil.example:8080", "Host": "evil.example:8080"}
    assert (await raw_upgrade(running.port, rebound))[0] == 403
    assert (await raw_upgrade(running.port, {"Origin": "https://game.example"}))[0] == 101
    unpinned = await start_server()
    rebound = {"Origin": f"http://evil.example:{unpinned.port}",
               "Host": f"evil.example:{unpinned.port}"}
    assert (await raw_upgrade(unpinned.port, rebound))[0] == 101  # the documented gap


async def get(url: str, headers: dict[str, str] | None = None) -> tuple[int, bytes]:
    async with aiohttp.ClientSession() as http, http.get(url, headers=headers) as resp:
        return resp.status, await resp.read()


async def test_only_the_clients_own_files_are_served_functional(start_server):
    running = await start_server()
    base = running.http_url
    for path in ("/", "/main.js", "/style.css", "/codec.js", "/gen/tickwire.json",
                 "/vendor/protobufjs/light/protobuf.min.js"):
        status, body = await get(base + path)
        assert status == 200 and body, path
    for path in ("/package.json", "/package-lock.json", "/node_modules/protobufjs/package.json",
                 "/vendor/protobufjs/../package.json", "/vendor/protobufjs/%2e%2e/package.json",
                 "/tools/gen_wire.mjs", "/.gitignore", "/gen/../package.json"):
        status, body = await get(base + path)
        assert status == 404, (path, status)
        assert b'"name"' not in body


async def test_rooms_shows_names_only_with_the_admin_token_or_the_flag_functional(
        start_server):
    running = await start_server(config_overrides={"admin_token": ADMIN})
    async with Client(running.ws_url, "alice") as alice:
        await alice.next_snapshot()
        _, anon = await get(running.http_url + "/rooms")
        _, wrong = await get(running.http_url + "/rooms",
                             {"Authorization": "Bearer not-the-token"})
        _, admin = await get(running.http_url + "/rooms", {"Authorization": f"Bearer {ADMIN}"})
    assert b"alice" not in anon and b"alice" not in wrong
    assert b'"name":"alice"' in admin
    public = await start_server(config_overrides={"public_player_names": True})
    async with Client(public.ws_url, "bob") as bob:
        await bob.next_snapshot()
        _, body = await get(public.http_url + "/rooms")
    assert b'"name":"bob"' in body


async def test_rooms_and_healthz_are_built_at_most_once_per_tick_functional(start_server):
    running = await start_server()
    cache = running.server.app[HTTP_CACHE_KEY]
    async with Client(running.ws_url, "alice") as alice:
        await alice.next_snapshot()
        room = next(iter(running.gateway.lobby.rooms.values()))
        before_builds, before_tick = cache.builds, room.tick_number
        async with aiohttp.ClientSession() as http:
            for _ in range(60):
                async with http.get(running.http_url + "/rooms") as resp:
                    assert resp.status == 200
                    await resp.read()
        ticks = room.tick_number - before_tick
        # One build per tick at most (+1: the tick in progress when the loop began).
        assert cache.builds - before_builds <= ticks + 1


async def test_each_disconnect_is_logged_with_its_code_and_side_functional(start_server,
                                                                           caplog):
    running = await start_server()
    caplog.set_level(logging.INFO, logger="tickwire")
    async with Client(running.ws_url, "leaver") as leaver:
        await leaver.next_snapshot()
        player = leaver.player_id
    async with aiohttp.ClientSession() as http, http.ws_connect(running.ws_url) as ws:
        await ws.send_str("text is refused")
        msg = await ws.receive(timeout=5)
        while msg.type not in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED):
            msg = await ws.receive(timeout=5)

    def lines() -> list[logging.LogRecord]:
        return [r for r in caplog.records if r.getMessage().startswith("disconnected")]

    await wait_until(lambda: len(lines()) >= 2)
    by_client = next(r for r in lines() if r.player == player)
    assert by_client.by == "client" and by_client.code == 1000
    assert by_client.peer.startswith("127.0.0.1:")
    refused = next(r for r in lines() if r.player == 0)
    assert refused.by == "server" and refused.code == 1003


async def test_the_grafana_dashboard_queries_exist_on_a_live_metrics_page_functional(
        start_server):
    from tests.unit.test_grafana_dashboard import dashboard_families, exposed_families

    running = await start_server()
    async with Client(running.ws_url, "viewer") as viewer:
        await viewer.next_snapshot()
        _, body = await get(running.http_url + "/metrics")
    types = exposed_families(body.decode())
    missing = dashboard_families(types) - set(types)
    assert not missing, missing
    samples = parse_metrics(body.decode())
    assert any(k.startswith("tickwire_room_players{") for k in samples)
    assert "tickwire_created" not in body.decode() and "_created" not in body.decode()
