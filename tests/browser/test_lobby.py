"""The start screen in headless Chromium: quick play, "Create private room" with its share
link, join by link, refusals in player language; against a single `tickwire serve` (the
embedded /matchmake) and against a real 2-node fleet on a real redis-server. Every wait
is bounded; node processes are stopped by pid.
"""

from __future__ import annotations

import json
import signal
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from server.nodeproc import TICKWIRE, ServerProcess, free_port

from .conftest import _unavailable, running_server

pytestmark = pytest.mark.browser

TW = "window.tickwire"
CONNECTED = f"{TW} && {TW}.connected && {TW}.playerId !== null && {TW}.serverTick > 0"
ROOMS_OF_TWO = "[room]\nmax_players = 2\n[npc]\ncount = 0\n"


def lobby(page) -> dict:
    return page.evaluate(f"JSON.parse(JSON.stringify({TW}.lobby))")


def get_json(url: str) -> object:
    with urllib.request.urlopen(url, timeout=10) as resp:
        return json.loads(resp.read())


def roster_names(page) -> set[str]:
    return {p["name"] for p in page.evaluate(f"{TW}.players")}


@pytest.fixture(scope="module")
def single(tmp_path_factory: pytest.TempPathFactory, web_built: None) -> Iterator[ServerProcess]:
    """A plain `tickwire serve` (no Redis), rooms of two so a third player finds one full."""
    with running_server(tmp_path_factory, "lobby", params=ROOMS_OF_TWO) as srv:
        yield srv


@pytest.fixture
def open_url(browser):
    """open_url(url) -> a page in a fresh context, console errors on `page.errors`."""
    contexts = []

    def make(url: str):
        ctx = browser.new_context(viewport={"width": 1280, "height": 720})
        contexts.append(ctx)
        page = ctx.new_page()
        page.set_default_timeout(15_000)
        page.errors = []
        page.on("pageerror", lambda exc: page.errors.append(str(exc)))
        page.goto(url, wait_until="load")
        return page

    yield make
    for ctx in contexts:
        ctx.close()


def test_a_bare_page_shows_the_start_screen_and_quick_play_joins(open_url, single):
    page = open_url(single.base_url + "/")
    page.wait_for_selector("#start:not([hidden])")
    assert page.locator("#quick-play").is_visible()
    assert page.locator("#create-room").is_visible()
    assert page.locator("#mode-pick").is_hidden(), "one mode: no picker"
    assert not page.evaluate(f"{TW}.connected"), "nothing joins before the player asks"
    page.fill("#start-name", "quickie")
    page.click("#quick-play")
    page.wait_for_function(CONNECTED)
    state = lobby(page)
    assert state["screen"] == "playing" and not state["private"] and state["link"] is None
    assert page.locator("#start").is_hidden() and page.locator("#share").is_hidden()
    listed = {r["room"]: r for r in get_json(single.base_url + "/rooms")}
    assert state["room"] in listed and listed[state["room"]]["players"] >= 1
    assert "quickie" in roster_names(page)
    assert page.errors == []


def test_create_private_room_shows_a_link_that_a_second_page_joins(open_url, single):
    host = open_url(single.base_url + "/")
    host.wait_for_selector("#start:not([hidden])")
    host.fill("#start-name", "host")
    host.click("#create-room")
    host.wait_for_function(CONNECTED)
    host.wait_for_selector("#share:not([hidden])")
    state = lobby(host)
    link = host.locator("#share-link").input_value()
    assert state["private"] and link == state["link"]
    assert link == f"{single.base_url}/?room={state['room']}"
    assert f"room={state['room']}" in host.url, "a reload comes back to the room"
    host.click("#share-copy")
    host.wait_for_function(f"{TW}.lobby.copied")
    # The private room is not listed.
    assert state["room"] not in {r["room"] for r in get_json(single.base_url + "/rooms")}
    guest = open_url(link)
    guest.wait_for_function(CONNECTED)
    assert lobby(guest)["room"] == state["room"] and lobby(guest)["private"]
    guest.wait_for_function(f"{TW}.players.length === 2")
    host.wait_for_function(f"{TW}.players.length === 2")
    # A third player finds it full (rooms of two), and is offered what to do.
    third = open_url(link)
    third.wait_for_selector("#start:not([hidden])")
    assert third.locator("#start-error-title").inner_text() == "This room is full"
    assert third.locator("#try-again").is_visible()
    assert third.locator("#quick-play").is_visible()
    assert lobby(third)["error"]["code"] == "room_full"
    assert not third.evaluate(f"{TW}.connected")
    # The guest leaves; Try again gets the seat once the registry has counted the leave
    # (at the node's next refresh, 2 s at most): until then it says full again.
    guest.click("#leave")
    guest.wait_for_function(f"{TW}.left")
    for _ in range(20):
        third.click("#try-again")
        third.wait_for_function(f"{TW}.connected || {TW}.lobby.screen === 'start'")
        if third.evaluate(f"{TW}.connected"):
            break
        assert lobby(third)["error"]["code"] == "room_full"
        third.wait_for_timeout(250)
    third.wait_for_function(CONNECTED)
    assert lobby(third)["room"] == state["room"]
    assert host.errors == [] and guest.errors == [] and third.errors == []


