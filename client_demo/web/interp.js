// Interpolation of remote entities, a little in the past.
//
// Theory of operation
// -------------------
// Snapshots arrive tick_rate times a second with network jitter. We keep the recent ones
// by tick and draw every entity other than our own at a render time about two snapshot
// intervals behind the newest server time we expect to have, so there is almost always
// a snapshot on either side to blend between. The server-time estimate is the offset
// between `tick / rate` and the local clock of the *earliest* arrivals (the least delayed
// ones; the target decays slowly so a lasting change of path is followed), and the render
// clock slews towards it by at most 1% of elapsed time: jitter moves neither the clock
// nor the apparent speed of anything. The delay covers the measured lateness behind the
// earliest arrivals. It resyncs after a big jump. Between two snapshots, a slot is blended only when it holds the same
// entity (same kind and generation) in both; otherwise the older record is shown until
// the newer tick is reached, so a reused slot never slides from the old entity to the new.

import { WORDS, W_KIND_GEN, entityAt } from "./codec.js";

export class Interpolator {
  constructor() {
    this.reset(30);
  }

  reset(rate) {
    this.rate = rate;
    this.frames = []; // {tick, words}, ascending tick
    this.offsetS = null; // render time (server ticks / rate) minus local time, slewed
    this.targetS = null; // the offset of the earliest recent arrivals
    this.jitterS = 0; // mean lateness of arrivals behind the earliest, seconds
    this.slewedAt = null; // local time of the last slew step
  }

  get delayS() {
    return 2 / this.rate + Math.min(0.1, 2 * this.jitterS);
  }

  /** A decoded snapshot of `tick` arrived at local time `nowS` (seconds). */
  push(tick, words, nowS) {
    const last = this.frames[this.frames.length - 1];
    if (last && tick <= last.tick) return;
    this.frames.push({ tick, words });
    const sample = tick / this.rate - nowS;
    // Resync only when time jumps forward (first snapshot, a tab that slept). A late
    // sample is lateness, not a new clock: a stall must not rewind the view.
    if (this.targetS === null || sample - this.targetS > 0.5) {
      this.targetS = sample;
      this.jitterS = 0;
      this.offsetS = sample - this.delayS;
      this.slewedAt = nowS;
    } else {
      // Decay 0.5 ms per snapshot (15 ms/s at 30 Hz), so the target follows a path that
      // got slower for good, while one early arrival is enough to pull it forward.
      this.targetS = Math.max(sample, this.targetS - 0.0005);
      // One long stall should not inflate the delay for good: cap each sample's weight.
      const lateness = Math.min(this.targetS - sample, 0.25);
      this.jitterS += (lateness - this.jitterS) * 0.05;
    }
    // Keep about one second beyond the render time.
    const keepFrom = this.renderTick(nowS) - this.rate;
    while (this.frames.length > 2 && this.frames[1].tick < keepFrom) this.frames.shift();
  }

  /** The (fractional) server tick to draw at local time `nowS`. */
  renderTick(nowS) {
    if (this.offsetS === null) return 0;
    return (nowS + this.offsetS) * this.rate;
  }

  /**
   * Every live entity at the render time, as entityAt() records with blended x, y, aim.
   * `skipSlot` (our own entity) is left out.
   */
  sample(nowS, skipSlot = -1) {
    this._slew(nowS);
    const n = this.frames.length;
    if (!n) return { entities: [], renderTick: 0 };
    const rt = this.renderTick(nowS);
    let i = n - 1;
    while (i > 0 && this.frames[i].tick > rt) i--;
    const a = this.frames[i];
    const b = i + 1 < n ? this.frames[i + 1] : null;
    const entities = [];
    if (!b || rt <= a.tick) {
      // Before the oldest or after the newest frame: hold, extrapolating a little.
      const ahead = b ? 0 : Math.min(Math.max(rt - a.tick, 0), 3) / this.rate;
      const spanA = a.words.length / WORDS;
      for (let s = 0; s < spanA; s++) {
        if (s === skipSlot) continue;
        const e = entityAt(a.words, s);
        if (!e) continue;
        if (ahead && !(e.flags & 1)) {
          e.x += e.vx * ahead;
          e.y += e.vy * ahead;
        }
        entities.push(e);
      }
      return { entities, renderTick: rt };
    }
    const t = (rt - a.tick) / (b.tick - a.tick);
    const span = Math.max(a.words.length, b.words.length) / WORDS;
    for (let s = 0; s < span; s++) {
      if (s === skipSlot) continue;
      const oa = s * WORDS + W_KIND_GEN;
      const idA = oa < a.words.length ? a.words[oa] : 0;
      const idB = oa < b.words.length ? b.words[oa] : 0;
      if (idA && idA === idB) {
        const ea = entityAt(a.words, s), eb = entityAt(b.words, s);
        const e = t < 0.5 ? ea : eb; // discrete fields from the nearer frame
        const out = { ...e, x: ea.x + (eb.x - ea.x) * t, y: ea.y + (eb.y - ea.y) * t };
        out.aim = lerpAngle(ea.aim, eb.aim, t);
        // A jump (respawn) is not a path: don't draw the in-between.
        if (Math.hypot(eb.x - ea.x, eb.y - ea.y) > 60 * (b.tick - a.tick)) {
          out.x = e.x;
          out.y = e.y;
        }
        entities.push(out);
      } else if (idA & 0xff) {
        entities.push(entityAt(a.words, s)); // a different entity follows: no blending
      }
    }
    return { entities, renderTick: rt };
  }
}

Interpolator.prototype._slew = function (nowS) {
  if (this.offsetS === null) return;
  // offsetS is the render clock: the earliest-arrival offset minus the delay, both of
  // which move with every snapshot; slewing the sum keeps motion at a steady speed. At
  // most 1% faster or slower for small differences; 10% to catch up when more than three
  // ticks off (after a stall or a change of path), so that never takes long.
  const d = this.targetS - this.delayS - this.offsetS;
  const rate = Math.abs(d) > 3 / this.rate ? 0.1 : 0.01;
  const step = rate * Math.max(0, nowS - this.slewedAt);
  this.offsetS += Math.max(-step, Math.min(step, d));
  this.slewedAt = nowS;
};

export function lerpAngle(a, b, t) {
  let d = (b - a) % (2 * Math.PI);
  if (d > Math.PI) d -= 2 * Math.PI;
  if (d < -Math.PI) d += 2 * Math.PI;
  return a + d * t;
}
