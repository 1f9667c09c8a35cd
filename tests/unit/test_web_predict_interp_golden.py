"""Golden vectors for the browser's movement rule (predict.js) and interpolator (interp.js),
generated from the server's simulation (sim.step) and replayed under Node.

predict.js
    ``MoveRule.step`` must give ``sim.step.move_players``'s float32 numbers bit for bit,
    for random parameters, start states and moves (zero, diagonal, over-long, non-finite,
    into the walls). ``Predictor`` is replayed against a simulated server that applies
    each command a few ticks late and sends quantised snapshots: after every reconcile its
    state must equal the server's quantised state moved forward by the still-pending
    commands with the Python rule, and it must drop exactly the acknowledged commands.

interp.js
    NPC trajectories from ``sim.step`` are quantised as the server sends them, given
    arrival times with seeded jitter, latency, losses, a reused slot and a teleport, and
    pushed into ``Interpolator`` with time as a parameter; ``sample(t)`` is read at 60 Hz.
    Checked against the sim: between two snapshots an NPC moving in a straight line is
    drawn where the sim had it at the render tick (within quantisation); the render clock
    never runs backwards, keeps pace with the tick rate and stays behind the newest
    snapshot; a reused slot or a teleport is never drawn at an in-between position.

One Node process runs every case. Skipped when ``node`` (or the generated gen/wire.js) is
missing, except under CI=true, where that is a failure.
"""

from __future__ import annotations

import itertools
import json
import math
from pathlib import Path

import numpy as np
import pytest

from proto import codec
from sim.params import Params
from sim.step import Inputs, move_players, step
from sim.world import World
from tests.unit.webnode import run_script

ROOT = Path(__file__).resolve().parents[2]
WEB = ROOT / "client_demo" / "web"
F32 = np.float32

NODE_SCRIPT = """\
import { readFileSync } from "node:fs";
const { MoveRule, Predictor } = await import(process.argv[2]);
const { Interpolator } = await import(process.argv[3]);
const cases = JSON.parse(readFileSync(process.argv[4], "utf8"));
const num = (v) => (typeof v === "string" ? Number(v.replace("inf", "Infinity")) : v);
const out = { rule: [], predictor: [], interp: [] };

for (const c of cases.rule) {
  const rule = new MoveRule(c.params, c.tickRate);
  let s = c.start;
  const states = [];
  for (const [mx, my] of c.moves) {
    s = rule.step(s, num(mx), num(my));
    states.push([s.x, s.y, s.vx, s.vy]);
  }
  out.rule.push(states);
}

for (const c of cases.predictor) {
  const p = new Predictor();
  p.rule = new MoveRule(c.params, c.tickRate);
  const log = [];
  for (const ev of c.events) {
    if (ev.cmd) p.apply(ev.cmd);
    else {
      p.reconcile(ev.auth, ev.lastInputSeq, false);
      log.push({ state: [p.state.x, p.state.y, p.state.vx, p.state.vy],
                 pending: p.pending.map((x) => x.seq) });
    }
  }
  out.predictor.push(log);
}

for (const c of cases.interp) {
  const ip = new Interpolator();
  ip.reset(c.rate);
  let next = 0;
  const samples = [];
  for (const t of c.sampleAt) {
    while (next < c.frames.length && c.frames[next].at <= t) {
      const f = c.frames[next++];
      ip.push(f.tick, Uint16Array.from(f.words), f.at);
    }
    const { entities, renderTick } = ip.sample(t, -1);
    samples.push({ t, renderTick, pushed: next,
                   e: entities.map((e) => [e.slot, e.id, e.x, e.y]) });
  }
  out.interp.push(samples);
}
process.stdout.write(JSON.stringify(out));
"""


# -- the Python side ----------------------------------------------------------------------------

def random_params(rng: np.random.Generator) -> Params:
    return Params().with_changes({
        "world.width": float(rng.choice([200.0, 1000.0, 2500.0])),
        "world.height": float(rng.choice([150.0, 1000.0])),
        "world.tick_rate": int(rng.choice([10, 20, 30, 60, 128])),
        "player.radius": float(rng.uniform(1.0, 40.0)),
        "player.accel": float(rng.choice([rng.uniform(1.0, 3000.0), 100000.0])),
        "player.max_speed": float(rng.uniform(1.0, 1500.0)),
        "player.friction": float(rng.choice([0.0, rng.uniform(0.0, 100.0)])),
    })


