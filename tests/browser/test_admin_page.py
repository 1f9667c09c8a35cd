"""The designer admin page (/admin) against a real `tickwire serve --admin-token`, in
headless Chromium.

Claims about the server are checked against the API itself (GET /admin/params from
Python) and against what clients receive (the demo page's `window.tickwireGame` and a
Python `Client` that records every Params frame), not against the admin page's own text.
Every wait is bounded.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import re
import threading
import time
import urllib.error
import urllib.request

import pytest

from client_demo.client import Client
from proto import tickwire_pb2 as pb

from .conftest import ADMIN_TOKEN

pytestmark = pytest.mark.browser

TW = "window.tickwire"
CONNECTED = f"{TW} && {TW}.connected && {TW}.playerId !== null && {TW}.serverTick > 0"
KEY = "player.max_speed"
UNAUTHORIZED_LOAD = "status of 401"  # Chromium logs a failed fetch as a console error


def api_get(base_url: str, token: str = ADMIN_TOKEN) -> dict:
    req = urllib.request.Request(f"{base_url}/admin/params",
                                 headers={"Authorization": f"Bearer {token}"})
    with urllib.request.urlopen(req, timeout=5.0) as resp:
        return json.loads(resp.read())


def rooms(base_url: str) -> list[dict]:
    # Player names in /rooms are for the admin token's holder only.
    req = urllib.request.Request(f"{base_url}/rooms",
                                 headers={"Authorization": f"Bearer {ADMIN_TOKEN}"})
    with urllib.request.urlopen(req, timeout=5.0) as resp:
        return json.loads(resp.read())


def log_in(page, token: str = ADMIN_TOKEN) -> None:
    page.wait_for_selector("#login:not([hidden])", timeout=5_000)
    page.fill("#token", token)
    page.click("#login-form button[type=submit]")


def row(page, key: str):
    return page.locator(f'.param[data-key="{key}"]')


class ParamsWatcher(Client):
    """A Python client that records (version, player_max_speed) of every Params frame."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.params_frames: list[tuple[int, float]] = []

    def _on_frame(self, data: bytes) -> None:
        super()._on_frame(data)
        frame = pb.ServerFrame()
        frame.ParseFromString(data)
        if frame.WhichOneof("kind") == "params":
            self.params_frames.append((frame.params.version,
                                       frame.params.params.player_max_speed))


@contextlib.contextmanager
def python_client(base_url: str, name: str):
    """A `ParamsWatcher` joined and sending idle inputs on its own event loop thread."""
    holder: dict = {}
    ready = threading.Event()
    stop = threading.Event()

    async def run() -> None:
        url = base_url.replace("http://", "ws://") + "/ws"
        try:
            async with ParamsWatcher(url, name) as c:
                holder["client"] = c
                ready.set()
                while not stop.is_set():
                    await c.send_input(0.0, 0.0)
                    await asyncio.sleep(0.1)
        except Exception as exc:  # reported to the test below
            holder["error"] = exc
            ready.set()

    thread = threading.Thread(target=asyncio.run, args=(run(),), daemon=True)
    thread.start()
    try:
        assert ready.wait(10.0), "the Python client got no Welcome within 10 s"
        if "error" in holder:
            raise holder["error"]
        yield holder["client"]
    finally:
        stop.set()
        thread.join(timeout=10.0)


def test_admin_page_loads_without_console_errors(admin_new_page, admin_server):
    page = admin_new_page("/admin")
    page.wait_for_selector("#login:not([hidden])", timeout=5_000)
    assert page.locator("#app").is_hidden()
    assert page.title() == "Tickwire admin"
    time.sleep(0.3)  # let any late module error surface
    assert page.errors == []
    # The page's route is there only because of --admin-token; the API wants the token.
    with pytest.raises(urllib.error.HTTPError) as err:
        api_get(admin_server.base_url, token="")
    assert err.value.code == 401


