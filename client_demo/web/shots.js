// Our own shots, predicted: projectiles that fly the moment we fire, and hitscan tracers
// with the server's verdict; plus the view a shot claims for lag compensation.
//
// Theory of operation
// -------------------
// When a client tick's command fires and our cooldown (in client ticks, as the server
// counts it) allows, `ShotBook.fire` records a predicted shot under the command's seq:
//  * projectile weapon: a projectile from our predicted position (after that command) at
//    the muzzle, flying at projectile_speed from the moment that state is drawn;
//  * hitscan: a tracer from our predicted position along the aim, to the weapon's range.
// The server answers in a `Shots` frame that arrives before the snapshot of the tick that
// applied the command (`onShots`):
//  * a projectile shot names its slot and generation: the prediction is bound to that
//    entity, which is then hidden from the interpolated world (`hidden`), so there is one
//    projectile on screen, never two. Each later snapshot measures how far the server's
//    projectile is from our prediction at the same age, and the drawn one slides onto the
//    server's path over ~100 ms: no jump. It disappears when its entity leaves a snapshot
//    (a hit, the end of its life); the entity stays hidden another second, as the
//    interpolated world (drawn in the past) still shows it that long.
//  * a hitscan shot gives the ray as the server tested it and the slot it hit: the tracer
//    takes the server's end point, and a hit becomes a hit marker (`hits`).
// A predicted shot whose seq the server has applied (Snapshot.last_input_seq >= seq)
// without a matching Shot was refused (cooldown): it fades out in 120 ms, quietly
// (`onSnapshot`). Hitscan shots of other players are drawn as short tracers.
//
// `viewOf(frames, renderTick)` is what a shot claims it saw: the two snapshot ticks the
// interpolator was drawing between and the blend (interp.js draws exactly that), or the
// one tick it was holding. Everything here is pure (no DOM): Node tests drive it.

import { WORDS, W_X, W_Y, W_KIND_GEN, units, KIND_PROJECTILE } from "./codec.js";

export const FADE_S = 0.12; // a refused shot fades out this fast
export const TRACER_S = 0.25; // a tracer stays this long
export const CORRECT_S = 0.1; // a projectile slides onto the server's path in about this
export const HIDE_GONE_S = 1; // a finished prediction keeps its server entity hidden this long
const MAX_AGE_S = 10; // a prediction never outlives this, whatever happens

/**
 * The view a shot claims: {viewTick, viewNextTick, viewBlend} (zeros: nothing drawn),
 * mirroring Interpolator.sample: between two frames, those two and the blend; before the
 * oldest, that frame; past the newest, interp.js extrapolates up to 3 ticks along the
 * velocities, so the claim is that (fractional) tick as two consecutive ticks and a blend
 * (the server has those rows, and along a straight path they are what was drawn).
 */
export function viewOf(frames, renderTick) {
  const n = frames.length;
  if (!n || !(renderTick > 0)) return { viewTick: 0, viewNextTick: 0, viewBlend: 0 };
  let i = n - 1;
  while (i > 0 && frames[i].tick > renderTick) i--;
  const a = frames[i];
  const b = i + 1 < n ? frames[i + 1] : null;
  if (!b) {
    const tau = a.tick + Math.min(Math.max(renderTick - a.tick, 0), 3);
    const whole = Math.floor(tau);
    return { viewTick: whole, viewNextTick: whole + 1, viewBlend: tau - whole };
  }
  if (renderTick <= a.tick) return { viewTick: a.tick, viewNextTick: a.tick, viewBlend: 0 };
  const blend = Math.min(1, Math.max(0, (renderTick - a.tick) / (b.tick - a.tick)));
  return { viewTick: a.tick, viewNextTick: b.tick, viewBlend: blend };
}

/** Whole ticks of a cooldown, as the sim rounds it (at least 1). */
export function cooldownTicks(cooldownS, tickRate) {
  return Math.max(1, Math.round(cooldownS * tickRate));
}

export class ShotBook {
  constructor() {
    this.reset();
  }

  reset() {
    this.pending = new Map(); // seq -> predicted shot
    this.tracers = []; // {x0, y0, x1, y1, at, own, hit}
    this.lastShotSeq = -Infinity;
    this.stats = { predicted: 0, bound: 0, refused: 0, confirmed: 0, hits: 0, others: 0 };
  }

  /**
   * Our command `seq` fires. `origin` {x, y}: our predicted position after it; `aim`
   * radians; `p`: {hitscan, range, speed, muzzle, cooldownTicks}; `bornAt`: the local time
   * at which that predicted state is drawn. Returns the shot, or null (cooldown).
   */
  fire(seq, origin, aim, p, bornAt) {
    if (seq - this.lastShotSeq < p.cooldownTicks) return null;
    this.lastShotSeq = seq;
    const dx = Math.cos(aim), dy = Math.sin(aim);
    const shot = p.hitscan
      ? { seq, hitscan: true, x0: origin.x, y0: origin.y, x1: origin.x + dx * p.range,
          y1: origin.y + dy * p.range, at: bornAt }
      : { seq, hitscan: false, x0: origin.x + dx * p.muzzle, y0: origin.y + dy * p.muzzle,
          vx: dx * p.speed, vy: dy * p.speed, at: bornAt, slot: -1, id: 0, spawnTick: 0,
          err: { x: 0, y: 0 }, shown: { x: 0, y: 0 } };
    shot.state = "predicted"; // -> bound | confirmed | refused
    this.pending.set(seq, shot);
    this.stats.predicted++;
    return shot;
  }

