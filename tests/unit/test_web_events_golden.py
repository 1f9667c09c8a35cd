"""The browser's game-event inference (client_demo/web/events.js) against sim.step's events.

Snapshots carry state, not events, so the client infers kills (for the kill feed), its own
hits (the hit marker) and damage to itself (the damage flash) from consecutive snapshots.
Here three players shoot at each other and at NPCs in a real ``sim.step`` world; each
tick's state is quantised as the server sends it, and one Node process feeds consecutive
snapshots to ``EventTracker.update``. Every kill, every hit by the own player and every hp
lost by it must come out as the sim's ``StepEvents`` say, tick by tick.

Skipped when ``node`` (or gen/wire.js) is missing, except under CI=true.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

from proto import codec
from sim.params import Params
from sim.step import Inputs, step
from sim.world import World
from tests.unit.webnode import run_script

ROOT = Path(__file__).resolve().parents[2]
WEB = ROOT / "client_demo" / "web"

NODE_SCRIPT = """\
import { readFileSync } from "node:fs";
const { EventTracker } = await import(process.argv[2]);
const c = JSON.parse(readFileSync(process.argv[3], "utf8"));
const tr = new EventTracker();
const out = [];
for (let i = 1; i < c.snaps.length; i++) {
  const prev = Uint16Array.from(c.snaps[i - 1].words), cur = Uint16Array.from(c.snaps[i].words);
  out.push(tr.update(prev, cur, { ownSlot: c.own, playerRadius: c.playerRadius,
    projectileRadius: c.projectileRadius, tickRate: c.rate,
    elapsedTicks: c.snaps[i].tick - c.snaps[i - 1].tick }));
}
process.stdout.write(JSON.stringify(out));
"""


def simulate(ticks: int = 900) -> tuple[dict, list[dict]]:
    p = Params().with_changes({
        "world.tick_rate": 30, "world.capacity": 128, "projectile.max": 64, "npc.count": 6,
        "npc.speed": 40.0,
        "player.respawn_delay_s": 1.0, "projectile.cooldown_s": 0.2, "projectile.damage": 25,
        "world.seed": 7})
    world = World.create(p)
    a, b, c = (world.add_player(i) for i in (1, 2, 3))
    world.pos[a], world.pos[b], world.pos[c] = (300.0, 500.0), (520.0, 500.0), (520.0, 300.0)
    inputs = Inputs.empty(world.capacity)
    snaps, expected = [], []

    def snap() -> list[int]:
        q = codec.quantize(pos=world.pos, vel=world.vel, hp=world.hp, score=world.score,
                           kind=world.kind, gen=world.gen, aim=world.aim, flags=world.flags,
                           alive=world.alive)
        return np.ascontiguousarray(q).view("<u2").tolist()

    snaps.append({"tick": world.tick, "words": snap()})
    for t in range(ticks):
        # a and c shoot at b; b shoots at a; every few seconds a turns on the nearest NPC.
        targets = {a: b, b: a, c: b}
        if (t // 90) % 3 == 2:
            npcs = np.flatnonzero(world.kind == 2)
            d = np.hypot(*(world.pos[npcs] - world.pos[a]).T)
            targets[a] = int(npcs[np.argmin(d)])
        for shooter, target in targets.items():
            dx, dy = world.pos[target] - world.pos[shooter]
            inputs.aim[shooter] = math.atan2(dy, dx)
            inputs.fire[shooter] = True
        ev = step(world, inputs)
        hits_by_a = sorted(int(tg) for sh, tg in zip(ev.hits_shooter, ev.hits_target,
                                                     strict=True) if sh == a)
        kills = sorted((int(k), int(v)) for k, v in zip(ev.kills_killer, ev.kills_victim,
                                                         strict=True))
        damage = int(p.projectile_damage) * int(np.count_nonzero(ev.hits_target == a))
        expected.append({"kills": kills, "hitsByOwn": hits_by_a, "damage": damage})
        snaps.append({"tick": world.tick, "words": snap()})
    case = {"own": a, "playerRadius": p.player_radius, "projectileRadius": p.projectile_radius,
            "rate": p.tick_rate, "snaps": snaps}
    return case, expected


def run_node(tmp_path: Path, case: dict) -> list[dict]:
    (tmp_path / "case.json").write_text(json.dumps(case))
    return run_script(tmp_path / "events.mjs", NODE_SCRIPT, (WEB / "events.js").as_uri(),
                      str(tmp_path / "case.json"))


@pytest.fixture(scope="module")
def replay(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict, list[dict], list[dict]]:
    case, expected = simulate()
    return case, expected, run_node(tmp_path_factory.mktemp("events"), case)


def test_every_kill_is_found_with_its_killer(replay):
    _, expected, got = replay
    n = 0
    for tick, (want, ev) in enumerate(zip(expected, got, strict=True)):
        found = sorted((k["killer"], k["victim"]) for k in ev["kills"])
        assert found == want["kills"], f"tick {tick}"
        n += len(found)
    assert n >= 10, f"the scenario should have kills, had {n}"


def test_own_hits_are_exactly_the_sims_hits_by_the_own_player(replay):
    _, expected, got = replay
    n = npc_hits = 0
    for tick, (want, ev) in enumerate(zip(expected, got, strict=True)):
        found = sorted(h["slot"] for h in ev["hits"])
        assert found == want["hitsByOwn"], f"tick {tick}"
        n += len(found)
        npc_hits += sum(1 for h in found if h >= 3)
    assert n >= 20 and npc_hits >= 1, (n, npc_hits)


def test_damage_to_the_own_player_is_the_hp_it_lost(replay):
    _, expected, got = replay
    total = 0
    for tick, (want, ev) in enumerate(zip(expected, got, strict=True)):
        assert ev["damage"] == want["damage"], f"tick {tick}"
        total += ev["damage"]
    assert total >= 100