def move_params(p: Params) -> dict[str, float]:
    """What Welcome.params carries (float32 on the wire), as the browser sees it."""
    return {"worldWidth": float(F32(p.world_width)), "worldHeight": float(F32(p.world_height)),
            "playerAccel": float(F32(p.player_accel)),
            "playerMaxSpeed": float(F32(p.player_max_speed)),
            "playerFriction": float(F32(p.player_friction)),
            "playerRadius": float(F32(p.player_radius))}


def random_moves(rng: np.random.Generator, n: int) -> list[tuple[float, float]]:
    """Runs of one direction (so players reach walls and full speed), with odd values mixed in."""
    odd = [(0.0, 0.0), (1.0, 1.0), (-1.0, 0.0), (3.0, -4.0), (1e30, 1e30), (0.3, 0.1),
           (math.nan, 0.0), (math.inf, 1.0), (-math.inf, -math.inf), (1e-30, 0.0)]
    moves: list[tuple[float, float]] = []
    while len(moves) < n:
        if rng.random() < 0.3:
            moves.append(odd[rng.integers(len(odd))])
        else:
            d = tuple(float(F32(v)) for v in rng.uniform(-1.2, 1.2, 2))
            moves.extend([d] * int(rng.integers(1, 25)))
    return moves[:n]


def js_num(v: float) -> float | str:
    """JSON has no inf/nan: the Node side turns these strings back into numbers."""
    return v if math.isfinite(v) else str(v)


class OnePlayer:
    """One player in a real World, moved by the server's own rule."""

    def __init__(self, params: Params, x: float, y: float, vx: float = 0.0,
                 vy: float = 0.0) -> None:
        self.world = World(params, np.random.Generator(np.random.PCG64(1)))
        self.slot = self.world.add_player(1)
        self.world.pos[self.slot] = (x, y)
        self.world.vel[self.slot] = (vx, vy)
        self.inputs = Inputs.empty(self.world.capacity)
        self.slots = np.array([self.slot])
        self.dt = F32(1.0 / params.tick_rate)

    def step(self, mx: float, my: float) -> list[float]:
        self.inputs.move[self.slot] = (mx, my)
        with np.errstate(invalid="ignore", over="ignore"):
            move_players(self.world, self.slots, self.inputs, self.dt)
        return self.state()

    def state(self) -> list[float]:
        p, v = self.world.pos[self.slot], self.world.vel[self.slot]
        return [float(p[0]), float(p[1]), float(v[0]), float(v[1])]

    def set(self, s: list[float]) -> None:
        self.world.pos[self.slot] = s[:2]
        self.world.vel[self.slot] = s[2:]


def rule_case(rng: np.random.Generator) -> tuple[dict, list[list[float]]]:
    p = random_params(rng)
    r = float(F32(p.player_radius))
    start = [float(F32(rng.uniform(r, p.world_width - r))),
             float(F32(rng.uniform(r, p.world_height - r))),
             float(F32(rng.uniform(-p.player_max_speed, p.player_max_speed))),
             float(F32(rng.uniform(-p.player_max_speed, p.player_max_speed)))]
    moves = random_moves(rng, 150)
    player = OnePlayer(p, *start)
    want = [player.step(mx, my) for mx, my in moves]
    case = {"params": move_params(p), "tickRate": p.tick_rate,
            "start": dict(zip(("x", "y", "vx", "vy"), start, strict=True)),
            "moves": [[js_num(mx), js_num(my)] for mx, my in moves]}
    return case, want


def dequantised(s: list[float]) -> list[float]:
    """A state as a snapshot carries it: 1/16 unit and 1/16 unit/s, back in float32."""
    q = [round(float(F32(v) * F32(16))) / 16 for v in s]
    return [float(F32(v)) for v in q]