def test_token_shows_form_generated_from_schema(admin_new_page, admin_server):
    page = admin_new_page("/admin")
    log_in(page)
    page.wait_for_selector(f'.param[data-key="{KEY}"]', timeout=5_000)
    api = api_get(admin_server.base_url)
    schema, values = api["schema"], api["values"]
    # One row per schema key, nothing else.
    keys = page.eval_on_selector_all(".param", "rows => rows.map(r => r.dataset.key)")
    assert sorted(keys) == sorted(schema)
    assert page.locator("#version").inner_text() == f"params version {api['version']}"

    meta, r = schema[KEY], row(page, KEY)
    slider = r.locator("input[type=range]")
    number = r.locator("input[type=number]")
    assert float(number.get_attribute("min")) == meta["min"]
    assert float(number.get_attribute("max")) == meta["max"]
    shown = float(number.input_value())
    assert shown == values[KEY]
    # 1-2000 units/s spans three decades: a log slider over 1000 positions, set where the
    # running value sits on that scale.
    assert slider.get_attribute("data-scale") == "log"
    assert (slider.get_attribute("min"), slider.get_attribute("max")) == ("0", "1000")
    expected = math.log(shown / meta["min"]) / math.log(meta["max"] / meta["min"]) * 1000
    assert float(slider.input_value()) == pytest.approx(expected, abs=1.0)
    assert row(page, "player.respawn_delay_s").locator("input[type=range]").get_attribute(
        "data-scale") == "linear"  # 0-60 s: not even two decades
    assert r.locator(".unit").inner_text() == meta["unit"] == "units/s"
    assert f"[{meta['min']:g} – {meta['max']:g}]" in r.locator(".doc").inner_text()

    # Restart-only keys carry the badge; live keys don't.
    restart_only = {k for k, m in schema.items() if not m["live"]}
    assert restart_only, "the schema has restart-only keys"
    badged = set(page.eval_on_selector_all(
        ".param", "rows => rows.filter(r => r.querySelector('.badge')).map(r => r.dataset.key)"))
    assert badged == restart_only
    assert row(page, "world.tick_rate").locator(".badge").inner_text() == "restart only"
    # ...and are shown read-only: a running room cannot take them.
    disabled = set(page.eval_on_selector_all(
        ".param", "rows => rows.filter(r => [...r.querySelectorAll('input, select')]"
                  ".every(i => i.disabled)).map(r => r.dataset.key)"))
    assert disabled == restart_only
    # Booleans are checkboxes.
    for key, m in schema.items():
        if m["type"] == "bool":
            assert row(page, key).locator("input[type=checkbox]").count() == 1
    # Nothing edited yet: nothing to apply.
    assert page.locator("#apply").is_disabled()
    assert page.errors == []


def test_apply_max_speed_bumps_version_and_reaches_clients(admin_new_page, admin_server):
    base = admin_server.base_url
    game = admin_new_page("/", name="speedy")
    game.wait_for_function(CONNECTED, timeout=15_000)
    before = api_get(base)
    old, meta = before["values"][KEY], before["schema"][KEY]
    new = old + 37.0 if old + 37.0 <= meta["max"] else old - 37.0
    game.wait_for_function(
        f"window.tickwireGame.moveParams && "
        f"Math.abs(window.tickwireGame.moveParams.playerMaxSpeed - {old}) < 1e-3",
        timeout=5_000)

    with python_client(base, "watcher") as bot:
        assert bot.welcome.params_version == before["version"]
        admin = admin_new_page("/admin", height=900)
        log_in(admin)
        number = row(admin, KEY).locator("input[type=number]")
        number.wait_for(timeout=5_000)
        number.fill(f"{new:g}")
        admin.wait_for_function(
            f"document.querySelector('.param[data-key=\"{KEY}\"]').classList.contains('changed')",
            timeout=2_000)
        # The slider follows the typed value (on its log scale).
        pos = math.log(new / meta["min"]) / math.log(meta["max"] / meta["min"]) * 1000
        assert float(row(admin, KEY).locator("input[type=range]").input_value()) == \
            pytest.approx(pos, abs=1.0)
        assert admin.locator("#status").inner_text() == "1 unsaved change"
        admin.click("#apply")
        # This server has no --params file: applied in memory, and the page says so.
        admin.wait_for_function(
            "document.querySelector('#status').className === 'warn'", timeout=5_000)
        status = admin.locator("#status").inner_text()

        # The API's view, from Python.
        after = api_get(base)
        assert after["version"] == before["version"] + 1
        assert after["values"][KEY] == new
        assert status == (f"applied in memory: version {after['version']} runs; "
                          "not saved, lost at restart")
        assert "lost at restart" in admin.locator("#source").inner_text()
        assert admin.locator("#version").inner_text() == f"params version {after['version']}"
        assert float(number.input_value()) == new
        assert admin.locator(".param.changed").count() == 0
        assert admin.locator("#apply").is_disabled()

        # The connected demo page got the Params frame: its prediction now uses the value.
        game.wait_for_function(
            f"Math.abs(window.tickwireGame.moveParams.playerMaxSpeed - {new}) < 1e-3 && "
            f"Math.abs(window.tickwireGame.predictor.rule.maxSpeed - {new}) < 1e-3",
            timeout=5_000)
        # The demo page does not surface the params version; a Python client does.
        deadline = time.monotonic() + 5.0
        while not bot.params_frames and time.monotonic() < deadline:
            time.sleep(0.05)
        assert bot.params_frames, "the Python client got no Params frame within 5 s"
        version, speed = bot.params_frames[-1]
        assert version == after["version"]
        assert math.isclose(speed, new, abs_tol=1e-3)
        assert math.isclose(bot.params.player_max_speed, new, abs_tol=1e-3)
    assert game.errors == []
    assert admin.errors == []


