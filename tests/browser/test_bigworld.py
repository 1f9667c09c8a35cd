"""The browser client in a world much bigger than the screen, against a real
`tickwire serve` with interest management, in headless Chromium: the camera follows the
player, the minimap is drawn, the HUD shows fewer entities in view than in the world, and
entities fade at the edge of interest. And today's arena keeps its look: no minimap, no
world count.

Every wait is bounded; the claims are read from `window.tickwire` (the page's published
state) and, for the minimap, from its canvas pixels.
"""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest

from server.nodeproc import ServerProcess

from .conftest import open_page, running_server

pytestmark = pytest.mark.browser

TW = "window.tickwire"
CONNECTED = f"{TW} && {TW}.connected && {TW}.playerId !== null && {TW}.serverTick > 0"

WORLD = 8000.0
# A big world, lighter than bench/scenarios/bigworld.toml (fewer NPCs) so it runs fast on a
# loaded machine, with the same interest set-up.
PARAMS = f"""
[world]
width = {WORLD}
height = {WORLD}
capacity = 4400

[npc]
count = 4000

[interest]
enabled = true
radius = 800.0
cell = 400.0
budget_kbps = 8
"""


@pytest.fixture(scope="module")
def bigworld(tmp_path_factory: pytest.TempPathFactory, web_built: None) -> Iterator[ServerProcess]:
    with running_server(tmp_path_factory, "bigworld", params=PARAMS) as srv:
        yield srv


@pytest.fixture
def big_page(browser, bigworld: ServerProcess):
    contexts = []

    def make(name: str, *, width: int = 1280, height: int = 720):
        page = open_page(browser, contexts, f"{bigworld.base_url}/?name={name}",
                         width=width, height=height)
        page.wait_for_function(CONNECTED, timeout=20_000)
        page.wait_for_function(f"{TW}.camera !== null && {TW}.me !== null", timeout=10_000)
        return page

    yield make
    for ctx in contexts:
        ctx.close()


def tw(page) -> dict:
    return page.evaluate(f"JSON.parse(JSON.stringify({TW}))")


def hud_entities(page) -> str:
    return page.evaluate("""() => {
        const row = [...document.querySelectorAll('#hud .row')]
          .find((r) => r.firstChild.textContent === 'entities');
        return row ? row.lastChild.textContent : null;
    }""")


def test_the_camera_follows_the_player_across_the_big_world(big_page):
    page = big_page("walker")
    start = tw(page)
    cam0, me0 = start["camera"], start["me"]
    # The view is a small part of the world, centred on us (clamped near a wall).
    rect = cam0["rect"]
    assert rect["x1"] - rect["x0"] < WORLD / 2
    key, sign = ("d", 1) if me0["x"] < WORLD / 2 else ("a", -1)
    page.keyboard.down(key)
    try:
        page.wait_for_function(f"Math.abs({TW}.server.x - {me0['x']}) > 250", timeout=10_000)
    finally:
        page.keyboard.up(key)
    time.sleep(0.5)  # the player stops; the camera settles
    end = tw(page)
    moved = (end["camera"]["x"] - cam0["x"]) * sign
    assert moved > 200, f"the camera moved {moved:.0f} units while the player moved 250+"
    # It looks at the player (it eases, so allow a little lag) unless clamped at a wall.
    half = (end["camera"]["rect"]["x1"] - end["camera"]["rect"]["x0"]) / 2
    if half < end["me"]["x"] < WORLD - half:
        assert abs(end["camera"]["x"] - end["me"]["x"]) < 30
    assert abs(end["camera"]["y"] - cam0["y"]) < 30, "moving along x does not move the view on y"
    # Cells entered, left and re-sent against their own baselines: chunks.js rejected none
    # of the real server's snapshots.
    assert end["decodeErrors"] == 0
    assert page.errors == []


