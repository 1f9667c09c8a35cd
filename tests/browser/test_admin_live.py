"""The admin page with a parameters file, in headless Chromium against a real
`tickwire serve --params FILE --admin-token`: fields are validated on the page, sliders
fit their ranges, an admin change lands in the file and survives an unrelated save and a
restart, and the page follows what runs (version, changes, file errors) as it happens.

Claims are checked against the API (GET /admin/params from Python) and the file itself,
not only against the page's text. Screenshots go to artifacts/. Every wait is bounded.
"""

from __future__ import annotations

import json
import os
import re
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from server.nodeproc import ServerProcess

from .conftest import ADMIN_TOKEN, running_server

pytestmark = pytest.mark.browser

PARAMS_TEXT = """\
# The designer's file: an admin change must keep these comments.

[player]
max_speed = 220.0   # units/s
hp = 100

[npc]
count = 2           # restart only
speed = 50.0        # units/s
"""


@pytest.fixture(scope="module")
def params_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("params") / "arena.toml"
    path.write_text(PARAMS_TEXT)
    return path


@pytest.fixture(scope="module")
def file_server(tmp_path_factory, web_built, params_file) -> Iterator[ServerProcess]:
    with running_server(tmp_path_factory, "file-server", "--params", str(params_file),
                        "--admin-token", ADMIN_TOKEN) as srv:
        yield srv


@pytest.fixture
def admin_page(browser, file_server):
    ctx = browser.new_context(viewport={"width": 1280, "height": 1400})
    page = ctx.new_page()
    page.set_default_timeout(15_000)
    page.errors = []
    page.on("pageerror", lambda exc: page.errors.append(str(exc)))
    page.goto(file_server.base_url + "/admin", wait_until="load")
    page.wait_for_selector("#login:not([hidden])", timeout=5_000)
    page.fill("#token", ADMIN_TOKEN)
    page.click("#login-form button[type=submit]")
    page.wait_for_selector('.param[data-key="player.max_speed"]', timeout=5_000)
    page.wait_for_function("document.querySelector('#live').textContent === 'live'",
                           timeout=5_000)
    yield page
    ctx.close()


def api(base_url: str) -> dict:
    req = urllib.request.Request(f"{base_url}/admin/params",
                                 headers={"Authorization": f"Bearer {ADMIN_TOKEN}"})
    with urllib.request.urlopen(req, timeout=5.0) as resp:
        return json.loads(resp.read())


def save(path: Path, text: str) -> None:
    """An editor's save, with an mtime of its own."""
    path.write_text(text)
    st = os.stat(path)
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 10_000_000_000))


def row(page, key: str):
    return page.locator(f'.param[data-key="{key}"]')


def number(page, key: str):
    return row(page, key).locator("input[type=number]")


def version_shown(page) -> int:
    return int(page.locator("#version").inner_text().rsplit(" ", 1)[1])


def set_slider(page, key: str, position: int) -> str:
    """Move a slider as a user would (input event) and return the number field's text."""
    page.eval_on_selector(
        f'.param[data-key="{key}"] input[type=range]',
        f"s => {{ s.value = {position}; s.dispatchEvent(new Event('input')); }}")
    return number(page, key).input_value()


def test_emptied_and_bad_fields_are_refused_on_the_page(admin_page, file_server,
                                                        artifacts_dir):
    page = admin_page
    before = api(file_server.base_url)
    damage = number(page, "projectile.damage")
    damage.fill("")
    page.wait_for_function(
        "document.querySelector('.param[data-key=\"projectile.damage\"]')"
        ".classList.contains('invalid')", timeout=2_000)
    assert row(page, "projectile.damage").locator(".error").inner_text() == \
        "projectile.damage is empty; enter a number"
    assert page.locator("#apply").is_disabled()
    assert "projectile.damage is empty" in page.locator("#status").inner_text()
    page.screenshot(path=str(artifacts_dir / "admin-empty-field.png"), full_page=True)
    # Submitting anyway (Enter in the form) sends nothing.
    damage.press("Enter")
    time.sleep(0.3)
    assert api(file_server.base_url)["version"] == before["version"]

    damage.fill("2.5")
    assert row(page, "projectile.damage").locator(".error").inner_text() == \
        "projectile.damage must be a whole number"
    damage.fill("20000")
    assert "must be within [0, 10000]" in row(page, "projectile.damage").locator(
        ".error").inner_text()
    damage.fill("30")
    assert not row(page, "projectile.damage").get_attribute("class").count("invalid")
    assert page.locator("#apply").is_enabled()
    page.click("#revert")
    assert number(page, "projectile.damage").input_value() == str(
        before["values"]["projectile.damage"])
    assert page.errors == []