def test_reloading_a_private_room_comes_back_to_it(open_url, single):
    page = open_url(single.base_url + "/")
    page.wait_for_selector("#start:not([hidden])")
    page.click("#create-room")
    page.wait_for_function(CONNECTED)
    room = lobby(page)["room"]
    page.reload(wait_until="load")  # the Leave on pagehide empties it; it is not reaped yet
    page.wait_for_function(CONNECTED)
    assert lobby(page)["room"] == room and lobby(page)["private"]
    assert page.locator("#share-link").input_value().endswith(f"?room={room}")
    assert page.errors == []


def test_a_link_to_a_room_that_is_gone_offers_quick_play(open_url, single):
    page = open_url(single.base_url + "/?room=arena-0000dead")
    page.wait_for_selector("#start:not([hidden])")
    assert page.locator("#start-error-title").inner_text() == "This room no longer exists"
    assert page.locator("#try-again").is_hidden()
    page.click("#quick-play")
    page.wait_for_function(CONNECTED)
    assert not lobby(page)["private"] and "room=" not in page.url
    assert page.errors == []


# -- a fleet: 2 node processes and a real redis-server ------------------------------------------

@pytest.fixture
def fleet(tmp_path_factory: pytest.TempPathFactory, web_built: None,
          redis_server) -> Iterator[list[ServerProcess]]:
    """Two `tickwire serve --redis` nodes of a fresh fleet (one test may kill one), each
    allowing the other's page origin (a page served by one node plays on whichever node
    matchmaking chose)."""
    if not TICKWIRE.exists():
        _unavailable(f"{TICKWIRE} is missing (run make install)")
    import redis as sync_redis

    url = f"redis://{redis_server.host}:{redis_server.port}/13"
    sync_redis.Redis.from_url(url).flushdb()
    tmp = tmp_path_factory.mktemp("lobby-fleet")
    (tmp / "params.toml").write_text(ROOMS_OF_TWO)
    ports = [free_port(), free_port()]
    origins = ",".join(f"http://127.0.0.1:{p}" for p in ports)
    nodes = [ServerProcess(port=p, log_path=tmp / f"node-{p}.log",
                           extra_args=["--params", str(tmp / "params.toml"), "--redis", url,
                                       "--lease", "2", "--refresh", "0.5",
                                       "--allowed-origins", origins])
             for p in ports]
    try:
        for node in nodes:
            node.start()
        yield nodes
    finally:
        for node in nodes:
            node.stop(signal.SIGKILL, 5.0)


def node_ids(nodes: list[ServerProcess]) -> dict[str, ServerProcess]:
    return {get_json(n.base_url + "/healthz")["registry"]["node"]: n for n in nodes}


def test_fleet_quick_play_private_room_and_link_across_nodes(open_url, fleet):
    a, b = fleet
    ids = node_ids(fleet)
    player = open_url(a.base_url + "/?name=quick")
    player.wait_for_function(CONNECTED)
    quick = lobby(player)
    assert quick["node"] in ids and not quick["private"]
    host = open_url(a.base_url + "/")
    host.fill("#start-name", "host")
    host.click("#create-room")
    host.wait_for_function(CONNECTED)
    host.wait_for_selector("#share:not([hidden])")
    room = lobby(host)["room"]
    link = host.locator("#share-link").input_value()
    assert link == f"{a.base_url}/?room={room}"
    # The friend opens the link on the other node's address: matchmaking (any node
    # answers) sends them to the node that runs the room.
    guest = open_url(f"{b.base_url}/?room={room}")
    guest.wait_for_function(CONNECTED)
    assert lobby(guest)["room"] == room and lobby(guest)["node"] == lobby(host)["node"]
    guest.wait_for_function(f"{TW}.players.length === 2")
    assert {"host"} < roster_names(guest)
    for node in fleet:
        listed = {r["room"] for r in get_json(node.base_url + "/rooms")}
        assert room not in listed, "a private room is never listed"
        assert quick["room"] in listed
    assert player.errors == [] and host.errors == [] and guest.errors == []


