"""The browser's big-world parts under Node: the camera (camera.js), the fades at the edge
of interest (fade.js), the minimap's layout (minimap.js) and the position scale from
Welcome (codec.js `setPosScale`).

Skipped when ``node`` (or gen/wire.js) is missing, except under CI=true.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from itertools import pairwise
from pathlib import Path

import pytest

from tests.unit.webnode import run_script

WEB = Path(__file__).resolve().parents[2] / "client_demo" / "web"

SCRIPT = r"""
const web = process.argv[2];
const { cameraTarget, CameraFollow, SNAP_UNITS } = await import(`${web}/camera.js`);
const { Fader, FADE_S } = await import(`${web}/fade.js`);
const { wantsMinimap, minimapLayout } = await import(`${web}/minimap.js`);
const codec = await import(`${web}/codec.js`);
const out = {};

// -- camera: today's arena at 1280 x 720 and a 8000 x 8000 world.
const arena = { w: 1000, h: 1000 }, big = { w: 8000, h: 8000 };
out.arena = [{ x: 100, y: 100 }, { x: 500, y: 500 }, { x: 900, y: 900 }, null].map(
  (f) => cameraTarget(1280, 720, arena, f));
out.big = [{ x: 4000, y: 4000 }, { x: 10, y: 7990 }, { x: 8000, y: 0 }].map(
  (f) => cameraTarget(1280, 720, big, f));
// Following a player who moves at 300 units/s for 1 s at 60 fps, then jumps 1000 units.
const follow = new CameraFollow();
out.followPath = [];
let px = 2000;
for (let i = 0; i <= 60; i++) {
  const cam = follow.step(cameraTarget(1280, 720, big, { x: px, y: 3000 }), 1 / 60);
  out.followPath.push([px, cam.x, cam.y]);
  px += 300 / 60;
}
out.glide = [];
for (let i = 0; i < 30; i++) {
  out.glide.push(follow.step(cameraTarget(1280, 720, big, { x: 3300, y: 4000 }), 1 / 60).y);
}
const far = { x: 3300, y: 4000 + SNAP_UNITS + 500 };
out.snap = follow.step(cameraTarget(1280, 720, big, far), 1 / 60);
// The arena's x axis fits: eased or not, it never moves.
const fa = new CameraFollow();
out.arenaFollowX = [];
for (const x of [100, 900, 300]) {
  for (let i = 0; i < 5; i++) {
    out.arenaFollowX.push(fa.step(cameraTarget(1280, 720, arena, { x, y: 500 }), 1 / 60).x);
  }
}

// -- fades: entity 7 (id 2|1<<8) enters at tick 100, drawn from t = 1.0.
const npc = (slot, x, extra = {}) => ({ slot, id: 2 | (1 << 8), kind: 2, x, y: 50, vx: 30, vy: 0,
                                        flags: 0, ...extra });
const f = new Fader();
f.note(100, [{ slot: 7, id: 2 | (1 << 8) }], []);
const fadeOf = (list, slot) => {
  const e = list.find((x) => x.slot === slot && !x.ghost);
  return e ? (e.fade ?? 1) : null;
};
out.fadeIn = [];
for (let i = 0; i <= 8; i++) {
  const t = 1.0 + i * 0.05;
  const list = f.apply([npc(7, 10 + i), npc(8, 20 + i)], t);
  out.fadeIn.push([fadeOf(list, 7), fadeOf(list, 8)]);  // 8 was never marked: no fade
}
// Entity 7 leaves at tick 120 (it stops being drawn at t = 2.0); entity 8 is removed from
// the world (no mark): it vanishes at once.
f.note(120, [], [{ slot: 7, id: 2 | (1 << 8) }]);
f.apply([npc(7, 40), npc(8, 40)], 1.99);
out.fadeOut = [];
for (let i = 0; i <= 5; i++) {
  const list = f.apply([], 2.0 + i * 0.05);
  out.fadeOut.push(list.map((e) => [e.slot, e.ghost === true, +e.fade.toFixed(3),
                                    +e.x.toFixed(2)]));
}
// A dead entity that leaves stays where it lies while it fades.
const g = new Fader();
g.note(5, [], [{ slot: 3, id: 1 }]);
g.apply([{ slot: 3, id: 1, kind: 1, x: 10, y: 10, vx: 0, vy: 0, flags: 1 }], 0);
g.apply([], 0.1);
out.deadGhost = g.apply([], 0.2).map((e) => [e.x, e.fade]);
// Leaving, then back in before it faded: it fades in from the alpha it had.
const h = new Fader();
h.note(1, [], [{ slot: 4, id: 1 }]);
h.apply([{ slot: 4, id: 1, kind: 1, x: 0, y: 0, vx: 0, vy: 0, flags: 0 }], 0);
h.apply([], 0.01);
const back = h.apply([{ slot: 4, id: 1, kind: 1, x: 0, y: 0, vx: 0, vy: 0, flags: 0 }], 0.06);
out.comeBack = back.map((e) => [e.ghost === true, +(e.fade ?? 1).toFixed(3)]);
out.fadeS = FADE_S;