def predictor_case(rng: np.random.Generator) -> tuple[dict, list[dict]]:
    """The client applies one command per tick; the server applies it `lag` ticks later and
    sends a quantised snapshot every `every` ticks."""
    p = random_params(rng)
    r = float(p.player_radius)
    start = [float(F32(rng.uniform(r, p.world_width - r))),
             float(F32(rng.uniform(r, p.world_height - r))), 0.0, 0.0]
    server = OnePlayer(p, *start)
    lag, every = int(rng.integers(1, 6)), int(rng.integers(1, 4))
    moves = random_moves(rng, 120)
    events: list[dict] = [{"auth": dict(zip(("x", "y", "vx", "vy"), dequantised(start),
                                            strict=True)), "lastInputSeq": 0}]
    want: list[dict] = []
    applied = 0
    for seq, (mx, my) in enumerate(moves, start=1):
        events.append({"cmd": {"seq": seq, "moveX": js_num(mx), "moveY": js_num(my),
                               "aim": 0, "buttons": 0}})
        if seq - lag > applied:
            applied += 1
            server.step(*moves[applied - 1])
        if seq % every == 0:
            auth = dequantised(server.state())
            events.append({"auth": dict(zip(("x", "y", "vx", "vy"), auth, strict=True)),
                           "lastInputSeq": applied})
            replay = OnePlayer(p, *auth)
            for mx2, my2 in moves[applied:seq]:
                replay.step(mx2, my2)
            want.append({"state": replay.state(), "pending": list(range(applied + 1, seq + 1))})
    # The first reconcile (before any command) just takes the server's state.
    want.insert(0, {"state": dequantised(start), "pending": []})
    return {"params": move_params(p), "tickRate": p.tick_rate, "events": events}, want


def interp_case(rng: np.random.Generator, *, jitter_s: float, loss: float) -> dict:
    """NPCs from sim.step, quantised per tick; slot 1 is reused (new generation, elsewhere)
    at tick 40 and slot 2 teleports (same generation) at tick 60."""
    p = Params().with_changes({"world.tick_rate": 30, "npc.count": 6, "world.capacity": 64,
                               "projectile.max": 0,
                               "npc.turn_interval_ticks": 45, "npc.speed": 120.0,
                               "projectile.enabled": False,
                               "world.seed": int(rng.integers(1, 2**31))})
    world = World.create(p)
    inputs = Inputs.empty(world.capacity)
    ticks = 150
    truth: list[np.ndarray] = []  # float positions per tick (after the sim's step)
    frames = []
    at = 0.2
    for _ in range(ticks):
        step(world, inputs)
        tick = world.tick
        if tick == 40:
            world.gen[1] += np.uint8(1)
            world.pos[1] = (world.params.world_width - world.pos[1][0], 50.0)
        if tick == 60:
            world.pos[2] = ((world.pos[2][0] + 400.0) % world.params.world_width, world.pos[2][1])
        truth.append(world.pos[:8].astype(np.float64).copy())
        state = codec.quantize(pos=world.pos, vel=world.vel, hp=world.hp, score=world.score,
                               kind=world.kind, gen=world.gen, aim=world.aim,
                               flags=world.flags, alive=world.alive)[:8]
        # Arrival: the server's send time plus latency plus seeded jitter, in order (TCP).
        at = max(at, tick / p.tick_rate + 0.05 + float(rng.exponential(jitter_s)))
        if rng.random() >= loss or tick < 5:
            frames.append({"tick": tick,
                           "words": np.ascontiguousarray(state).view("<u2").tolist(),
                           "at": at})
    first, last = frames[0]["at"], frames[-1]["at"]
    sample_at = list(np.arange(first, last, 1 / 60))
    return {"rate": p.tick_rate, "frames": frames, "sampleAt": sample_at,
            "truth": [t.tolist() for t in truth], "turnEvery": p.npc_turn_interval_ticks}


def run_node(tmp_path: Path, cases: dict) -> dict:
    data = tmp_path / "cases.json"
    data.write_text(json.dumps(cases))
    return run_script(tmp_path / "golden.mjs", NODE_SCRIPT, (WEB / "predict.js").as_uri(),
                      (WEB / "interp.js").as_uri(), str(data))


@pytest.fixture(scope="module")
def golden(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict, dict, dict]:
    rng = np.random.default_rng(20261127)
    rule = [rule_case(rng) for _ in range(60)]
    pred = [predictor_case(rng) for _ in range(25)]
    interp = [interp_case(rng, jitter_s=0.0, loss=0.0),
              interp_case(rng, jitter_s=0.012, loss=0.05),
              interp_case(rng, jitter_s=0.03, loss=0.15)]
    cases = {"rule": [c for c, _ in rule], "predictor": [c for c, _ in pred],
             "interp": [{k: v for k, v in c.items() if k != "truth"} for c in interp]}
    got = run_node(tmp_path_factory.mktemp("golden"), cases)
    want = {"rule": [w for _, w in rule], "predictor": [w for _, w in pred]}
    return cases, want | {"interp": interp}, got


# -- predict.js ---------------------------------------------------------------------------------

