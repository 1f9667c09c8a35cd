"""The browser's shot rules under Node (client_demo/web/shots.js): the view a shot claims,
the cooldown in ticks, and how predicted shots are matched with the server's Shots frames
(by owner and seq): a bound projectile hides its server entity (no duplicate) and slides
onto the server's path (no jump), a refused one fades out, hitscan hits become markers.

Skipped when ``node`` (or gen/wire.js) is missing, except under CI=true.
"""

from __future__ import annotations

from itertools import pairwise
from pathlib import Path

import pytest

from tests.unit.webnode import run_script

WEB = Path(__file__).resolve().parents[2] / "client_demo" / "web"

SCRIPT = r"""
const web = process.argv[2];
const { ShotBook, viewOf, cooldownTicks, FADE_S } = await import(`${web}/shots.js`);
const out = {};
const F = (...ticks) => ticks.map((tick) => ({ tick }));
out.views = [
  viewOf(F(10, 11, 13), 10.25), viewOf(F(10, 11, 13), 12), viewOf(F(10, 11, 13), 14),
  viewOf(F(10, 11, 13), 9), viewOf([], 5), viewOf(F(10, 11), 11), viewOf(F(10, 11, 13), 20),
];
out.cooldown = [cooldownTicks(0.25, 30), cooldownTicks(0.01, 30), cooldownTicks(0.5, 60)];

// A projectile: fired at seq 5 from (100, 100) aiming +x, muzzle 15, 600 units/s.
const P = { hitscan: false, range: 600, speed: 600, muzzle: 15, cooldownTicks: 8 };
const book = new ShotBook();
const own = 2;
const shot = book.fire(5, { x: 100, y: 100 }, 0, P, 1.0);
out.tooSoon = book.fire(9, { x: 100, y: 100 }, 0, P, 1.1);  // 4 ticks later: cooldown
const at = (t) => book.drawables(t, 1 / 60).projectiles;
out.beforeBind = at(1.05);
book.onShots({ tick: 100, shots: [{ shooter: own, seq: 5, projectile: 42, projectileGen: 7 }] },
             own, 1.1);
out.hidden = [...book.hidden()];
// The server's projectile two ticks after spawning, 1.5 units off our path in y.
const words = new Uint16Array(50 * 8);
const rec = (slot, x, y, id) => {
  words[slot * 8] = Math.round(x * 16); words[slot * 8 + 1] = Math.round(y * 16);
  words[slot * 8 + 6] = id;
};
rec(41, 115 + 600 * 2 / 30, 101.5, 3 | (7 << 8));
book.onSnapshot(102, words, 5, 1.15, 30);
// Frames at 60 Hz for 0.3 s: the drawn y moves toward 101.5 a little each frame.
out.path = [];
for (let i = 0; i <= 18; i++) out.path.push(at(1.15 + i / 60)[0]);
// The entity leaves a snapshot (a hit): the prediction ends with it.
words.fill(0);
book.onSnapshot(110, words, 12, 1.5, 30);
out.afterGone = [at(1.5).length, [...book.hidden()]];
out.afterHidden = [at(2.6).length, [...book.hidden()], book.pending.size];

// Refused by the server: applied (last_input_seq >= seq) with no Shot for it.
const r = new ShotBook();
r.fire(20, { x: 0, y: 0 }, 0, P, 2.0);
r.onShots({ tick: 5, shots: [] }, own, 2.05);
r.onSnapshot(5, null, 19, 2.06, 30);
out.stillPredicted = r.pending.get(20).state;
r.onSnapshot(6, null, 20, 2.1, 30);
out.refused = r.pending.get(20).state;
out.fading = r.drawables(2.1 + FADE_S / 2, 0).projectiles.map((p) => p.alpha);
out.fadedOut = [r.drawables(2.1 + FADE_S, 0).projectiles.length, r.pending.size, r.stats.refused];

// Hitscan: the server's ray replaces ours; a hit is a marker; others' shots are tracers.
const H = { hitscan: true, range: 500, speed: 0, muzzle: 15, cooldownTicks: 8 };
const h = new ShotBook();
h.fire(3, { x: 10, y: 10 }, 0, H, 3.0);
out.ownTracer = h.drawables(3.0, 0).tracers;
h.fire(11, { x: 10, y: 10 }, Math.PI / 2, H, 3.3);
out.hits = h.onShots({ tick: 9, shots: [
  { shooter: own, seq: 3, x0: 10, y0: 10, x1: 200, y1: 12, target: 17, rewindMs: 150 },
  { shooter: own, seq: 11, x0: 10, y0: 10, x1: 10, y1: 510, target: -1 },
  { shooter: 5, seq: 99, x0: 50, y0: 50, x1: 60, y1: 60, target: 2 },
  { shooter: 5, seq: 98, projectile: 8, projectileGen: 1 },
] }, own, 3.35);
out.tracersAfter = h.drawables(3.35, 0).tracers;
out.stats = h.stats;
process.stdout.write(JSON.stringify(out));
"""


