// The Tickwire demo client's core: the session (Welcome, snapshots, roster, params), the
// client tick (sample intent, predict, send Input) and the wiring of the other parts.
//
// Theory of operation
// -------------------
// Three clocks run side by side:
//  * the client tick (setTimeout on absolute deadlines, at the server's tick_rate): sample
//    the controls into an InputCmd, predict our own movement with it, and send an
//    Input {ack_tick, the last <= 3 unacknowledged cmds};
//  * snapshot arrival: frames are decoded strictly in order (inflating is async, so they
//    go through one promise chain), stored in a ring by tick for baselines, fed to the
//    interpolator, used to reconcile our prediction, and compared with the previous one
//    for game events (kills, hits, damage: events.js). In a room with interest management
//    (Welcome.interest) a snapshot is chunks and a personal part, applied to our view
//    (chunks.js) and turned into the same dense snapshot, each record dead-reckoned to the
//    snapshot's tick; entities entering or leaving our interest go to the fades (fade.js);
//  * the animation frame (view.js): draw at the interpolated render time, our own player
//    at its predicted position, and refresh the HUD a few times a second.
// The parts, one concern each: net.js (socket, reconnect), status.js + connview.js (what a
// close means and what the player sees about it), input.js (devices -> intent), view.js
// (drawing, HUD, feed), predict.js / interp.js (movement), codec.js (snapshots), shots.js
// (our shots predicted, the view a shot claims, the server's Shots frames).

import { CodecError, SnapshotRing, decodePayload, entityAt, countLive, setPosScale, KIND_PLAYER,
         KIND_PROJECTILE, EFLAG_DEAD } from "./codec.js";
import { ChunkMirror } from "./chunks.js";
import { Net } from "./net.js";
import { MoveRule, Predictor } from "./predict.js";
import { Interpolator } from "./interp.js";
import { RateMeter } from "./hud.js";
import { EventTracker } from "./events.js";
import { Controls, isTouchDevice } from "./input.js";
import { ConnectionView } from "./connview.js";
import { View } from "./view.js";
import { tw, now } from "./state.js";
import { ShotBook, cooldownTicks, viewOf } from "./shots.js";

const MAX_CMDS_PER_INPUT = 3;

export class Game {
  constructor(types) {
    this.ring = new SnapshotRing(60);
    this.interp = new Interpolator();
    this.predictor = new Predictor();
    this.events = new EventTracker();
    this.shots = new ShotBook();
    this.snapRate = new RateMeter();
    this.byteRate = new RateMeter();
    this.names = new Map(); // entity slot -> name
    this.playerIds = new Map(); // entity slot -> player id (colours are per player id)
    this.away = new Set(); // entity slots of players whose seat waits for a resume
    this.deadSince = new Map(); // slot -> [kind|gen id, server tick first seen dead]
    this.world = { w: 1000, h: 1000 };
    this.interest = null; // {radius} when the server manages interest (the minimap draws it)
    this.lastSnapshotBytes = 0;
    this._resetSession();
    tw.touch = isTouchDevice();
    document.body.classList.toggle("touch-ui", tw.touch); // not "touch": that is the controls box
    this.view = new View(this);
    this.controls = new Controls({
      canvas: this.view.canvas,
      stick: document.getElementById("stick"),
      fire: document.getElementById("fire"),
      onToggleHud: () => this.view.toggleHud(),
    });
    this.net = new Net({
      url: `${location.protocol === "https:" ? "wss" : "ws"}://${location.host}/ws`,
      name: tw.name,
      types,
      onWelcome: (w) => this.onWelcome(w),
      onFrame: (kind, msg, bytes) => this.onFrame(kind, msg, bytes),
      onClose: (info) => this.onClose(info),
    });
    this.conn = new ConnectionView(this);
  }

  /** The held keys (bench/browser_smoothness.py reads `tickwireGame.keys.size`). */
  get keys() {
    return this.controls.keys;
  }

  start() {
    this.net.start();
    this._scheduleTick();
    this.view.start();
  }

