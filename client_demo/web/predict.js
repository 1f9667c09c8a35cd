// Client-side prediction of the own player, and reconciliation with the server.
//
// Theory of operation
// -------------------
// `MoveRule.step` is sim/step.py's `move_players` for one player, in float32: every
// arithmetic result is rounded with Math.fround, so for the same start state and inputs
// it gives the server's numbers bit for bit (the start state we get from a snapshot is
// quantised to 1/16 unit, so in practice it is within a hair of the server).
//
// `Predictor` keeps the commands sent but not yet applied by the server (`pending`).
// Each client tick applies the new command locally. Each snapshot brings the server's
// state of our entity and `last_input_seq`: commands up to that seq are dropped, the
// rest are replayed from the server's state, and the difference between the old and the
// new prediction goes into a visual `offset` that decays over ~100 ms (a big jump, e.g.
// a respawn, snaps instead). Rendering interpolates between the last two predicted
// ticks so motion is smooth at any frame rate.

const f = Math.fround;
export const STOP_SPEED = f(0.5); // units/s: an idle player slower than this stops

/** sim/step.py's player movement rule, parameterised by MoveParams and the tick rate. */
export class MoveRule {
  constructor(params, tickRate) {
    this.set(params, tickRate);
  }

  set(params, tickRate) {
    this.tickRate = tickRate;
    this.dt = f(1 / tickRate);
    this.maxSpeed = f(params.playerMaxSpeed);
    this.accelDt = f(f(params.playerAccel) * this.dt);
    this.fric = f(Math.exp(-f(params.playerFriction) * this.dt)); // float64, rounded once
    this.radius = f(params.playerRadius);
    this.width = f(params.worldWidth);
    this.height = f(params.worldHeight);
  }

  /** One tick: state {x, y, vx, vy} (float32 values) and a move direction -> new state. */
  step(s, moveX, moveY) {
    const S = this.maxSpeed;
    let mx = f(moveX), my = f(moveY);
    if (!Number.isFinite(mx) || !Number.isFinite(my)) mx = my = 0;
    const len = f(Math.sqrt(f(f(mx * mx) + f(my * my))));
    if (len > 1) {
      mx = f(mx / len);
      my = f(my / len);
    }
    let vx = s.vx, vy = s.vy;
    let reached = false; // v = target exactly: never clamped (it is max_speed up to rounding)
    if (mx !== 0 || my !== 0) {
      const tx = f(mx * S), ty = f(my * S);
      const dx = f(tx - vx), dy = f(ty - vy);
      const dist = f(Math.sqrt(f(f(dx * dx) + f(dy * dy))));
      if (dist <= this.accelDt) {
        vx = tx;
        vy = ty;
        reached = true;
      } else {
        const k = f(this.accelDt / dist);
        vx = f(vx + f(dx * k));
        vy = f(vy + f(dy * k));
      }
    } else {
      vx = f(vx * this.fric);
      vy = f(vy * this.fric);
      if (f(Math.sqrt(f(f(vx * vx) + f(vy * vy)))) < STOP_SPEED) vx = vy = 0;
    }
    const speed = f(Math.sqrt(f(f(vx * vx) + f(vy * vy))));
    if (speed > S && !reached) {
      const k = f(S / speed);
      vx = f(vx * k);
      vy = f(vy * k);
    }
    const r = this.radius;
    let x = f(s.x + f(vx * this.dt));
    let y = f(s.y + f(vy * this.dt));
    const hiX = f(this.width - r), hiY = f(this.height - r);
    if (x < r || x > hiX) vx = 0;
    if (y < r || y > hiY) vy = 0;
    x = Math.min(Math.max(x, r), hiX);
    y = Math.min(Math.max(y, r), hiY);
    return { x, y, vx, vy };
  }
}

export const SNAP_DISTANCE = 48; // units: corrections larger than this are not smoothed
export const OFFSET_DECAY_PER_S = 12; // 1/s: the visual correction halves every ~58 ms

/** Prediction state of the own player; see the module comment. */
export class Predictor {
  constructor(maxPending = 120) {
    this.maxPending = maxPending;
    this.rule = null;
    this.reset();
  }

  reset() {
    this.pending = []; // {seq, moveX, moveY, aim, buttons}, oldest first
    this.state = null; // predicted state after every pending command
    this.prev = null; // the state one client tick earlier (for render interpolation)
    this.offset = { x: 0, y: 0 }; // visual correction, decays to 0
    this.dead = false;
    this.corrections = 0;
    this.lastCorrection = 0; // units
  }

  /** Record a command sent this client tick and apply it to the prediction. */
  apply(cmd) {
    this.pending.push(cmd);
    if (this.pending.length > this.maxPending) this.pending.shift();
    if (!this.state || !this.rule) return;
    this.prev = this.state;
    if (!this.dead) this.state = this.rule.step(this.state, cmd.moveX, cmd.moveY);
  }

  /** Commands not yet applied by the server, newest last. */
  unacked(lastInputSeq) {
    return this.pending.filter((c) => c.seq > lastInputSeq);
  }

  /**
   * A snapshot arrived: `auth` {x, y, vx, vy} is the server's state of our entity after
   * applying commands up to `lastInputSeq`; `dead` whether it waits to respawn.
   */
  reconcile(auth, lastInputSeq, dead) {
    this.pending = this.pending.filter((c) => c.seq > lastInputSeq);
    let s = { x: f(auth.x), y: f(auth.y), vx: f(auth.vx), vy: f(auth.vy) };
    this.dead = dead;
    if (!dead && this.rule) for (const c of this.pending) s = this.rule.step(s, c.moveX, c.moveY);
    if (!this.state) {
      this.state = s;
      this.prev = s;
      return;
    }
    const dx = s.x - this.state.x, dy = s.y - this.state.y;
    const err = Math.hypot(dx, dy);
    if (err > 0.1) { // below that it is quantisation (1/16 unit), not a misprediction
      this.corrections++;
      this.lastCorrection = err;
    }
    if (err > SNAP_DISTANCE || dead) {
      this.offset = { x: 0, y: 0 };
      this.prev = s;
    } else {
      // Keep the rendered position continuous; the offset then fades out.
      this.offset.x -= dx;
      this.offset.y -= dy;
      this.prev = { ...this.prev, x: this.prev.x + dx, y: this.prev.y + dy };
    }
    this.state = s;
  }

  /** Advance the visual correction by `dtS` seconds of wall time. */
  decay(dtS) {
    const k = Math.exp(-OFFSET_DECAY_PER_S * dtS);
    this.offset.x *= k;
    this.offset.y *= k;
    if (Math.abs(this.offset.x) < 1e-3) this.offset.x = 0;
    if (Math.abs(this.offset.y) < 1e-3) this.offset.y = 0;
  }

  /** The position to draw: between the last two predicted ticks (alpha in [0, 1]). */
  rendered(alpha) {
    if (!this.state) return null;
    const p = this.prev || this.state;
    const a = Math.min(1, Math.max(0, alpha));
    return {
      x: p.x + (this.state.x - p.x) * a + this.offset.x,
      y: p.y + (this.state.y - p.y) * a + this.offset.y,
    };
  }
}