def test_the_minimap_is_drawn_with_the_player_on_it(big_page, artifacts_dir):
    page = big_page("mapper")
    page.wait_for_function(f"{TW}.minimap && {TW}.minimap.shown && {TW}.minimap.draws > 2",
                           timeout=10_000)
    assert page.locator("#minimap").is_visible()
    state = tw(page)
    assert state["minimap"]["dots"] > 0, "the entities we know of are on the map"
    # Read the map's pixels: the world's border, our cyan dot where we are.
    pixels = page.evaluate("""() => {
        const c = document.getElementById('minimap');
        const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
        let drawn = 0, cyan = [];
        for (let i = 0; i < d.length; i += 4) {
          if (d[i + 3] > 0) drawn++;
          if (d[i] < 80 && d[i + 1] > 190 && d[i + 2] > 230 && d[i + 3] > 200) {
            const p = i / 4;
            cyan.push([p % c.width, Math.floor(p / c.width)]);
          }
        }
        return { drawn, cyan, w: c.width, css: c.clientWidth };
    }""")
    assert pixels["drawn"] > pixels["w"] * pixels["w"] / 2, "the world fills the map"
    assert pixels["cyan"], "our own dot is drawn"
    me = tw(page)["me"]
    k = (pixels["w"] / pixels["css"])  # device pixels per CSS pixel
    mx = sum(x for x, _ in pixels["cyan"]) / len(pixels["cyan"]) / k
    my = sum(y for _, y in pixels["cyan"]) / len(pixels["cyan"]) / k
    scale = (pixels["css"] - 8) / WORLD
    assert abs(mx - (4 + me["x"] * scale)) < 6 and abs(my - (4 + me["y"] * scale)) < 6
    page.screenshot(path=str(artifacts_dir / "bigworld.png"))
    assert page.errors == []


def test_the_hud_shows_entities_in_view_below_the_world_count(big_page):
    page = big_page("counter")
    page.wait_for_function(f"{TW}.worldEntities !== null && {TW}.entityCount > 0",
                           timeout=10_000)
    state = tw(page)
    assert state["worldEntities"] >= 4000
    assert 0 < state["entityCount"] < state["worldEntities"] / 4
    # The row reads "– / N" until the first snapshot's view has been drawn: wait for two
    # numbers (a bounded wait, not a sleep).
    page.wait_for_function("""() => {
        const row = [...document.querySelectorAll('#hud .row')]
          .find((r) => r.firstChild.textContent === 'entities');
        return row !== undefined && /^\\d+ \\/ \\d+$/.test(row.lastChild.textContent);
    }""", timeout=5_000)
    text = hud_entities(page)
    in_view, in_world = (int(v) for v in text.split(" / "))
    assert in_view < in_world
    assert page.errors == []


def test_entities_fade_in_and_out_at_the_edge_of_interest(big_page):
    page = big_page("fader")
    # NPCs wander across the edge of our interest all the time; walking makes more cross.
    page.keyboard.down("s" if tw(page)["me"]["y"] < WORLD / 2 else "w")
    try:
        page.wait_for_function(
            "window.tickwireGame.view.fader.stats.fadedIn > 0"
            " && window.tickwireGame.view.fader.stats.fadedOut > 0", timeout=15_000)
    finally:
        page.keyboard.up("s")
        page.keyboard.up("w")
    assert tw(page)["decodeErrors"] == 0
    assert page.errors == []


def test_the_arena_keeps_its_look_no_minimap_no_world_count(new_page):
    page = new_page("arena-look")
    page.wait_for_function(CONNECTED, timeout=15_000)
    page.wait_for_function(f"{TW}.minimap !== null && {TW}.camera !== null", timeout=5_000)
    page.wait_for_function("document.querySelector('#hud').innerText.includes('entities')",
                           timeout=5_000)
    state = tw(page)
    assert state["minimap"]["shown"] is False
    assert page.locator("#minimap").is_hidden()
    assert state["worldEntities"] is None
    assert " / " not in hud_entities(page)
    # The arena's whole width is on screen: the camera is centred on x.
    assert state["camera"]["x"] == 500
    assert state["fading"] == 0
    assert page.errors == []
