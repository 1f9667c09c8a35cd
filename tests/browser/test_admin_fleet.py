"""The /admin page's fleet view in headless Chromium: nodes with their load and last
refresh, and every room including private ones, where the admin can kick; on a single
server (a fleet of one) and on a real 2-node fleet with a real redis-server."""

from __future__ import annotations

import json
import signal
import urllib.request
from collections.abc import Iterator

import pytest

from server.nodeproc import TICKWIRE, ServerProcess, free_port

from .conftest import ADMIN_TOKEN, _unavailable

pytestmark = pytest.mark.browser

TW = "window.tickwire"
CONNECTED = f"{TW} && {TW}.connected && {TW}.playerId !== null && {TW}.serverTick > 0"


def log_in(page, token: str = ADMIN_TOKEN) -> None:
    page.wait_for_selector("#login:not([hidden])", timeout=5_000)
    page.fill("#token", token)
    page.click("#login-form button[type=submit]")


def node_rows(page) -> list[list[str]]:
    return page.evaluate("""() => [...document.querySelectorAll('#fleet tr.node')]
        .map(tr => [...tr.querySelectorAll('td')].map(td => td.textContent))""")


def test_single_server_admin_sees_its_node_and_kicks_in_a_private_room(
        admin_new_page, admin_server, artifacts_dir):
    game = admin_new_page("/")
    game.wait_for_selector("#start:not([hidden])")
    game.fill("#start-name", "hidden-one")
    game.click("#create-room")
    game.wait_for_function(CONNECTED)
    room = game.evaluate(f"{TW}.lobby.room")
    admin = admin_new_page("/admin", height=900)
    log_in(admin)
    admin.wait_for_function("document.querySelectorAll('#fleet tr.node').length === 1")
    (row,) = node_rows(admin)
    assert row[0].endswith("(this node)") and row[1] == "this server" and row[2] == "serving"
    assert row[3].split("/")[0].isdigit() and int(row[4]) >= 1
    # The private room is listed with its seat and a Kick button.
    admin.wait_for_selector(f'#rooms .room[data-room="{room}"] .kick-btn')
    card = admin.locator(f'#rooms .room[data-room="{room}"]')
    assert "private" in card.inner_text() and "hidden-one" in card.inner_text()
    admin.screenshot(path=str(artifacts_dir / "admin-fleet-single.png"), full_page=True)
    # The list is rebuilt every second; the seat's Kick button stays the same element, so a
    # press and its release land on one button.
    sel = f'#rooms .room[data-room="{room}"]'
    admin.evaluate(f"""() => {{ const c = document.querySelector('{sel}');
        c.dataset.old = '1'; c.querySelector('.kick-btn').dataset.mark = 'kept'; }}""")
    admin.wait_for_function(f"() => !document.querySelector('{sel}').dataset.old")  # rebuilt
    assert admin.evaluate(f"document.querySelector('{sel} .kick-btn').dataset.mark") == "kept"
    admin.on("dialog", lambda d: d.accept())
    card.locator(".kick-btn").click()
    game.wait_for_selector("#dialog:not([hidden])", timeout=10_000)
    assert game.locator("#dialog-title").inner_text().startswith("You were removed by an admin")
    assert admin.errors == [] and game.errors == []


@pytest.fixture
def admin_fleet(tmp_path_factory: pytest.TempPathFactory, web_built: None,
                redis_server) -> Iterator[list[ServerProcess]]:
    if not TICKWIRE.exists():
        _unavailable(f"{TICKWIRE} is missing (run make install)")
    import redis as sync_redis

    url = f"redis://{redis_server.host}:{redis_server.port}/12"
    sync_redis.Redis.from_url(url).flushdb()
    tmp = tmp_path_factory.mktemp("admin-fleet")
    ports = [free_port(), free_port()]
    origins = ",".join(f"http://127.0.0.1:{p}" for p in ports)
    nodes = [ServerProcess(port=p, log_path=tmp / f"node-{p}.log",
                           extra_args=["--redis", url, "--lease", "2", "--refresh", "0.5",
                                       "--admin-token", ADMIN_TOKEN,
                                       "--allowed-origins", origins])
             for p in ports]
    try:
        for node in nodes:
            node.start()
        yield nodes
    finally:
        for node in nodes:
            node.stop(signal.SIGKILL, 5.0)


def test_fleet_admin_view_renders_both_nodes_and_their_rooms(browser, admin_fleet,
                                                             artifacts_dir):
    a = admin_fleet[0]
    ctx = browser.new_context(viewport={"width": 1280, "height": 900})
    try:
        game = ctx.new_page()
        game.set_default_timeout(15_000)
        game.goto(a.base_url + "/")
        game.fill("#start-name", "fleet-host")
        game.click("#create-room")
        game.wait_for_function(CONNECTED)
        room = game.evaluate(f"{TW}.lobby.room")
        owner = game.evaluate(f"{TW}.lobby.node")
        errors: list[str] = []
        ids = {}
        for node in admin_fleet:
            with urllib.request.urlopen(node.base_url + "/healthz", timeout=5) as resp:
                ids[json.loads(resp.read())["registry"]["node"]] = node
        # The admin page of each node shows both nodes and the private room with its seat
        # to kick (the other node's page gets the seats from the owner).
        pages = {}
        for me, node in ids.items():
            admin = ctx.new_page()
            admin.set_default_timeout(15_000)
            admin.on("pageerror", lambda exc: errors.append(str(exc)))
            pages[me] = admin
            admin.goto(node.base_url + "/admin")
            log_in(admin)
            admin.wait_for_function("document.querySelectorAll('#fleet tr.node').length === 2")
            rows = {r[0].removesuffix(" (this node)"): r for r in node_rows(admin)}
            assert set(rows) == set(ids) and rows[me][0].endswith("(this node)")
            other = next(n for n in rows if n != me)
            assert rows[other][1] == ids[other].ws_url.removesuffix("/ws")
            assert rows[other][2] == "serving" and rows[me][2] == "serving"
            admin.wait_for_function(
                f"""() => {{ const c = document.querySelector('#rooms .room[data-room="{room}"]');
                            return c && c.textContent.includes('1/') &&
                                   c.textContent.includes('private'); }}""")
            card = admin.locator(f'#rooms .room[data-room="{room}"]')
            admin.wait_for_selector(f'#rooms .room[data-room="{room}"] .kick-btn')
            assert "fleet-host" in card.inner_text()
            if owner != me:
                assert f"on node {owner}" in card.inner_text()
            admin.screenshot(path=str(artifacts_dir / f"admin-fleet-{me}.png"), full_page=True)
        # Kick from the node that does not run the room: it is forwarded to the owner.
        other = next(n for n in ids if n != owner)
        pages[other].on("dialog", lambda d: d.accept())
        pages[other].locator(f'#rooms .room[data-room="{room}"] .kick-btn').click()
        game.wait_for_selector("#dialog:not([hidden])", timeout=10_000)
        assert game.locator("#dialog-title").inner_text().startswith(
            "You were removed by an admin")
        pages[other].wait_for_function(
            "document.querySelector('#kick-status').textContent.startsWith('kicked')")
        assert errors == []
    finally:
        ctx.close()