@pytest.fixture(scope="module")
def result(tmp_path_factory: pytest.TempPathFactory) -> dict:
    return run_script(tmp_path_factory.mktemp("shots") / "shots.mjs", SCRIPT, WEB.as_uri(),
                      timeout=60)


def test_a_shot_claims_the_two_ticks_drawn_and_the_blend(result):
    v = [(x["viewTick"], x["viewNextTick"], x["viewBlend"]) for x in result["views"]]
    # Past the newest frame the page extrapolates up to 3 ticks: 14 is 13 + 1 drawn ahead.
    assert v == [(10, 11, 0.25), (11, 13, 0.5), (14, 15, 0), (10, 10, 0), (0, 0, 0),
                 (11, 12, 0), (16, 17, 0)]


def test_the_cooldown_is_counted_in_ticks_as_the_sim_rounds_it(result):
    assert result["cooldown"] == [8, 1, 30]
    assert result["tooSoon"] is None


def test_a_predicted_projectile_flies_at_once_and_binds_to_the_server_entity(result):
    (p,) = result["beforeBind"]
    assert p["x"] == pytest.approx(115 + 600 * 0.05) and p["y"] == 100
    assert result["hidden"] == [[41, 3 | (7 << 8)]]  # drawn once: the server's is hidden


def test_a_bound_projectile_slides_onto_the_servers_path_without_a_jump(result):
    ys = [p["y"] for p in result["path"]]
    steps = [b - a for a, b in pairwise(ys)]
    assert all(0 <= s <= 0.3 for s in steps), steps  # never more than a fifth of the error
    assert ys[-1] == pytest.approx(101.5, abs=0.05)
    xs = [p["x"] for p in result["path"]]
    assert all(b - a == pytest.approx(10, abs=0.1) for a, b in pairwise(xs))


def test_the_prediction_ends_when_its_entity_leaves_the_snapshot(result):
    # Not drawn any more, but the server entity stays hidden while the interpolated past
    # still shows it (a second), then the prediction is forgotten.
    assert result["afterGone"] == [0, [[41, 3 | (7 << 8)]]]
    assert result["afterHidden"] == [0, [], 0]


def test_a_shot_the_server_refused_fades_out_quietly(result):
    assert result["stillPredicted"] == "predicted"  # seq 20 not applied yet
    assert result["refused"] == "refused"
    (alpha,) = result["fading"]
    assert 0 < alpha < 1
    assert result["fadedOut"] == [0, 0, 1]


def test_hitscan_tracers_take_the_servers_ray_and_hits_become_markers(result):
    (mine,) = result["ownTracer"]
    assert (mine["x1"], mine["y1"]) == (510, 10) and mine["own"]
    assert result["hits"] == [{"slot": 17, "x": 200, "y": 12, "seq": 3}]
    tracers = result["tracersAfter"]
    ends = sorted((t["x1"], t["y1"], t["own"], t["hit"]) for t in tracers)
    assert ends == [(10, 510, True, False), (60, 60, False, True)]  # seq 3 aged out
    s = result["stats"]
    assert (s["confirmed"], s["hits"], s["others"]) == (2, 1, 1)
