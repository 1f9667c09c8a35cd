// The Tickwire demo client: wires the socket, the codec, prediction, interpolation,
// rendering and the HUD together.
//
// Theory of operation
// -------------------
// Three clocks run side by side:
//  * the client tick (setTimeout on absolute deadlines, at the server's tick_rate): sample
//    the keys and mouse into an InputCmd, predict our own movement with it, and send an
//    Input {ack_tick, the last <= 3 unacknowledged cmds};
//  * snapshot arrival: frames are decoded strictly in order (inflating is async, so they
//    go through one promise chain), stored in a ring by tick for baselines, fed to the
//    interpolator, and used to reconcile our prediction;
//  * the animation frame: draw everything at the interpolated render time, our own
//    player at its predicted position, and refresh the HUD a few times a second.
// `window.tickwire` mirrors the state tests and power users read.

import { CodecError, SnapshotRing, decodePayload, entityAt, countLive, KIND_PLAYER, EFLAG_DEAD } from "./codec.js";
import { Net, loadProto } from "./net.js";
import { MoveRule, Predictor } from "./predict.js";
import { Interpolator } from "./interp.js";
import { Renderer } from "./render.js";
import { Hud, Scoreboard, Banner, RateMeter } from "./hud.js";

const MAX_CMDS_PER_INPUT = 3;
const HUD_REFRESH_S = 0.25;
const now = () => performance.now() / 1000;

function pickName() {
  const q = new URLSearchParams(location.search).get("name");
  const fallback = `player-${1000 + Math.floor(Math.random() * 9000)}`;
  const name = (q ?? "").trim().slice(0, 24).trim();
  return name || fallback;
}

const tw = {
  connected: false,
  playerId: null,
  entity: null,
  name: pickName(),
  serverTick: 0,
  rttMs: null, // the server's measure (Snapshot.rtt_ms)
  pingRttMs: null, // ours, from Ping/Pong
  entityCount: 0,
  me: null, // {x, y}: predicted / rendered own position
  server: null, // {x, y}: own position in the newest authoritative snapshot
  players: [], // [{playerId, entity, name, connected, score}]
  snapshots: 0,
  keyframes: 0,
  deltas: 0,
  decodeErrors: 0,
  lastClose: null, // {code, reason}
  banner: "",
  hudVisible: true,
  reconnects: 0,
  // Written once per animation frame, for probes (bench/browser_smoothness.py); read-only:
  // {t (s), renderTick, newestTick, me: {x, y} | null, firstNpc: {slot, id, x, y, dead} | null}
  sample: null,
};
window.tickwire = tw;

class Game {
  constructor(types) {
    this.canvas = document.getElementById("arena");
    this.renderer = new Renderer(this.canvas);
    this.hud = new Hud(document.getElementById("hud"));
    this.scoreboard = new Scoreboard(document.getElementById("scoreboard"));
    this.banner = new Banner(document.getElementById("banner"));
    this.overlay = document.getElementById("overlay");
    this.ring = new SnapshotRing(60);
    this.interp = new Interpolator();
    this.predictor = new Predictor();
    this.snapRate = new RateMeter();
    this.byteRate = new RateMeter();
    this.fpsMeter = new RateMeter();
    this.keys = new Set();
    this.mouse = { sx: null, sy: null, down: false };
    this.aim = 0;
    this.names = new Map(); // entity slot -> name
    this.away = new Set(); // entity slots of players whose seat waits for a resume
    this.deadSince = new Map(); // slot -> [kind|gen id, local time first seen dead]
    this.world = { w: 1000, h: 1000 };
    this.playerHpMax = 100;
    this.npcHpMax = 60;
    this.lastHudAt = 0;
    this.lastFrameAt = now();
    this.lastSnapshotBytes = 0;
    this.wasDisconnected = null;
    this._resetSession();
    this.net = new Net({
      url: `${location.protocol === "https:" ? "wss" : "ws"}://${location.host}/ws`,
      name: tw.name,
      types,
      onWelcome: (w) => this.onWelcome(w),
      onFrame: (kind, msg, bytes) => this.onFrame(kind, msg, bytes),
      onClose: (info) => this.onClose(info),
    });
    this._bindInput();
  }

