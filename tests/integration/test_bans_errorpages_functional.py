"""A kick keeps the player out for a while; /ws and unknown paths in a browser get a page;
the Python client says Leave when it closes cleanly. Real servers on 127.0.0.1."""

from __future__ import annotations

import aiohttp
import pytest
from aiohttp import web

from client_demo.client import Client, ClientError
from proto import tickwire_pb2 as pb
from server.nodeproc import free_port
from tests.integration.test_admin_functional import AUTH, request, start_admin

HTML = {"Accept": "text/html,application/xhtml+xml,*/*;q=0.8"}


async def test_a_kicked_name_is_refused_until_the_ban_ends_functional(start_server):
    running = await start_admin(start_server, kick_ban_s=30.0)
    base = running.http_url + "/admin/rooms"
    async with Client(running.ws_url, "Victim") as victim:
        await victim.next_snapshot()
        status, body = await request(
            "POST", f"{base}/{victim.welcome.room}/kick/{victim.player_id}", headers=AUTH)
        assert status == 200 and body["banned_s"] == 30.0
        await victim.wait_closed()
    # The same name (any case, any spacing) is refused; the reason says for how long.
    again = Client(running.ws_url, " victim ")
    with pytest.raises(ClientError):
        await again.connect()
    assert again.close_code == 1008
    assert again.close_reason.startswith("kicked by an admin: try again in ")
    await again.close()
    # A plain kick does not ban the address: another player on it still gets in.
    async with Client(running.ws_url, "neighbour") as other:
        await other.next_snapshot()
    status, body = await request("GET", running.http_url + "/admin/bans", headers=AUTH)
    assert status == 200 and [b["kind"] for b in body["bans"]] == ["name"]
    assert body["bans"][0]["value"] == "victim"
    assert (await request("GET", running.http_url + "/admin/bans"))[0] == 401
    # The ban ends: the bans live on the gateway's clock, so move past it.
    running.gateway.lobby.bans.lift(name="victim")
    async with Client(running.ws_url, "victim") as back:
        await back.next_snapshot()


async def test_the_ban_button_bans_the_address_too_functional(start_server):
    running = await start_admin(start_server)
    base = running.http_url + "/admin/rooms"
    async with Client(running.ws_url, "eve") as eve:
        await eve.next_snapshot()
        url = f"{base}/{eve.welcome.room}/kick/{eve.player_id}"
        assert (await request("POST", url + "?ban_s=abc", headers=AUTH))[0] == 400
        assert (await request("POST", url + "?ban_s=-1", headers=AUTH))[0] == 400
        status, body = await request("POST", url + "?ban_s=600", headers=AUTH)
        assert status == 200 and body["banned_s"] == 600.0
        await eve.wait_closed()
    other = Client(running.ws_url, "not-eve")
    with pytest.raises(ClientError):
        await other.connect()
    assert other.close_code == 1008 and "try again in" in other.close_reason
    await other.close()
    # Counted like every other refusal.
    assert await running.metric('tickwire_frames_rejected_total{reason="banned"}') == 1


async def test_ws_opened_in_a_browser_gets_a_page_not_a_raw_error_functional(start_server):
    running = await start_server()
    async with aiohttp.ClientSession() as http:
        async with http.get(running.http_url + "/ws", headers=HTML) as resp:
            body = await resp.text()
            assert resp.status == 426
            assert resp.content_type == "text/html"
            assert resp.headers["Upgrade"] == "websocket"
        assert "WebSocket endpoint" in body and 'href="/"' in body
        assert "UPGRADE hdr" not in body
        # Without Accept: text/html too (curl): still the page, never the raw 400.
        async with http.get(running.http_url + "/ws") as resp:
            assert resp.status == 426
    # The real upgrade is untouched.
    async with Client(running.ws_url, "still-works") as c:
        await c.next_snapshot()


async def test_unknown_paths_get_a_page_for_browsers_and_plain_404_for_programs_functional(
        start_server):
    running = await start_server()
    async with aiohttp.ClientSession() as http:
        async with http.get(running.http_url + "/nonexistent", headers=HTML) as resp:
            body = await resp.text()
            assert resp.status == 404 and resp.content_type == "text/html"
        assert "Tickwire" in body and 'href="/"' in body
        async with http.get(running.http_url + "/nonexistent",
                            headers={"Accept": "application/json"}) as resp:
            assert resp.status == 404
            assert "Tickwire" not in await resp.text()
        async with http.get(running.http_url + "/missing.js", headers=HTML) as resp:
            assert resp.status == 404 and "Tickwire" in await resp.text()
        async with http.get(running.http_url + "/healthz", headers=HTML) as resp:
            assert resp.status == 200


async def test_python_client_sends_leave_on_a_clean_close_only_functional():
    """A stand-in server on loopback that welcomes and records every frame it gets."""
    received: list[str] = []

    async def handler(request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        async for msg in ws:
            frame = pb.ClientFrame()
            frame.ParseFromString(msg.data)
            kind = frame.WhichOneof("kind")
            received.append(kind)
            if kind == "join":
                await ws.send_bytes(pb.ServerFrame(welcome=pb.Welcome(
                    player_id=1, tick_rate=30, entity=0)).SerializeToString())
        return ws

    app = web.Application()
    app.router.add_get("/ws", handler)
    runner = web.AppRunner(app)
    await runner.setup()
    port = free_port()
    site = web.TCPSite(runner, "127.0.0.1", port)
    await site.start()
    url = f"ws://127.0.0.1:{port}/ws"
    try:
        c = Client(url, "leaver", ping_interval_s=0)
        await c.connect()
        await c.close()
        assert received == ["join", "leave"]
        received.clear()
        c = Client(url, "dropper", ping_interval_s=0)
        await c.connect()
        await c.close(code=4000)  # not a clean close: the seat should wait for a resume
        assert received == ["join"]
    finally:
        await runner.cleanup()