  /**
   * A Shots frame (`msg.tick`, `msg.shots`) arrived at local time `t`; `ownSlot` is our
   * entity. Returns our confirmed hitscan hits: [{slot, x, y, seq}].
   */
  onShots(msg, ownSlot, t) {
    const hits = [];
    for (const s of msg.shots || []) {
      const mine = (s.shooter ?? 0) === ownSlot;
      const isProjectile = (s.projectile ?? 0) > 0;
      if (!mine) {
        if (!isProjectile) {
          this.tracers.push({ x0: s.x0, y0: s.y0, x1: s.x1, y1: s.y1, at: t, own: false,
                              hit: (s.target ?? -1) >= 0 });
          this.stats.others++;
        }
        continue;
      }
      const shot = this.pending.get(s.seq ?? 0);
      if (!shot || shot.state !== "predicted") continue; // not predicted (our cooldown said no)
      if (isProjectile && !shot.hitscan) {
        shot.state = "bound";
        shot.slot = s.projectile - 1;
        shot.id = KIND_PROJECTILE | ((s.projectileGen ?? 0) << 8);
        shot.spawnTick = msg.tick;
        this.stats.bound++;
      } else if (!isProjectile && shot.hitscan) {
        shot.state = "confirmed";
        shot.x0 = s.x0; shot.y0 = s.y0; shot.x1 = s.x1; shot.y1 = s.y1;
        shot.hit = (s.target ?? -1) >= 0;
        this.stats.confirmed++;
        if (shot.hit) {
          this.stats.hits++;
          hits.push({ slot: s.target, x: s.x1, y: s.y1, seq: shot.seq });
        }
      }
    }
    return hits;
  }

  /**
   * A snapshot of `tick` (`words`: decoded records, or null) that applied our commands up
   * to `lastInputSeq`, at local time `t`, with `tickRate`. Refused shots start fading;
   * bound projectiles learn their error against the server's path, or end with their entity.
   */
  onSnapshot(tick, words, lastInputSeq, t, tickRate) {
    for (const [seq, shot] of this.pending) {
      if (shot.state === "predicted" && seq <= lastInputSeq) {
        shot.state = "refused";
        shot.refusedAt = t;
        this.stats.refused++;
      } else if (shot.state === "bound" && words) {
        const base = shot.slot * WORDS;
        if (base + WORDS > words.length || words[base + W_KIND_GEN] !== shot.id) {
          // Hit something or expired: gone on the server, so gone here. The entity is
          // still in the interpolated past for a while: keep it hidden meanwhile.
          shot.state = "gone";
          shot.goneAt = t;
          continue;
        }
        // The server's projectile at this tick vs ours at the same age.
        const age = (tick - shot.spawnTick) / tickRate;
        shot.err = { x: words[base + W_X] / units.pos - (shot.x0 + shot.vx * age),
                     y: words[base + W_Y] / units.pos - (shot.y0 + shot.vy * age) };
      }
    }
  }

  /** Entity ids drawn by a prediction instead: Map slot -> kind|gen word. */
  hidden() {
    const out = new Map();
    for (const shot of this.pending.values()) {
      if (shot.state === "bound" || shot.state === "gone") out.set(shot.slot, shot.id);
    }
    return out;
  }

  /**
   * What to draw at local time `t` (seconds since the last call: `dt`):
   * {projectiles: [{x, y, vx, vy, alpha, seq}], tracers: [{x0, y0, x1, y1, alpha, own, hit}]}.
   */
  drawables(t, dt = 0) {
    const projectiles = [];
    const tracers = [];
    const k = Math.min(1, dt / CORRECT_S);
    for (const [seq, shot] of this.pending) {
      const age = t - shot.at;
      if (age > MAX_AGE_S || (shot.state === "refused" && t - shot.refusedAt >= FADE_S)
          || (shot.state === "gone" && t - shot.goneAt >= HIDE_GONE_S)) {
        this.pending.delete(seq);
        continue;
      }
      if (shot.state === "gone") continue;
      const alpha = shot.state === "refused" ? 1 - (t - shot.refusedAt) / FADE_S : 1;
      if (shot.hitscan) {
        if (age < TRACER_S || shot.state === "refused") {
          tracers.push({ x0: shot.x0, y0: shot.y0, x1: shot.x1, y1: shot.y1, own: true,
                         hit: !!shot.hit, alpha: alpha * Math.max(0, 1 - age / TRACER_S) });
        } else if (shot.state !== "predicted") {
          this.pending.delete(seq); // drawn and confirmed: done
        }
        continue;
      }
      // Slide the drawn offset toward the measured error (no jump).
      shot.shown.x += (shot.err.x - shot.shown.x) * k;
      shot.shown.y += (shot.err.y - shot.shown.y) * k;
      // Shown from the moment our predicted player stands where it was fired (at most a
      // tick away), flying from then on: never held still, so never a start-up jump.
      if (age < 0) continue;
      projectiles.push({ x: shot.x0 + shot.vx * age + shot.shown.x,
                         y: shot.y0 + shot.vy * age + shot.shown.y,
                         vx: shot.vx, vy: shot.vy, alpha, seq });
    }
    this.tracers = this.tracers.filter((tr) => t - tr.at < TRACER_S);
    for (const tr of this.tracers) tracers.push({ ...tr, alpha: 1 - (t - tr.at) / TRACER_S });
    return { projectiles, tracers };
  }
}
