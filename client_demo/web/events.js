// Game events the snapshots imply: kills (for the kill feed), our hits (the hit marker),
// damage to us (the damage flash), and the respawn countdown.
//
// Theory of operation
// -------------------
// Snapshots carry state, not events, so `EventTracker.update(prev, cur, elapsedTicks)`
// compares two consecutive decoded snapshots (Uint16Array words, see codec.js):
//  * a kill: an entity with the same kind|gen in both that is dead in `cur` and was not in
//    `prev`. The sim credits the killer's score in the same tick, so the killer is a player
//    whose score rose; with several candidates the nearest one is taken (several kills in
//    one snapshot interval are rare; no score change means an unknown killer).
//  * our projectiles: a projectile that appears right at our own entity's edge while our
//    entity has the FIRED flag is ours. When one of ours vanishes and an entity near where
//    it was heading lost hp, that is our hit (a projectile that expires or leaves the world
//    lowers nobody's hp).
//  * damage: our own entity, same generation, with less hp than before.
// Everything is a pure function of the two snapshots and the tracker's set of our
// projectiles: it runs under Node against snapshots built by the Python sim.
//
// `respawnSecondsLeft` is the one timer of the death overlay and the labels: the server
// tick at which the entity was first seen dead plus the respawn delay, minus the current
// (estimated) server tick, as whole seconds counting down.

import { WORDS, W_X, W_Y, W_VX, W_VY, W_HP, W_SCORE, W_KIND_GEN, W_AIM_FLAGS, units, VEL_SCALE,
         KIND_PLAYER, KIND_NPC, KIND_PROJECTILE, EFLAG_DEAD, EFLAG_FIRED } from "./codec.js";

const at = (w, slot, word) => w[slot * WORDS + word];
const kindOf = (w, slot) => (slot * WORDS < w.length ? w[slot * WORDS + W_KIND_GEN] & 0xff : 0);
const flagsOf = (w, slot) => w[slot * WORDS + W_AIM_FLAGS] >> 8;
const posOf = (w, slot) => [at(w, slot, W_X) / units.pos, at(w, slot, W_Y) / units.pos];
const velOf = (w, slot) => [((at(w, slot, W_VX) << 16) >> 16) / VEL_SCALE,
                            ((at(w, slot, W_VY) << 16) >> 16) / VEL_SCALE];
const sameEntity = (a, b, slot) => slot * WORDS < a.length && slot * WORDS < b.length &&
  (a[slot * WORDS + W_KIND_GEN] & 0xff) !== 0 && a[slot * WORDS + W_KIND_GEN] === b[slot * WORDS + W_KIND_GEN];

export const OWN_SHOT_SLACK = 2.5; // units: a new projectile this close to our edge is ours
export const HIT_REACH = 40; // units: how far from a vanished shot's path a damaged entity may be

export class EventTracker {
  constructor() {
    this.reset();
  }

  reset() {
    this.ownShots = new Map(); // slot -> kind|gen word of a projectile we fired
  }

  /**
   * Events between two consecutive snapshots. `opts`: ownSlot (our entity, -1 if none),
   * playerRadius, projectileRadius, tickRate, elapsedTicks (cur.tick - prev.tick).
   * Returns {kills: [{killer, victim, victimKind}], hits: [{slot, x, y, killed}],
   *          damage: number (hp we lost)}; killer/victim are entity slots (killer -1: unknown).
   */
  update(prev, cur, opts) {
    const out = { kills: [], hits: [], damage: 0 };
    if (!prev || !cur) return out;
    const span = Math.min(prev.length, cur.length) / WORDS;
    const scorers = [];
    const victims = [];
    const hurt = [];
    for (let s = 0; s < span; s++) {
      if (!sameEntity(prev, cur, s)) continue;
      const k = kindOf(cur, s);
      if (k !== KIND_PLAYER && k !== KIND_NPC) continue;
      const wasDead = flagsOf(prev, s) & EFLAG_DEAD, isDead = flagsOf(cur, s) & EFLAG_DEAD;
      if (!wasDead && isDead) victims.push(s);
      if (!wasDead && at(cur, s, W_HP) < at(prev, s, W_HP)) hurt.push(s);
      if (k === KIND_PLAYER && at(cur, s, W_SCORE) > at(prev, s, W_SCORE)) {
        scorers.push({ slot: s, credit: at(cur, s, W_SCORE) - at(prev, s, W_SCORE) });
      }
    }
    for (const v of victims) {
      const [vx, vy] = posOf(prev, v);
      let best = null, bestD = Infinity;
      for (const c of scorers) {
        if (c.slot === v) continue;
        const [cx, cy] = posOf(cur, c.slot);
        const d = Math.hypot(cx - vx, cy - vy);
        if (d < bestD) { best = c; bestD = d; }
      }
      out.kills.push({ killer: best ? best.slot : -1, victim: v, victimKind: kindOf(cur, v) });
    }
    const own = opts.ownSlot ?? -1;
    if (own >= 0 && sameEntity(prev, cur, own) && !(flagsOf(prev, own) & EFLAG_DEAD)) {
      out.damage = Math.max(0, at(prev, own, W_HP) - at(cur, own, W_HP));
    }
    out.hits = this._ownHits(prev, cur, opts, hurt);
    return out;
  }

