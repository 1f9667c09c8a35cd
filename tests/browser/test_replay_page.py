"""The spectator page in headless Chromium against a real `tickwire replay FILE --serve`:
play, pause, speed, seek and follow a player, checked against the page's state
(`window.tickwireReplay`), the renderer's camera and the recording's own frames.
Every wait is bounded; a screenshot goes to artifacts/."""

from __future__ import annotations

import subprocess
import time
import urllib.request

import pytest

from server.nodeproc import TICKWIRE, free_port
from server.spectate import ReplayTimeline
from tests.unit.test_recording import play, recorded_room

from .conftest import _unavailable

pytestmark = pytest.mark.browser

R = "window.tickwireReplay"


@pytest.fixture(scope="module")
def replay_server(tmp_path_factory, web_built):
    if not TICKWIRE.exists():
        _unavailable(f"{TICKWIRE} is missing (run make install)")
    tmp = tmp_path_factory.mktemp("replay")
    room, recorder = recorded_room(tmp)
    room.join(11, "a", 0.0)
    room.join(12, "b", 0.0)
    play(room, 900)  # 30 s at 30 Hz
    recorder.close()
    (path,) = recorder.files
    port = free_port()
    log = (tmp / "replay.log").open("wb")
    proc = subprocess.Popen([str(TICKWIRE), "replay", str(path), "--serve", "--port",
                             str(port)], stdout=log, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 20.0
        while True:
            assert proc.poll() is None, (tmp / "replay.log").read_text()
            try:
                urllib.request.urlopen(base + "/replay/info", timeout=2.0).close()
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise AssertionError("the replay server did not start in 20 s") from None
                time.sleep(0.1)
        yield base, path
    finally:
        proc.terminate()
        proc.wait(timeout=10)
        log.close()


def test_play_pause_speed_seek_and_follow(browser, replay_server, artifacts_dir):
    base, path = replay_server
    ctx = browser.new_context(viewport={"width": 1100, "height": 700})
    page = ctx.new_page()
    page.set_default_timeout(15_000)
    errors = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    try:
        page.goto(base + "/", wait_until="load")
        page.wait_for_function(f"{R}.ready && !document.querySelector('#play').disabled",
                               timeout=10_000)
        assert page.evaluate(f"{R}.pos") == 0 and not page.evaluate(f"{R}.playing")
        assert "ticks 0–900 at 30 Hz" in page.locator("#source").inner_text()

        # Play: the play head moves through the recording.
        page.click("#play")
        page.wait_for_function(f"{R}.pos > 20", timeout=10_000)
        # Pause: it stops.
        page.click("#play")
        held = page.evaluate(f"{R}.pos")
        time.sleep(0.4)
        assert page.evaluate(f"{R}.pos") == held and page.locator("#play").inner_text() == "Play"

        # Speed 4x, then play on.
        page.select_option("#speed", "4")
        assert page.evaluate(f"{R}.speed") == 4
        page.click("#play")
        page.wait_for_function(f"{R}.pos > {held} + 60", timeout=10_000)
        page.click("#play")

        # Seek: the drawn frame is the recording's frame at that tick.
        page.eval_on_selector("#seek", "s => { s.value = 600; "
                                       "s.dispatchEvent(new Event('input')); }")
        page.wait_for_function(
            "document.querySelector('#tick').textContent.startsWith('tick 600 / 900')",
            timeout=10_000)
        shown = page.evaluate(f"{R}.frames.get(600)")
        expected = ReplayTimeline.load(path).frames(600, 1)[0]
        assert shown["tick"] == 600
        assert [list(r) for r in expected["e"]] == shown["e"]

        # Follow player 12: the camera centres on that player's entity, as far as the
        # renderer's wall margin allows (a view smaller than the world, so it can move).
        page.set_viewport_size({"width": 420, "height": 380})
        page.select_option("#follow", "12")
        page.wait_for_function(f"{R}.follow === 12", timeout=2_000)
        page.wait_for_timeout(300)  # a few animation frames
        cam = page.evaluate(f"{R}.cam")
        canvas = page.evaluate("(() => { const c = document.querySelector('#arena');"
                               " return [c.clientWidth, c.clientHeight]; })()")
        row = next(r for r in shown["e"] if r[1] == 1 and r[9] == 12)
        for axis, (pos, extent) in enumerate(zip(row[2:4], canvas, strict=True)):
            half, pad = extent / 2 / cam["scale"], 40 / cam["scale"]
            assert 2 * half < 1000 + 2 * pad  # the camera can move on this axis
            expected_cam = min(max(pos, half - pad), 1000 + pad - half)
            assert cam["xy"[axis]] == pytest.approx(expected_cam, abs=0.5), axis
        page.select_option("#follow", "")
        page.wait_for_timeout(300)
        assert page.evaluate(f"{R}.cam") == {**cam, "x": 500, "y": 500}
        page.select_option("#follow", "12")
        page.wait_for_timeout(300)
        page.screenshot(path=str(artifacts_dir / "replay-page.png"))
        assert errors == []
    finally:
        ctx.close()