def test_fleet_page_matchmakes_again_when_its_node_dies(open_url, fleet, tmp_path: Path):
    """The page's room is on the node that is killed; the page was served by the other
    node, whose /matchmake seats it again after the resume fails."""
    ids = node_ids(fleet)
    probe = open_url(fleet[0].base_url + "/?name=probe")
    probe.wait_for_function(CONNECTED)
    doomed = ids[lobby(probe)["node"]]
    survivor = next(n for n in fleet if n is not doomed)
    survivor_id = next(i for i, n in ids.items() if n is survivor)
    page = open_url(survivor.base_url + "/?name=survivor")
    page.wait_for_function(CONNECTED)
    assert ids[lobby(page)["node"]] is doomed, "quick play fills the open room first"
    first_room = lobby(page)["room"]
    doomed.stop(signal.SIGKILL, 5.0)
    page.wait_for_function(f"{TW}.lobby.node === {json.dumps(survivor_id)} && {CONNECTED}",
                           timeout=30_000)
    assert lobby(page)["room"] != first_room
    assert page.evaluate(f"{TW}.reconnects") >= 1
    assert page.errors == []


def test_matchmaking_unavailable_is_said_and_retried_until_redis_is_back(
        open_url, own_redis, web_built, tmp_path: Path):
    """A node whose Redis is down answers /matchmake 503: the page says so in player
    language and keeps retrying on its own; once Redis is back it joins."""
    if not TICKWIRE.exists():
        _unavailable(f"{TICKWIRE} is missing (run make install)")
    node = ServerProcess(port=free_port(), log_path=tmp_path / "node.log",
                         extra_args=["--redis", own_redis.url, "--lease", "2",
                                     "--refresh", "0.5"])
    node.start()
    try:
        own_redis.stop()
        until = time.monotonic() + 15
        while get_json(node.base_url + "/healthz")["registry"]["reachable"]:
            assert time.monotonic() < until, "the node never noticed"
            time.sleep(0.1)
        page = open_url(node.base_url + "/?name=patient")
        page.wait_for_function(
            "document.querySelector('#banner').innerText"
            ".startsWith('Matchmaking is unavailable right now')")
        assert not page.evaluate(f"{TW}.connected")
        assert page.locator("#start").is_hidden(), "transient: no start screen, a retry"
        own_redis.restart()  # same port, empty: the node re-registers at its next refresh
        page.wait_for_function(CONNECTED, timeout=30_000)
        assert page.errors == []
    finally:
        node.stop(signal.SIGKILL, 5.0)


def test_the_mode_picker_offers_each_mode_and_an_unknown_mode_is_said(open_url, web_built,
                                                                      tmp_path: Path):
    if not TICKWIRE.exists():
        _unavailable(f"{TICKWIRE} is missing (run make install)")
    (tmp_path / "arena.toml").write_text("[room]\nmax_players = 8\n[npc]\ncount = 0\n")
    (tmp_path / "duel.toml").write_text(ROOMS_OF_TWO)
    srv = ServerProcess(port=free_port(), log_path=tmp_path / "node.log",
                        extra_args=["--mode", f"arena={tmp_path / 'arena.toml'}",
                                    "--mode", f"duel={tmp_path / 'duel.toml'}"])
    srv.start()
    try:
        page = open_url(srv.base_url + "/")
        page.wait_for_selector("#mode-pick:not([hidden])")
        options = page.eval_on_selector_all("#mode-select option", "os => os.map(o => o.value)")
        assert options == ["arena", "duel"]
        assert page.locator("#mode-select").input_value() == "arena"  # the default
        assert "up to 2 players" in page.locator("#mode-select").inner_text()
        page.select_option("#mode-select", "duel")
        page.click("#quick-play")
        page.wait_for_function(CONNECTED)
        assert lobby(page)["mode"] == "duel"
        duel_room = lobby(page)["room"]
        assert {r["room"]: r["mode"] for r in get_json(srv.base_url + "/rooms")}[duel_room] \
            == "duel"
        wrong = open_url(srv.base_url + "/?name=x&mode=ctf")
        wrong.wait_for_selector("#start:not([hidden])")
        assert wrong.locator("#start-error-title").inner_text() == \
            "That game mode is not available"
        wrong.click("#quick-play")
        wrong.wait_for_function(CONNECTED)
        assert lobby(wrong)["mode"] == "arena"
        assert page.errors == [] and wrong.errors == []
    finally:
        srv.stop()