def test_wrong_token_shows_an_error_not_a_crash(admin_new_page, admin_server):
    page = admin_new_page("/admin")
    log_in(page, token="not-the-token")
    page.wait_for_function(
        "document.querySelector('#login-error').textContent.length > 0", timeout=5_000)
    assert "wrong" in page.locator("#login-error").inner_text()
    assert page.locator("#login").is_visible()
    assert page.locator("#app").is_hidden()
    assert page.locator(".param").count() == 0
    # The browser logs the 401 response itself; the page throws nothing.
    assert page.exceptions == []
    assert all(UNAUTHORIZED_LOAD in e for e in page.errors), page.errors
    # The rejected token is not kept: a reload asks again, without a request.
    page.reload(wait_until="load")
    page.wait_for_selector("#login:not([hidden])", timeout=5_000)
    assert page.locator("#login-error").inner_text() == ""
    # And the right token still works on the same page.
    log_in(page)
    page.wait_for_selector(f'.param[data-key="{KEY}"]', timeout=5_000)
    assert page.locator("#app").is_visible()
    assert page.exceptions == []


def test_room_list_shows_connected_player_with_rtt(admin_new_page, admin_server,
                                                   artifacts_dir):
    game = admin_new_page("/", name="roomie")
    game.wait_for_function(CONNECTED, timeout=15_000)
    player_id = game.evaluate(f"{TW}.playerId")
    admin = admin_new_page("/admin", height=900)
    log_in(admin)
    # The room list polls /rooms every second; the server measures RTT with its pings.
    admin.wait_for_function(
        """() => [...document.querySelectorAll('#rooms tr')].some(tr => {
             const td = tr.querySelectorAll('td');
             return td.length >= 3 && td[0].textContent === 'roomie'
                    && Number(td[2].textContent) > 0;
           })""",
        timeout=15_000)
    cells = admin.evaluate(
        """() => [...document.querySelectorAll('#rooms tr')]
                   .map(tr => [...tr.querySelectorAll('td')].map(td => td.textContent))
                   .find(c => c[0] === 'roomie')""")
    name, pid, rtt = cells[:3]
    assert name == "roomie"
    assert int(pid) == player_id
    assert re.fullmatch(r"\d+\.\d", rtt), rtt
    # The same seat, from the server's JSON.
    seats = [s for r in rooms(admin_server.base_url) for s in r["seats"]
             if s["player_id"] == player_id]
    assert len(seats) == 1 and seats[0]["connected"] and seats[0]["name"] == "roomie"
    assert seats[0]["rtt_ms"] > 0
    header = admin.locator("#rooms .room strong").first.inner_text()
    assert re.search(r"\d+/\d+ players, tick \d+", header), header

    path = artifacts_dir / "admin-page.png"
    admin.screenshot(path=str(path), full_page=True)
    assert path.stat().st_size > 10_000
    assert admin.errors == []
    assert game.errors == []
