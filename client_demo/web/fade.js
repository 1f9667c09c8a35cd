// Entities fade in and out at the edge of our interest instead of popping.
//
// Theory of operation
// -------------------
// With interest management the server sends only what is near us. An entity that ENTERS
// our interest arrives as a spawn and one that LEAVES it as a remove record; drawn as they
// are, both pop. The decoder reports, per snapshot, which entities (slot and kind|gen id)
// entered and which left (`note`). The interpolator draws a snapshot's change a little
// later (at its render tick), so the marks wait, keyed by entity, until the change shows:
//  * an entity drawn for the first time that was marked as entered ramps its alpha from 0
//    to 1 over FADE_S;
//  * an entity that was drawn last frame and is gone now, and was marked as left, stays on
//    screen as a "ghost" for FADE_S: it keeps moving along its last velocity while its
//    alpha ramps down to 0. If it comes back meanwhile it fades in from where it was.
// Anything unmarked is drawn as before: a fresh projectile, an entity removed from the
// world (a projectile that hit, a player who left the game) and the whole of a world
// without interest management pop exactly as they always did. A death is not a removal
// (the record stays, flagged dead), so a dying entity never fades out as if it left.
//
// `apply` returns the frame's entities with a `fade` in (0, 1) on those fading, plus the
// ghosts (`ghost: true`). Pure (time is an argument): Node tests drive it.

import { EFLAG_DEAD } from "./codec.js";

export const FADE_S = 0.2;
const KEEP_MARK_TICKS = 120; // a mark never shown (its entity was not drawn) expires

const keyOf = (slot, id) => slot * 65536 + id;

export class Fader {
  constructor(durS = FADE_S) {
    this.durS = durS;
    this.reset();
  }

  reset() {
    this.entered = new Map(); // key -> tick of the snapshot it entered in
    this.left = new Map(); // key -> tick of the snapshot it left in
    this.drawn = new Map(); // key -> {e, from} of the last frame (from: fade-in start or null)
    this.ghosts = new Map(); // key -> {e, from}
    this.newestTick = 0;
    this.lastT = null; // local time of the last apply
    this.stats = { fadedIn: 0, fadedOut: 0 };
  }

  /** Snapshot `tick` says these entered / left our interest: arrays of {slot, id}. */
  note(tick, entered, left) {
    this.newestTick = Math.max(this.newestTick, tick);
    for (const { slot, id } of entered) {
      const k = keyOf(slot, id);
      this.entered.set(k, tick);
      this.left.delete(k);
    }
    for (const { slot, id } of left) {
      const k = keyOf(slot, id);
      this.left.set(k, tick);
      this.entered.delete(k);
    }
    const old = this.newestTick - KEEP_MARK_TICKS;
    for (const marks of [this.entered, this.left]) {
      for (const [k, at] of marks) if (at < old) marks.delete(k);
    }
  }

  /**
   * The entities to draw at local time `t` (seconds): this frame's interpolated `entities`
   * with `fade` set where they fade in, plus the ghosts of those that left.
   */
  apply(entities, t) {
    const drawn = new Map();
    const out = [];
    for (const e of entities) {
      const k = keyOf(e.slot, e.id);
      const before = this.drawn.get(k);
      let from = before ? before.from : null;
      if (!before) {
        const ghost = this.ghosts.get(k);
        if (ghost) {
          // Back before it faded out: fade in from the alpha it had.
          from = t - this._alphaOut(ghost, t) * this.durS;
          this.ghosts.delete(k);
        } else if (this.entered.has(k)) {
          from = t;
          this.stats.fadedIn++;
        }
        this.entered.delete(k);
      }
      if (from !== null && t - from >= this.durS - 1e-9) from = null;
      drawn.set(k, { e, from });
      if (from === null) {
        out.push(e);
      } else {
        out.push({ ...e, fade: Math.max(0.001, (t - from) / this.durS) });
      }
    }
    for (const [k, prev] of this.drawn) {
      if (drawn.has(k) || !this.left.has(k)) continue;
      this.left.delete(k);
      // A ghost starts at the alpha the entity had (it may still have been fading in).
      const alpha = prev.from === null ? 1 : Math.min(1, (t - prev.from) / this.durS);
      // It moves on from where it was last drawn, at the time it was drawn there.
      this.ghosts.set(k, { e: prev.e, at: this.lastT ?? t, from: t - (1 - alpha) * this.durS });
      this.stats.fadedOut++;
    }
    for (const [k, g] of this.ghosts) {
      const alpha = this._alphaOut(g, t);
      if (alpha <= 0) {
        this.ghosts.delete(k);
        continue;
      }
      const still = (g.e.flags & EFLAG_DEAD) !== 0;
      const dt = still ? 0 : t - g.at;
      out.push({ ...g.e, x: g.e.x + g.e.vx * dt, y: g.e.y + g.e.vy * dt, fade: alpha, ghost: true });
    }
    this.drawn = drawn;
    this.lastT = t;
    return out;
  }

  _alphaOut(ghost, t) {
    return 1 - (t - ghost.from) / this.durS;
  }

  /** How many entities are fading in or out right now (for window.tickwire). */
  get fading() {
    let n = this.ghosts.size;
    for (const d of this.drawn.values()) if (d.from !== null) n++;
    return n;
  }
}