  _resetSession() {
    this.sessionGen = (this.sessionGen || 0) + 1;
    this.chain = Promise.resolve();
    this.welcome = null;
    this.tickRate = this.tickRate || 30;
    this.seq = 0;
    this.ackTick = 0;
    this.needKeyframe = false;
    this.chunked = null; // ChunkMirror when the room manages interest (chunks.js)
    this.newestTick = 0;
    this.latest = null; // {tick, words, serverTime, recvAt}
    this.ring.clear();
    this.interp.reset(this.tickRate);
    this.predictor.reset();
    this.events.reset();
    this.shots.reset();
    this.deadSince.clear();
    this.newestTick = 0;
    this.view?.fader.reset();
    this.view?.follow.reset();
    tw.worldEntities = null;
    this.lastTickAt = now();
  }

  // ---------------------------------------------------------------- network events

  onWelcome(w) {
    this._resetSession();
    this.welcome = w;
    tw.posScale = setPosScale(w.posScale);
    this.tickRate = w.tickRate || 30;
    this.ring.size = Math.max(64, 2 * this.tickRate); // the server's ring: any ack in it is usable
    this.interp.reset(this.tickRate);
    this._setParams(w.params);
    // Interest management: chunked snapshots into a view (chunks.js); the grid for the minimap.
    if (w.interest) {
      this.chunked = new ChunkMirror(this.tickRate, tw.posScale, this.ring.size + 8);
      this.interest = { radius: w.interest.radius || 0, cell: w.interest.cell || 0,
                        margin: w.interest.margin || 0 };
    } else {
      this.interest = null;
    }
    tw.interest = this.interest;
    tw.connected = true;
    tw.playerId = w.playerId;
    tw.entity = w.entity;
    tw.serverTick = w.tick;
    tw.left = false;
    this.conn.onWelcome();
  }

  _setParams(p) {
    if (!p) return;
    this.moveParams = p;
    this.world = { w: p.worldWidth || 1000, h: p.worldHeight || 1000 };
    if (this.predictor.rule) this.predictor.rule.set(p, this.tickRate);
    else this.predictor.rule = new MoveRule(p, this.tickRate);
  }

  onFrame(kind, msg, bytes) {
    const t = now();
    this.byteRate.add(t, bytes);
    switch (kind) {
      case "snapshot": {
        const gen = this.sessionGen;
        this.chain = this.chain
          .then(() => this.onSnapshot(msg, bytes, gen, t))
          .catch((err) => console.error("tickwire: snapshot handling failed", err));
        break;
      }
      case "roster":
        this.onRoster(msg);
        break;
      case "pong":
        // Minus the time the Ping waited in the server to be read at its tick.
        tw.pingRttMs = Math.max(0, (now() - msg.clientTime - (msg.held || 0)) * 1000);
        break;
      case "params":
        this._setParams(msg.params);
        break;
      case "shots": {
        // Before the snapshot of the same tick (the server queues it first).
        const hits = this.shots.onShots(msg, this.welcome ? this.welcome.entity : -1, t);
        this._countShots(msg);
        if (hits.length) {
          this.view.onEvents({ kills: [], hits: hits.map((h) => ({ ...h, killed: false })),
                               damage: 0 }, t);
        }
        break;
      }
      default:
        break; // "kick": Net keeps it for the close that follows
    }
  }

  async onSnapshot(snap, bytes, gen, recvAt) {
    if (gen !== this.sessionGen) return; // queued before a new Welcome: not this session's
    const decoded = this.chunked ? await this._applyChunked(snap) : await this._decodePayload(snap);
    if (!decoded) return;
    if (gen !== this.sessionGen || snap.tick <= this.newestTick) return;
    const words = decoded.words;
    const prev = this.latest;
    if (!this.chunked) this.ring.put(snap.tick, words);
    this.newestTick = snap.tick;
    this.needKeyframe = false;
    this.ackTick = snap.tick;
    if (decoded.keyframe) tw.keyframes++;
    else tw.deltas++;
    tw.snapshots++;
    this.snapRate.add(recvAt);
    this.lastSnapshotBytes = bytes;
    this.latest = { tick: snap.tick, words, serverTime: snap.serverTime, recvAt };
    this.interp.push(snap.tick, words, recvAt);
    tw.serverTick = snap.tick;
    tw.rttMs = snap.rttMs;
    tw.entityCount = countLive(words);

    this.shots.onSnapshot(snap.tick, words, snap.lastInputSeq, recvAt, this.tickRate);
    const me = this.welcome ? entityAt(words, this.welcome.entity) : null;
    if (me && me.kind === KIND_PLAYER) {
      tw.server = { x: me.x, y: me.y };
      this.predictor.reconcile(me, snap.lastInputSeq, (me.flags & EFLAG_DEAD) !== 0);
    }
    this._trackDeaths(words, snap.tick);
    if (prev) {
      const ev = this.events.update(prev.words, words, {
        ownSlot: this.welcome ? this.welcome.entity : -1,
        playerRadius: this.moveParams?.playerRadius || 12,
        projectileRadius: 3,
        tickRate: this.tickRate,
        elapsedTicks: snap.tick - prev.tick,
      });
      this.view.onEvents(ev, recvAt);
    }
    this._refreshPlayers();
  }