def test_sliders_use_log_scales_over_decades_and_steps_that_fit(admin_page):
    page = admin_page
    # player.accel 1-100000 (five decades): the middle of the slider is the geometric mean.
    assert set_slider(page, "player.accel", 500) == "316"
    # An int key over decades gives whole numbers only.
    ticks = set_slider(page, "npc.turn_interval_ticks", 437)
    assert re.fullmatch(r"\d+", ticks), ticks
    # A float key on a log scale: three significant digits, never 250.875.
    for pos in (1, 123, 777, 999):
        text = set_slider(page, "projectile.lifetime_s", pos)
        assert len(text.replace(".", "").lstrip("0")) <= 3, text
    # A linear float range takes a round step (0.1 s for 0-60: 333/1000 of it is 19.98).
    assert float(set_slider(page, "player.respawn_delay_s", 333)) == 20.0
    # world.width spans decades since worlds go up to 16000 units: a log scale.
    assert row(page, "world.width").locator("input[type=range]").get_attribute(
        "data-scale") == "log"
    # world.seed (0-4294967295) is restart-only: shown, not movable.
    assert row(page, "world.seed").locator("input[type=range]").is_disabled()
    assert row(page, "world.seed").locator("input[type=range]").get_attribute(
        "data-scale") == "log"
    page.click("#revert")
    assert page.errors == []


def test_admin_change_lands_in_the_file_survives_a_save_and_a_restart(
        admin_page, file_server, params_file, artifacts_dir):
    page = admin_page
    base = file_server.base_url
    start = api(base)
    assert start["persisted"] is True and start["file"] == str(params_file)
    assert page.locator("#source").inner_text() == f"changes are written to {params_file}"

    # 1. Apply max_speed 260 on the page: it is written into the file, comments kept.
    number(page, "player.max_speed").fill("260")
    page.click("#apply")
    page.wait_for_function("document.querySelector('#status').className === 'ok'",
                           timeout=5_000)
    after = api(base)
    assert after["values"]["player.max_speed"] == 260.0
    assert after["version"] == start["version"] + 1
    assert page.locator("#status").inner_text() == \
        f"applied: version {after['version']} runs; written to {params_file}"
    assert params_file.read_text() == PARAMS_TEXT.replace("220.0", "260.0")

    # 2. The designer saves an unrelated line: the page shows the new running version
    #    live (no reload), logs the change, and max_speed is still 260.
    save(params_file, params_file.read_text().replace("speed = 50.0", "speed = 70.0"))
    page.wait_for_function(
        f"document.querySelector('#version').textContent === "
        f"'params version {after['version'] + 1}'", timeout=10_000)
    running = api(base)
    assert running["version"] == version_shown(page) == after["version"] + 1
    assert running["values"]["player.max_speed"] == 260.0
    assert running["values"]["npc.speed"] == 70.0
    assert number(page, "npc.speed").input_value() == "70"
    assert number(page, "player.max_speed").input_value() == "260"
    assert "from file: npc.speed = 70" in page.locator("#events li").first.inner_text()
    # The page no longer claims that the version it applied is the one running.
    assert f"version {after['version']} runs" not in page.locator("#status").inner_text()

    # 3. A restart-only key changed in the file is held as pending, not applied.
    save(params_file, params_file.read_text().replace("count = 2 ", "count = 5 "))
    page.wait_for_function(
        "document.querySelector('.param[data-key=\"npc.count\"] .pending')"
        ".textContent.includes('the file says 5')", timeout=10_000)
    assert api(base)["values"]["npc.count"] == 2
    assert "pending restart: npc.count = 5" in page.locator("#events li").first.inner_text()

    # 4. A broken save: the error shows on the page, the running version stays.
    good = params_file.read_text()
    version = version_shown(page)
    save(params_file, good.replace("hp = 100", "hp = 0"))
    page.wait_for_selector("#file-error:not([hidden])", timeout=10_000)
    assert "player.hp = 0 is out of range" in page.locator("#file-error").inner_text()
    assert version_shown(page) == version == api(base)["version"]
    page.screenshot(path=str(artifacts_dir / "admin-file-error.png"), full_page=True)
    save(params_file, good)
    page.wait_for_selector("#file-error", state="hidden", timeout=10_000)

    # 5. Restart the server: the page reconnects by itself and shows what now runs,
    #    which still has the admin's 260 (it was in the file).
    file_server.restart()
    restarted = api(base)
    assert restarted["values"]["player.max_speed"] == 260.0
    assert restarted["values"]["npc.count"] == 5  # the pending value, now applied
    page.wait_for_function(
        f"document.querySelector('#version').textContent === "
        f"'params version {restarted['version']}' && "
        f"document.querySelector('#live').textContent === 'live'", timeout=20_000)
    assert number(page, "player.max_speed").input_value() == "260"
    assert number(page, "npc.count").input_value() == "5"
    assert row(page, "npc.count").locator(".pending").inner_text() == ""
    page.screenshot(path=str(artifacts_dir / "admin-live-file.png"), full_page=True)
    assert page.errors == []
