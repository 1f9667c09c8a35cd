"""The browser's pure rules under Node: what a close means (status.js), the banner's words,
the respawn countdown and player colours (events.js), the shortened scoreboard (hud.js) and
the virtual stick (input.js).

Each table row is (function, arguments, expected) and all rows run in one Node process.
Skipped when ``node`` (or gen/wire.js) is missing, except under CI=true.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

from tests.unit.webnode import run_script

ROOT = Path(__file__).resolve().parents[2]
WEB = ROOT / "client_demo" / "web"

NODE_SCRIPT = """\
import { readFileSync } from "node:fs";
const web = process.argv[2];
const mods = {
  status: await import(`${web}/status.js`),
  events: await import(`${web}/events.js`),
  hud: await import(`${web}/hud.js`),
  input: await import(`${web}/input.js`),
};
const calls = JSON.parse(readFileSync(process.argv[3], "utf8"));
const out = calls.map(([mod, fn, args]) => mods[mod][fn](...args));
process.stdout.write(JSON.stringify(out));
"""


def run(tmp_path: Path, calls: list[tuple[str, str, list]]) -> list:
    (tmp_path / "calls.json").write_text(json.dumps(calls))
    return run_script(tmp_path / "rules.mjs", NODE_SCRIPT, WEB.as_uri(),
                      str(tmp_path / "calls.json"), timeout=60)


def kick(label: str, retry: bool, code: int = 1008, reason: str = "", after: int = 0) -> dict:
    return {"code": code, "reason": reason, "label": label, "retry": retry, "retryAfterS": after}


# (close info, retry, action, title starts with)
VERDICTS = [
    # A current server: the Kick's label and retry decide.
    ({"code": 1008,
      "kick": kick("bad_join", False, reason="name must be 1-24 printable characters")},
     False, "rename", "That name was refused"),
    ({"code": 1008, "kick": kick("kicked", True, reason="kicked by admin", after=60)},
     False, "rejoin", "You were removed by an admin"),
    ({"code": 1008, "kick": kick("banned", True, after=42)}, False, "rejoin", "You are kept out"),
    ({"code": 1008, "kick": kick("bad_version", False)}, False, "reload",
     "This page is out of date"),
    ({"code": 1008, "kick": kick("room_closed", False)}, False, "rejoin", "Room closed"),
    ({"code": 1008, "kick": kick("replaced", False)}, False, "rejoin",
     "You are playing in another"),
    ({"code": 1001, "kick": kick("draining", True, code=1001)}, True, None, "Server restarting"),
    ({"code": 1008, "kick": kick("server_full", True, after=5)}, True, None, "Server full"),
    ({"code": 1008, "kick": kick("flood", False)}, False, "rejoin", "The server refused"),
    ({"code": 1008, "kick": kick("stalled", True)}, True, None, "Connection lost"),
    ({"code": 1008, "kick": kick("bad_resume", False)}, True, None, "Connection lost"),
    # The drain's Kick wins over the 1006 a browser reports when the close frame was lost.
    ({"code": 1006, "kick": kick("draining", True, code=1001)}, True, None, "Server restarting"),
    # An older server: no label, the close code and reason decide.
    ({"code": 1001, "reason": "server shutting down"}, True, None, "Server restarting"),
    ({"code": 1006, "reason": ""}, True, None, "Connection lost"),
    ({"code": 1006, "kick": {"code": 1001, "reason": "server shutting down", "label": "",
                             "retry": False, "retryAfterS": 0}}, True, None, "Server restarting"),
    ({"code": 1008, "reason": "name must be 1-24 printable characters"}, False, "rename",
     "That name was refused"),
    ({"code": 1008, "reason": "kicked by admin"}, False, "rejoin", "You were removed"),
    ({"code": 1008, "reason": "kicked by an admin: try again in 42 s"}, False, "rejoin",
     "You are kept out"),
    ({"code": 1008, "reason": "protocol version 9 unsupported (server speaks 1)"}, False, "reload",
     "This page is out of date"),
    ({"code": 1008, "reason": "resume token unknown or expired"}, True, None, "Connection lost"),
    ({"code": 1008, "reason": "server full"}, True, None, "Server full"),
    ({"code": 1000, "reason": "left"}, False, "rejoin", "You left the game"),
    ({"code": 1000, "reason": "client closed", "stopped": True}, False, "rejoin", "You left"),
]


def test_close_verdicts(tmp_path):
    got = run(tmp_path, [("status", "closeVerdict", [info]) for info, *_ in VERDICTS])
    for (info, retry, action, title), v in zip(VERDICTS, got, strict=True):
        assert v["retry"] is retry, info
        assert v["action"] == action, info
        assert v["title"].startswith(title), (info, v["title"])
        assert not re.search(r"\b1\d{3}\b", v["title"]), "no close codes in player language"
    kicked = got[1]
    assert kicked["waitS"] == 60
    banned_by_reason = next(v for (info, *_), v in zip(VERDICTS, got, strict=True)
                            if "try again in 42 s" in info.get("reason", ""))
    assert banned_by_reason["waitS"] == 42
    assert got[7]["retryAfterS"] == 5
    # The refused name's own reason is shown; a kick's is not repeated.
    assert got[0]["detail"] == "name must be 1-24 printable characters"


def test_banner_text_counts_down(tmp_path):
    retrying = {"retry": True, "title": "Server restarting — reconnecting…", "action": None}
    kicked = {"retry": False, "title": "You were removed by an admin", "action": "rejoin"}
    got = run(tmp_path, [
        ("status", "bannerText", [retrying, {"nowS": 10, "retryAt": 13.2}]),
        ("status", "bannerText", [retrying, {"nowS": 13, "retryAt": 13.2}]),
        ("status", "bannerText", [retrying, {"nowS": 10, "retryAt": 13.2, "connecting": True}]),
        ("status", "bannerText", [kicked, {"nowS": 100, "waitUntil": 159.5}]),
        ("status", "bannerText", [kicked, {"nowS": 160, "waitUntil": 159.5}]),
    ])
    assert got == ["Server restarting — reconnecting in 4 s…",
                   "Server restarting — reconnecting…",
                   "Server restarting — reconnecting…",
                   "You were removed by an admin — you can rejoin in 60 s",
                   "You were removed by an admin"]


def test_respawn_countdown_counts_down_from_the_death_tick(tmp_path):
    # Died at tick 300, 3 s at 30 Hz: respawns at tick 390.
    ticks = [300, 301, 329.9, 330, 359, 360.5, 389, 390, 400]
    calls = [("events", "respawnSecondsLeft", [300, 3.0, 30, t]) for t in ticks]
    calls += [("events", "respawnSecondsLeft", [300, 0, 30, 310]),
              ("events", "respawnSecondsLeft", [None, 3.0, 30, 310])]
    got = run(tmp_path, calls)
    assert got[: len(ticks)] == [3, 3, 3, 2, 2, 1, 1, 0, 0]
    assert got[len(ticks):] == [None, None]


def test_player_colours_are_per_id_and_avoid_own_cyan(tmp_path):
    got = run(tmp_path, [("events", "playerColor", [i]) for i in range(1, 201)])
    assert len(set(got)) == 200, "each id its own colour (two players named bob differ)"
    for c in got:
        hue = float(re.match(r"hsl\(([\d.]+),", c).group(1))
        assert not 150 <= hue < 210, c


def test_shortened_scoreboard_keeps_top_three_and_me(tmp_path):
    rows = [{"playerId": i, "name": n, "score": s, "me": n == "me"}
            for i, (n, s) in enumerate([("a", 5), ("b", 9), ("me", 1), ("c", 7), ("d", 3),
                                        ("bob", 3), ("bob", 3)], start=1)]
    got = run(tmp_path, [("hud", "scoreboardRows", [rows, True]),
                         ("hud", "scoreboardRows", [rows, False]),
                         ("hud", "scoreboardRows", [rows[:2], True])])
    compact, full, short = got
    assert [(r["name"], r["rank"]) for r in compact] == [("b", 1), ("c", 2), ("a", 3), ("me", 7)]
    assert len(full) == 7 and [r["rank"] for r in full] == list(range(1, 8))
    # Two players with one name stay two rows, in player-id order.
    assert [r["playerId"] for r in full if r["name"] == "bob"] == [6, 7]
    assert [r["name"] for r in short] == ["b", "a"]


def test_virtual_stick(tmp_path):
    got = run(tmp_path, [("input", "stickVector", [0, 0, 60]),
                         ("input", "stickVector", [5, 0, 60]),  # dead zone
                         ("input", "stickVector", [30, 0, 60]),
                         ("input", "stickVector", [0, -120, 60]),  # past the rim: length 1
                         ("input", "stickVector", [90, 90, 60]),
                         ("input", "stickVector", [10, 10, 0])])
    assert got[0] == {"x": 0, "y": 0} and got[1] == {"x": 0, "y": 0}
    assert got[2] == {"x": 0.5, "y": 0}
    assert got[3] == {"x": 0, "y": -1}
    assert abs(got[4]["x"] - 2 ** -0.5) < 1e-12 and abs(got[4]["y"] - 2 ** -0.5) < 1e-12
    assert got[5] == {"x": 0, "y": 0}