  /** A whole-world snapshot (payload against a baseline in our ring): {words, keyframe} or null. */
  async _decodePayload(snap) {
    let baseline = null;
    if (snap.baselineTick) {
      baseline = this.ring.get(snap.baselineTick);
      if (!baseline) {
        this.needKeyframe = true; // ack 0 until a keyframe arrives
        return null;
      }
    }
    try {
      return await decodePayload(snap.payload, baseline);
    } catch (err) {
      if (!(err instanceof CodecError)) throw err;
      this._rejected(snap, err);
      return null;
    }
  }

  /**
   * A chunked snapshot (interest management): applied to our view, which is then drawn
   * dead-reckoned to this tick. Entities that entered or left our interest go to the
   * fades. {words, keyframe} or null (rejected, or ignored while waiting for a reset).
   */
  async _applyChunked(snap) {
    const m = this.chunked;
    let applied;
    try {
      applied = await m.apply(snap.tick, snap.chunks || [], snap.personal || new Uint8Array(0));
    } catch (err) {
      if (!(err instanceof CodecError)) throw err;
      this._rejected(snap, err); // the mirror cleared itself: ack 0 until a reset
      return null;
    }
    if (!applied) {
      this.needKeyframe = true;
      return null;
    }
    tw.worldEntities = snap.worldEntities ?? null;
    const own = this.welcome ? this.welcome.entity : -1;
    // No enter-vs-spawn bit on the wire: a new projectile is a spawn, anything else entered.
    const entered = m.entered.filter((e) => e.slot !== own && (e.id & 0xff) !== KIND_PROJECTILE);
    this.view.fader.note(snap.tick, entered, m.leftIds);
    return { words: m.wordsAt(snap.tick), keyframe: m.lastReset };
  }

  _rejected(snap, err) {
    tw.decodeErrors++;
    console.warn(`tickwire: snapshot ${snap.tick} rejected: ${err.message}`);
    this.needKeyframe = true;
  }

  onRoster(roster) {
    this.roster = roster.players || [];
    this.names = new Map(this.roster.map((p) => [p.entity, p.name]));
    this.playerIds = new Map(this.roster.map((p) => [p.entity, p.playerId]));
    this.away = new Set(this.roster.filter((p) => !p.connected).map((p) => p.entity));
    this._refreshPlayers();
  }

  _refreshPlayers() {
    const words = this.latest?.words;
    tw.players = (this.roster || []).map((p) => {
      const e = words ? entityAt(words, p.entity) : null;
      return {
        playerId: p.playerId,
        entity: p.entity,
        name: p.name,
        connected: p.connected,
        score: e && e.kind === KIND_PLAYER ? e.score : 0,
        dead: !!(e && e.flags & EFLAG_DEAD),
      };
    });
  }

  /** The server tick each dead player was first seen dead at (the countdown's origin). */
  _trackDeaths(words, tick) {
    for (const [slot, [id]] of this.deadSince) {
      const e = entityAt(words, slot);
      if (!e || e.id !== id || !(e.flags & EFLAG_DEAD)) this.deadSince.delete(slot);
    }
    const span = words.length / 8;
    for (let slot = 0; slot < span; slot++) {
      if (this.deadSince.has(slot)) continue;
      const e = entityAt(words, slot);
      if (e && e.kind === KIND_PLAYER && e.flags & EFLAG_DEAD) this.deadSince.set(slot, [e.id, tick]);
    }
  }

  /** The server tick now, fractional: the newest snapshot's tick plus the time since. */
  serverTickNow(t = now()) {
    if (!this.latest) return tw.serverTick;
    return this.latest.tick + (t - this.latest.recvAt) * this.tickRate;
  }

  onClose(info) {
    tw.connected = false;
    this._resetSession();
    this.onRoster({ players: [] }); // the roster was this session's: no stale names
    tw.me = null;
    tw.dead = false;
    tw.respawnIn = null;
    this.controls.release();
    this.conn.onClose(info);
  }