// -- minimap
out.wants = [
  wantsMinimap(arena, { x0: 0, y0: 120, x1: 1351, y1: 880 }),
  wantsMinimap(big, { x0: 3000, y0: 3600, x1: 4351, y1: 4360 }),
  wantsMinimap({ w: 2000, h: 800 }, { x0: 0, y0: 0, x1: 1351, y1: 760 }),
];
out.layout = [minimapLayout(big, 160), minimapLayout({ w: 16000, h: 4000 }, 160)];

// -- position scale
const words = new Uint16Array(8);
words[0] = 64000; words[1] = 8; words[6] = 1;
out.scale16 = codec.entityAt(words, 0);
out.set4 = codec.setPosScale(4);
out.scale4 = codec.entityAt(words, 0);
out.set0 = [codec.setPosScale(0), codec.setPosScale(undefined), codec.setPosScale(NaN)];
process.stdout.write(JSON.stringify(out));
"""


@pytest.fixture(scope="module")
def result(tmp_path_factory: pytest.TempPathFactory) -> dict:
    return run_script(tmp_path_factory.mktemp("bigview") / "bigview.mjs", SCRIPT, WEB.as_uri(),
                      timeout=60)


def test_the_arena_camera_is_todays_centred_on_x_following_on_y(result):
    xs = {round(c["x"], 6) for c in result["arena"]}
    assert xs == {500}, "1280 px show the arena's whole width: x never moves"
    assert all(c["fitsX"] and not c["fitsY"] for c in result["arena"])
    scale = result["arena"][0]["scale"]
    assert scale == pytest.approx(720 / 760)  # about 760 units across the short side
    half, pad = 360 / scale, 40 / scale
    ys = [c["y"] for c in result["arena"]]
    assert ys == pytest.approx([half - pad, 500, 1000 + pad - half, 500])


def test_a_big_world_camera_follows_and_clamps_at_the_edges(result):
    centre, corner, other = result["big"]
    scale = centre["scale"]
    assert (centre["x"], centre["y"]) == (4000, 4000)
    half_w, half_h, pad = 640 / scale, 360 / scale, 40 / scale
    assert (corner["x"], corner["y"]) == pytest.approx((half_w - pad, 8000 + pad - half_h))
    assert (other["x"], other["y"]) == pytest.approx((8000 + pad - half_w, half_h - pad))


def test_the_camera_eases_after_a_moving_player_without_jumps(result):
    path = result["followPath"]
    lags = [px - cx for px, cx, _ in path]
    assert lags[0] == 0  # the first frame snaps
    steps = [b[1] - a[1] for a, b in pairwise(path)]
    assert all(0 <= s <= 5.5 for s in steps), steps  # never faster than the player (5/frame)
    assert 0 < lags[-1] < 40  # a short lag behind 300 units/s
    glide = result["glide"]
    steps = [b - a for a, b in pairwise(glide)]
    assert all(s > 0 for s in steps) and max(steps) < 200, steps  # 1000 units, no jump
    assert glide[-1] == pytest.approx(4000, abs=5)
    assert result["snap"]["y"] == pytest.approx(4000 + 3000 + 500)  # too far: snaps


def test_an_axis_that_fits_never_moves(result):
    assert set(result["arenaFollowX"]) == {500}


def test_an_entity_entering_interest_fades_in_over_200_ms(result):
    assert result["fadeS"] == 0.2
    fades = [a for a, _ in result["fadeIn"]]
    assert fades[0] == pytest.approx(0.001)
    assert all(b > a for a, b in pairwise(fades[:5])), fades
    assert fades[2] == pytest.approx(0.5)
    assert fades[4:] == [1, 1, 1, 1, 1]
    assert {b for _, b in result["fadeIn"]} == {1}, "an unmarked spawn pops as before"


def test_an_entity_leaving_interest_fades_out_and_a_removed_one_vanishes(result):
    frames = result["fadeOut"]
    assert [len(f) for f in frames] == [1, 1, 1, 1, 0, 0]  # 7's ghost only; 8 is gone at once
    alphas = [f[0][2] for f in frames[:4]]
    assert alphas == pytest.approx([1, 0.75, 0.5, 0.25], abs=1e-3)
    assert all(f[0][0] == 7 and f[0][1] for f in frames[:4])
    xs = [f[0][3] for f in frames[:4]]
    # It keeps moving along its velocity from where (and when) it was last drawn.
    assert xs == pytest.approx([40 + 30 * (0.01 + 0.05 * i) for i in range(4)], abs=0.01)


def test_a_dead_entity_fades_where_it_lies(result):
    (x, fade), = result["deadGhost"]
    assert x == 10 and fade == pytest.approx(0.5)


def test_coming_back_mid_fade_continues_from_the_alpha_it_had(result):
    (ghost, fade), = result["comeBack"]
    assert not ghost
    assert fade == pytest.approx(0.75, abs=1e-3)  # gone at t = 0.01, back at 0.06: 0.75


def test_the_minimap_shows_only_for_worlds_much_bigger_than_the_view(result):
    assert result["wants"] == [False, True, False]
    big, wide = result["layout"]
    assert big["k"] == pytest.approx(152 / 8000) and big["ox"] == pytest.approx(4)
    assert wide["k"] == pytest.approx(152 / 16000)
    assert wide["oy"] == pytest.approx((160 - 4000 * wide["k"]) / 2)


def test_positions_use_the_welcomes_scale(result):
    assert (result["scale16"]["x"], result["scale16"]["y"]) == (4000, 0.5)
    assert result["set4"] == 4
    assert (result["scale4"]["x"], result["scale4"]["y"]) == (16000, 2)
    assert result["set0"] == [16, 16, 16]


# -- what the chunk mirror tells the fades (chunks.js ChunkMirror.entered / leftIds) -------------

MIRROR_SCRIPT = r"""
const web = process.argv[2];
const { ChunkMirror } = await import(`${web}/chunks.js`);
const frames = JSON.parse(process.argv[3]);
const hex = (h) => Uint8Array.from(Buffer.from(h, "hex"));
const m = new ChunkMirror(30, 8, 64);
const out = [];
for (const f of frames) {
  await m.apply(f.tick, f.chunks.map(hex), hex(f.personal));
  out.push({ entered: m.entered.map((e) => e.slot), left: m.leftIds.map((e) => e.slot),
             size: m.size, dense: Array.from(m.wordsAt(f.tick + 3)) });
}
process.stdout.write(JSON.stringify(out));
"""


def _record(kind: int, gen: int, x: int, vx: int) -> list[int]:
    return [x, 100, vx & 0xFFFF, 0, 50, 0, kind | (gen << 8), 0]


def test_the_mirror_tells_enters_and_leaves_apart_from_removals(tmp_path):
    """Tick 1 (reset): slots 3 and 5 enter. Tick 2: 3 LEFT our interest (it fades out), 5 is
    GONE from the world (it must not fade: it is not in `leftIds`), 7 enters. Tick 3: 5 and
    3's removals repeat (unacked) and change nothing. The dense view 3 ticks after tick 3
    is dead-reckoned with the position scale 8."""
    import numpy as np

    from proto.chunks import encode_chunk, encode_personal

    node = shutil.which("node")
    if not node:
        if os.environ.get("CI") == "true":
            pytest.fail("node is missing", pytrace=False)
        pytest.skip("node is missing")
    empty = np.zeros(0, dtype=np.int64)
    world = np.zeros((8, 8), dtype="<u2")  # the whole world's records, slot by slot
    world[3], world[5] = _record(2, 1, 800, 160), _record(1, 0, 900, 0)
    world[7] = _record(2, 4, 1000, -32)
    key1 = encode_chunk(4, empty, np.array([3, 5]), world, None, elapsed_ticks=0,
                        tick_rate=30, pos_scale=8)
    key2 = encode_chunk(9, empty, np.array([7]), world, None, elapsed_ticks=0, tick_rate=30,
                        pos_scale=8)
    frames = [
        {"tick": 1, "chunks": [key1.hex()],
         "personal": encode_personal(reset=True, left=empty, gone=empty, spawn_slots=empty,
                                     spawn_words=np.zeros((0, 8), "<u2")).hex()},
        {"tick": 2, "chunks": [key2.hex()],
         "personal": encode_personal(reset=False, left=np.array([3]), gone=np.array([5]),
                                     spawn_slots=empty,
                                     spawn_words=np.zeros((0, 8), "<u2")).hex()},
        {"tick": 3, "chunks": [],
         "personal": encode_personal(reset=False, left=np.array([3]), gone=np.array([5]),
                                     spawn_slots=empty,
                                     spawn_words=np.zeros((0, 8), "<u2")).hex()},
    ]
    script = tmp_path / "mirror.mjs"
    script.write_text(MIRROR_SCRIPT)
    done = subprocess.run([node, str(script), WEB.as_uri(), json.dumps(frames)],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr[-3000:]
    steps = json.loads(done.stdout)
    assert [(s["entered"], s["left"], s["size"]) for s in steps] == [
        ([3, 5], [], 2), ([7], [3], 1), ([], [], 1)]
    dense = steps[-1]["dense"]
    assert len(dense) == 8 * 8  # up to slot 7
    # Slot 7 as of tick 2, drawn at tick 6: 4 ticks at -32/16 units/s = -2 units/s, in
    # 8 quanta per unit: floor((2 * -32 * 4 * 8 + 16 * 30) / (32 * 30)) = -2 quanta.
    assert dense[7 * 8] == 1000 - 2
    assert dense[3 * 8: 6 * 8] == [0] * 24