  start() {
    this.net.start();
    this._scheduleTick();
    requestAnimationFrame(() => this.frame());
  }

  _resetSession() {
    this.sessionGen = (this.sessionGen || 0) + 1;
    this.chain = Promise.resolve();
    this.welcome = null;
    this.tickRate = 30;
    this.seq = 0;
    this.ackTick = 0;
    this.needKeyframe = false;
    this.latest = null; // {tick, words, serverTime, recvAt}
    this.ring.clear();
    this.interp.reset(this.tickRate);
    this.predictor.reset();
    this.lastTickAt = now();
  }

  // ---------------------------------------------------------------- network events

  onWelcome(w) {
    this._resetSession();
    this.welcome = w;
    this.tickRate = w.tickRate || 30;
    this.ring.size = Math.max(64, 2 * this.tickRate); // the server's ring: any ack in it is usable
    this.interp.reset(this.tickRate);
    this._setParams(w.params);
    tw.connected = true;
    tw.playerId = w.playerId;
    tw.entity = w.entity;
    tw.serverTick = w.tick;
    if (this.wasDisconnected) {
      tw.reconnects++;
      const c = this.wasDisconnected;
      this.banner.show(`Reconnected (last close: ${c.code}${c.reason ? ` ${c.reason}` : ""})`, "ok");
      this.banner.hideAfter(4000);
      this.wasDisconnected = null;
    }
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
        tw.pingRttMs = Math.max(0, (now() - msg.clientTime) * 1000);
        break;
      case "params":
        this._setParams(msg.params);
        break;
      case "kick":
        this.lastKick = { code: msg.code, reason: msg.reason };
        break;
      default:
        break;
    }
  }

  async onSnapshot(snap, bytes, gen, recvAt) {
    let baseline = null;
    if (snap.baselineTick) {
      baseline = this.ring.get(snap.baselineTick);
      if (!baseline) {
        this.needKeyframe = true; // ack 0 until a keyframe arrives
        return;
      }
    }
    let decoded;
    try {
      decoded = await decodePayload(snap.payload, baseline);
    } catch (err) {
      if (!(err instanceof CodecError)) throw err;
      tw.decodeErrors++;
      console.warn(`tickwire: snapshot ${snap.tick} rejected: ${err.message}`);
      this.needKeyframe = true;
      return;
    }
    if (gen !== this.sessionGen || snap.tick <= this.ring.newest) return;
    const words = decoded.words;
    this.ring.put(snap.tick, words);
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

    const me = this.welcome ? entityAt(words, this.welcome.entity) : null;
    if (me && me.kind === KIND_PLAYER) {
      tw.server = { x: me.x, y: me.y };
      this.predictor.reconcile(me, snap.lastInputSeq, (me.flags & EFLAG_DEAD) !== 0);
    }
    this._trackDeaths(words);
    this._refreshPlayers();
  }

  onRoster(roster) {
    this.roster = roster.players || [];
    this.names = new Map(this.roster.map((p) => [p.entity, p.name]));
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

  _trackDeaths(words) {
    for (const [slot, [id]] of this.deadSince) {
      const e = entityAt(words, slot);
      if (!e || e.id !== id || !(e.flags & EFLAG_DEAD)) this.deadSince.delete(slot);
    }
    for (const p of this.roster || []) {
      const e = entityAt(words, p.entity);
      if (e && e.flags & EFLAG_DEAD && !this.deadSince.has(p.entity)) this.deadSince.set(p.entity, [e.id, now()]);
    }
  }

  onClose(info) {
    tw.connected = false;
    tw.lastClose = { code: info.code, reason: info.reason };
    const what = `${info.code}${info.reason ? ` ${info.reason}` : ""}`;
    this.closeInfo = info;
    if (info.retryInS === null) {
      this.banner.show(`Disconnected (${what})`);
    } else if (info.resumeRefused) {
      this.banner.show(`Resume refused (${what}) — joining as a new player…`, "warn");
    } else {
      this.wasDisconnected = { code: info.code, reason: info.reason };
      this._showRetryBanner();
    }
    this._resetSession();
    tw.me = null;
  }

  _showRetryBanner() {
    const info = this.closeInfo;
    const c = this.wasDisconnected;
    if (!info || !c) return;
    const left = Math.max(0, (this.net.retryAt ?? 0) - now());
    const what = `${c.code}${c.reason ? ` ${c.reason}` : " (no reason given)"}`;
    const tail = this.net.ws ? "reconnecting…" : `reconnecting in ${left.toFixed(1)} s (attempt ${info.attempt})`;
    this.banner.show(`Connection closed: ${what} — ${tail}`);
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
    let mx = 0, my = 0;
    const k = this.keys;
    if (k.has("left")) mx -= 1;
    if (k.has("right")) mx += 1;
    if (k.has("up")) my -= 1;
    if (k.has("down")) my += 1;
    const me = tw.me || tw.server;
    if (me && this.mouse.sx !== null) {
      const w = this.renderer.toWorld(this.mouse.sx, this.mouse.sy);
      if (w.x !== me.x || w.y !== me.y) this.aim = Math.atan2(w.y - me.y, w.x - me.x);
    }
    const fire = this.mouse.down || k.has("fire");
    const cmd = {
      seq: ++this.seq,
      clientTick: Math.max(0, Math.round(this._estimatedServerTick())),
      moveX: mx,
      moveY: my,
      aim: this.aim,
      buttons: fire ? 1 : 0,
    };
    this.predictor.apply(cmd);
    const cmds = this.predictor.pending.slice(-MAX_CMDS_PER_INPUT);
    this.net.send({ input: { ackTick: this.needKeyframe ? 0 : this.ackTick, cmds } });
  }

  _estimatedServerTick() {
    const rtt = (tw.pingRttMs ?? tw.rttMs ?? 0) / 1000;
    // targetS: the server-time offset of the earliest snapshot arrivals (no render delay).
    if (this.interp.targetS === null) return tw.serverTick;
    return (now() + this.interp.targetS + rtt / 2) * this.tickRate;
  }

  // ---------------------------------------------------------------- input devices

  _bindInput() {
    const map = {
      KeyW: "up", ArrowUp: "up", KeyS: "down", ArrowDown: "down",
      KeyA: "left", ArrowLeft: "left", KeyD: "right", ArrowRight: "right", Space: "fire",
    };
    const byKey = { w: "up", s: "down", a: "left", d: "right", " ": "fire" };
    const action = (e) => map[e.code] || byKey[(e.key || "").toLowerCase()];
    window.addEventListener("keydown", (e) => {
      if (e.code === "KeyH" || e.code === "F3" || (!e.code && e.key?.toLowerCase() === "h")) {
        if (!e.repeat) this.toggleHud();
        e.preventDefault();
        return;
      }
      const a = action(e);
      if (a) {
        this.keys.add(a);
        e.preventDefault();
      }
    });
    window.addEventListener("keyup", (e) => {
      const a = action(e);
      if (a) this.keys.delete(a);
    });
    window.addEventListener("blur", () => {
      this.keys.clear();
      this.mouse.down = false;
    });
    this.canvas.addEventListener("mousemove", (e) => {
      this.mouse.sx = e.offsetX;
      this.mouse.sy = e.offsetY;
    });
    this.canvas.addEventListener("mousedown", (e) => {
      if (e.button === 0) this.mouse.down = true;
      this.mouse.sx = e.offsetX;
      this.mouse.sy = e.offsetY;
    });
    window.addEventListener("mouseup", (e) => {
      if (e.button === 0) this.mouse.down = false;
    });
    this.canvas.addEventListener("contextmenu", (e) => e.preventDefault());
  }

  toggleHud() {
    this.hud.toggle();
    tw.hudVisible = this.hud.visible;
    if (this.hud.visible) this.lastHudAt = 0;
  }

  // ---------------------------------------------------------------- drawing

  frame() {
    const t = now();
    const dtS = Math.min(0.25, t - this.lastFrameAt);
    this.lastFrameAt = t;
    this.fpsMeter.add(t);
    this.predictor.decay(dtS);

    const ownSlot = this.welcome ? this.welcome.entity : -1;
    const { entities, renderTick } = this.interp.sample(t, ownSlot);
    let meEntity = null;
    const auth = this.latest && ownSlot >= 0 ? entityAt(this.latest.words, ownSlot) : null;
    if (auth && auth.kind === KIND_PLAYER) {
      const dead = (auth.flags & EFLAG_DEAD) !== 0;
      const pos = dead ? null : this.predictor.rendered((t - this.lastTickAt) * this.tickRate);
      meEntity = { ...auth, ...(pos || {}), aim: dead ? auth.aim : this.aim };
      tw.me = { x: meEntity.x, y: meEntity.y };
      this._overlay(dead ? auth : null, t);
    } else {
      this._overlay(null, t);
    }

    for (const e of entities) {
      if (e.kind === KIND_PLAYER) this.playerHpMax = Math.max(this.playerHpMax, e.hp);
      else if (e.kind === 2) this.npcHpMax = Math.max(this.npcHpMax, e.hp);
    }
    this._publishSample(t, renderTick, entities);
    this.renderer.draw({
      world: this.world,
      me: meEntity,
      meEntity,
      entities,
      names: this.names,
      away: this.away,
      playerRadius: this.moveParams?.playerRadius || 12,
      npcRadius: 10,
      playerHpMax: this.playerHpMax,
      npcHpMax: this.npcHpMax,
      respawnText: (e) => {
        const d = this.deadSince.get(e.slot);
        return d ? `respawning… ${(t - d[1]).toFixed(0)} s` : "respawning…";
      },
    });

    if (this.wasDisconnected && !tw.connected) this._showRetryBanner();
    tw.banner = this.banner.text;
    if (t - this.lastHudAt >= HUD_REFRESH_S) {
      this.lastHudAt = t;
      this.hud.update(this.hudStats(t));
      this.scoreboard.update(
        tw.players.map((p) => ({ ...p, me: p.entity === ownSlot && tw.connected })),
      );
    }
    requestAnimationFrame(() => this.frame());
  }

  /** `tw.sample`: what this frame drew for our own player and one NPC (kept while it lives). */
  _publishSample(t, renderTick, entities) {
    const keep = this.sampleNpc;
    let npc = keep ? entities.find((e) => e.slot === keep.slot && e.id === keep.id) : null;
    if (!npc) npc = entities.find((e) => e.kind === 2 && !(e.flags & EFLAG_DEAD)) || null;
    this.sampleNpc = npc ? { slot: npc.slot, id: npc.id } : null;
    const frames = this.interp.frames;
    tw.sample = {
      t,
      renderTick,
      newestTick: frames.length ? frames[frames.length - 1].tick : null,
      me: tw.me ? { x: tw.me.x, y: tw.me.y } : null,
      firstNpc: npc ? { slot: npc.slot, id: npc.id, x: npc.x, y: npc.y,
                        dead: (npc.flags & EFLAG_DEAD) !== 0 } : null,
    };
  }

  _overlay(deadMe, t) {
    if (!deadMe) {
      this.overlay.hidden = true;
      return;
    }
    const d = this.deadSince.get(deadMe.slot);
    const secs = d ? (t - d[1]).toFixed(1) : "0.0";
    this.overlay.hidden = false;
    this.overlay.innerHTML = `<div class="big">Eliminated</div><div>respawning… ${secs} s</div>`;
  }

  hudStats(t) {
    return {
      serverRttMs: tw.rttMs,
      pingRttMs: tw.pingRttMs,
      serverTick: tw.serverTick,
      tickRate: this.tickRate,
      snapshotsPerS: this.snapRate.rate(t),
      kbPerS: this.byteRate.rate(t) / 1000,
      lastSnapshotBytes: this.lastSnapshotBytes,
      keyframes: tw.keyframes,
      deltas: tw.deltas,
      interpDelayMs: this.interp.delayS * 1000,
      corrections: this.predictor.corrections,
      lastCorrection: this.predictor.lastCorrection,
      pendingInputs: this.predictor.pending.length,
      fps: this.fpsMeter.rate(t),
      players: tw.players.filter((p) => p.connected).length,
      entities: tw.entityCount,
    };
  }
}

async function main() {
  let types;
  try {
    types = await loadProto();
  } catch (err) {
    const b = document.getElementById("banner");
    b.textContent = `Cannot start: ${err.message}`;
    b.className = "banner error";
    b.hidden = false;
    throw err;
  }
  const game = new Game(types);
  window.tickwireGame = game; // for debugging from the console
  game.start();
}

main();