  /** Leave for good (the Leave button, the tab closing): the server frees the seat at once. */
  leave() {
    tw.left = this.net.leave() || tw.left;
  }

  // ---------------------------------------------------------------- client tick

  _scheduleTick() {
    const dt = 1 / this.tickRate;
    const t = now();
    if (this.nextTickAt === undefined) this.nextTickAt = t;
    let n = 0;
    while (t >= this.nextTickAt && n < 4) {
      // Render interpolation runs on the tick's deadline, not on when the timer fired.
      this.lastTickAt = this.nextTickAt;
      this.clientTick();
      this.nextTickAt += dt;
      n++;
    }
    if (t - this.nextTickAt > 0.25) this.nextTickAt = t + dt; // fell far behind: skip
    setTimeout(() => this._scheduleTick(), Math.max(0, (this.nextTickAt - now()) * 1000));
  }

  clientTick() {
    if (!this.welcome || !this.net.open) return;
    const intent = this.controls.sample(tw.me || tw.server, (sx, sy) => this.view.renderer.toWorld(sx, sy));
    const cmd = {
      seq: ++this.seq,
      clientTick: Math.max(0, Math.round(this._estimatedServerTick())),
      moveX: intent.moveX,
      moveY: intent.moveY,
      aim: intent.aim,
      buttons: intent.fire ? 1 : 0,
    };
    this._autoAim(cmd);
    this.aim = cmd.aim;
    this.predictor.apply(cmd);
    if (cmd.buttons & 1) this._fire(cmd);
    const cmds = this.predictor.pending.slice(-MAX_CMDS_PER_INPUT);
    this.net.send({ input: { ackTick: this.needKeyframe ? 0 : this.ackTick, cmds } });
  }

  /** A firing command: claim what we are drawing (lag compensation) and predict the shot. */
  _fire(cmd) {
    const t = now();
    Object.assign(cmd, viewOf(this.interp.frames, this.interp.renderTick(t)));
    const p = this.moveParams;
    const me = this.predictor.state;
    if (!p || !me || tw.dead) return;
    const shot = this.shots.fire(cmd.seq, me, cmd.aim, {
      hitscan: p.weaponKind === 1,
      range: p.weaponRange || 600,
      speed: p.projectileSpeed || 600,
      muzzle: (p.playerRadius || 12) + 3,
      cooldownTicks: cooldownTicks(p.fireCooldownS || 0.25, this.tickRate),
    }, this.lastTickAt + 1 / this.tickRate); // when the state after `cmd` is drawn
    if (shot) tw.shotsPredicted++;
  }

  /** Our own shots as the server resolved them (tw counters, for the HUD and probes). */
  _countShots(msg) {
    const own = this.welcome ? this.welcome.entity : -1;
    for (const s of msg.shots || []) {
      if ((s.shooter ?? 0) !== own || (s.projectile ?? 0) > 0) continue;
      tw.shotsFired++;
      if ((s.target ?? -1) >= 0) tw.shotsHit++;
      if (tw.aimAt && s.target === tw.aimAt.slot) tw.shotsOnTarget++;
      if (s.clamped) tw.shotsClamped++;
      tw.lastRewindMs = s.rewindMs ?? 0;
    }
  }

  /**
   * Probe hook (tests, bench): with `tw.aimAt = {slot}` set, aim at that entity where this
   * page draws it now and fire whenever our cooldown allows — a perfect aimer that sees
   * exactly what a player would.
   */
  _autoAim(cmd) {
    const a = tw.aimAt;
    const me = this.predictor.state;
    if (!a || !me || !this.moveParams) return;
    const target = this.interp.sample(now(), -1).entities.find((e) => e.slot === a.slot);
    if (!target) return;
    cmd.aim = Math.atan2(target.y - me.y, target.x - me.x);
    const ready = cmd.seq - this.shots.lastShotSeq >=
      cooldownTicks(this.moveParams.fireCooldownS || 0.25, this.tickRate);
    cmd.buttons = ready ? 1 : 0;
  }

  _estimatedServerTick() {
    const rtt = (tw.pingRttMs ?? tw.rttMs ?? 0) / 1000;
    // targetS: the server-time offset of the earliest snapshot arrivals (no render delay).
    if (this.interp.targetS === null) return tw.serverTick;
    return (now() + this.interp.targetS + rtt / 2) * this.tickRate;
  }
}