  _ownHits(prev, cur, opts, hurt) {
    const own = opts.ownSlot ?? -1;
    const hits = [];
    const dt = (opts.elapsedTicks || 1) / (opts.tickRate || 30);
    // Our shots that vanished: did one of them reach an entity that lost hp?
    for (const [slot, id] of this.ownShots) {
      const stillThere = slot * WORDS < cur.length && cur[slot * WORDS + W_KIND_GEN] === id;
      if (stillThere) continue;
      this.ownShots.delete(slot);
      if (slot * WORDS >= prev.length || prev[slot * WORDS + W_KIND_GEN] !== id) continue;
      const [px, py] = posOf(prev, slot);
      const [vx, vy] = velOf(prev, slot);
      for (const t of hurt) {
        if (t === own) continue;
        const [tx, ty] = posOf(cur, t);
        if (distToSegment(tx, ty, px, py, px + vx * dt, py + vy * dt) <= HIT_REACH) {
          hits.push({ slot: t, x: tx, y: ty, killed: !!(flagsOf(cur, t) & EFLAG_DEAD) });
          break;
        }
      }
    }
    // New projectiles at our edge while we fired: ours.
    if (own >= 0 && own * WORDS < cur.length && kindOf(cur, own) === KIND_PLAYER &&
        flagsOf(cur, own) & EFLAG_FIRED) {
      const [ox, oy] = posOf(cur, own);
      const edge = (opts.playerRadius || 12) + (opts.projectileRadius || 3);
      const span = cur.length / WORDS;
      for (let s = 0; s < span; s++) {
        if (kindOf(cur, s) !== KIND_PROJECTILE || sameEntity(prev, cur, s)) continue;
        const [x, y] = posOf(cur, s);
        if (Math.abs(Math.hypot(x - ox, y - oy) - edge) <= OWN_SHOT_SLACK) {
          this.ownShots.set(s, cur[s * WORDS + W_KIND_GEN]);
        }
      }
    }
    return hits;
  }
}

function distToSegment(x, y, ax, ay, bx, by) {
  const dx = bx - ax, dy = by - ay;
  const len2 = dx * dx + dy * dy;
  const t = len2 ? Math.max(0, Math.min(1, ((x - ax) * dx + (y - ay) * dy) / len2)) : 0;
  return Math.hypot(x - (ax + t * dx), y - (ay + t * dy));
}

/**
 * Whole seconds until a dead entity respawns, counting down: it was first seen dead in the
 * snapshot of `deadTick`, respawns `delayS` later (rounded to ticks as the sim does), and
 * the server is at (fractional) tick `nowTick`. null when the delay is unknown.
 */
export function respawnSecondsLeft(deadTick, delayS, tickRate, nowTick) {
  if (!delayS || !tickRate || deadTick === null || deadTick === undefined) return null;
  const delayTicks = Math.max(1, Math.round(delayS * tickRate));
  const left = (deadTick + delayTicks - nowTick) / tickRate;
  return Math.max(0, Math.ceil(left - 1e-9));
}

/** A stable colour per player id (never per name: two "bob"s differ), away from our cyan. */
export function playerColor(playerId) {
  // Golden-angle steps spread consecutive ids; the 150..210 band (cyan) is skipped.
  const hue = (((playerId * 137.508) % 300) + 210) % 360;
  return `hsl(${hue.toFixed(1)}, 75%, 62%)`;
}