def test_move_rule_matches_sim_move_players_bit_for_bit(golden):
    cases, want, got = golden
    assert len(got["rule"]) == len(want["rule"]) == 60
    for i, (w, g) in enumerate(zip(want["rule"], got["rule"], strict=True)):
        for t, (ws, gs) in enumerate(zip(w, g, strict=True)):
            params = cases["rule"][i]["params"]
            assert gs == ws, f"case {i} tick {t}: js {gs} != sim {ws} ({params})"
    # The cases reach the interesting branches: walls, full speed and standstill.
    finals = [s for w in want["rule"] for s in w]
    assert any(s[2] == 0.0 and s[3] == 0.0 for s in finals)
    assert any(abs(s[2]) > 100 for s in finals)


def test_predictor_reconciles_to_the_server_state_plus_pending_commands(golden):
    _, want, got = golden
    for i, (w, g) in enumerate(zip(want["predictor"], got["predictor"], strict=True)):
        assert len(g) == len(w), f"case {i}: {len(g)} reconciles, want {len(w)}"
        for k, (ws, gs) in enumerate(zip(w, g, strict=True)):
            assert gs["pending"] == ws["pending"], f"case {i} snapshot {k}"
            assert gs["state"] == ws["state"], f"case {i} snapshot {k}"


# -- interp.js ----------------------------------------------------------------------------------

def _bracket(frames: list[dict], pushed: int, rt: float) -> tuple[dict, dict] | None:
    known = frames[:pushed]
    for a, b in itertools.pairwise(known):
        if a["tick"] <= rt < b["tick"]:
            return a, b
    return None


def test_interpolated_npcs_are_where_the_sim_had_them(golden):
    _, want, got = golden
    checked = 0
    for case, samples in zip(want["interp"], got["interp"], strict=True):
        truth, frames, turn = case["truth"], case["frames"], case["turnEvery"]
        for s in samples:
            rt = s["renderTick"]
            br = _bracket(frames, s["pushed"], rt)
            if br is None:
                continue
            a, b = br
            frac = (rt - a["tick"]) / (b["tick"] - a["tick"])
            drawn = {e[0]: e for e in s["e"]}
            for slot in (0, 3, 4, 5):  # untouched NPCs
                pa, pb = truth[a["tick"] - 1][slot], truth[b["tick"] - 1][slot]
                straight = (a["tick"] // turn == b["tick"] // turn and
                            math.dist(pa, pb) <= 120 / 30 * (b["tick"] - a["tick"]) + 1e-3)
                if not straight:  # a turn or a wall bounce in between: not a straight line
                    continue
                x = pa[0] + (pb[0] - pa[0]) * frac
                y = pa[1] + (pb[1] - pa[1]) * frac
                e = drawn[slot]
                assert math.hypot(e[2] - x, e[3] - y) <= 0.05, (rt, slot, e, (x, y))
                checked += 1
    assert checked > 1000


def test_render_clock_is_monotonic_paced_and_behind_the_newest_snapshot(golden):
    _, want, got = golden
    for case, samples in zip(want["interp"], got["interp"], strict=True):
        rate, frames = case["rate"], case["frames"]
        ticks = [s["renderTick"] for s in samples]
        assert all(b >= a for a, b in itertools.pairwise(ticks)), "ran backwards"
        # After the first second: the clock advances at the tick rate (slew <= 10 %).
        settled = [s for s in samples if s["t"] >= samples[0]["t"] + 1.0]
        span_t = settled[-1]["t"] - settled[0]["t"]
        pace = (settled[-1]["renderTick"] - settled[0]["renderTick"]) / span_t / rate
        assert 0.95 <= pace <= 1.05, pace
        behind = [frames[s["pushed"] - 1]["tick"] - s["renderTick"] for s in settled]
        assert min(behind) > -3.0, "more than the 3-tick extrapolation limit ahead"
        assert np.median(behind) >= 1.5, "about two snapshot intervals of delay"


def test_reused_slot_and_teleport_are_never_drawn_in_between(golden):
    _, want, got = golden
    for case, samples in zip(want["interp"], got["interp"], strict=True):
        truth = case["truth"]
        for slot, tick in ((1, 40), (2, 60)):
            old, new = truth[tick - 2][slot], truth[tick - 1][slot]
            gap = math.dist(old, new)
            assert gap > 150
            for s in samples:
                if not tick - 3 <= s["renderTick"] <= tick + 3:
                    continue
                e = next(e for e in s["e"] if e[0] == slot)
                d_old, d_new = math.dist(e[2:], old), math.dist(e[2:], new)
                assert min(d_old, d_new) < 20, f"slot {slot} drawn between {old} and {new}: {e}"
