// What the player sees each animation frame: the arena (render.js), the death overlay with
// its countdown, the kill feed, hit markers, the damage flash, the HUD and the scoreboard.
// Reads the Game's state; never sends anything.

import { entityAt, KIND_PLAYER, KIND_NPC, EFLAG_DEAD } from "./codec.js";
import { Renderer } from "./render.js";
import { CameraFollow } from "./camera.js";
import { Fader } from "./fade.js";
import { Minimap } from "./minimap.js";
import { Hud, Scoreboard, KillFeed, RateMeter } from "./hud.js";
import { respawnSecondsLeft } from "./events.js";
import { tw, now } from "./state.js";

const HUD_REFRESH_S = 0.25;
const HIT_MARK_S = 0.45;
const FLASH_MS = 260;
const COMPACT = "(max-width: 700px)";

export class View {
  constructor(game) {
    this.game = game;
    this.canvas = document.getElementById("arena");
    this.renderer = new Renderer(this.canvas);
    this.follow = new CameraFollow();
    this.fader = new Fader();
    this.minimap = new Minimap(document.getElementById("minimap"));
    this.hud = new Hud(document.getElementById("hud"));
    this.scoreboard = new Scoreboard(document.getElementById("scoreboard"));
    this.feed = new KillFeed(document.getElementById("killfeed"));
    this.overlay = document.getElementById("overlay");
    this.flash = document.getElementById("flash");
    this.help = document.getElementById("help");
    this.fpsMeter = new RateMeter();
    this.playerHpMax = 100;
    this.npcHpMax = 60;
    this.hitMarks = []; // {slot, x, y, killed, at}
    this.lastHudAt = 0;
    this.lastFrameAt = now();
    this.overlayText = "";
    const mq = window.matchMedia?.(COMPACT);
    const layout = () => {
      tw.compact = !!mq?.matches;
      this.scoreboard.compact = tw.compact;
      this.lastHudAt = 0;
      // Small screens start without the net HUD (a tap on "net" shows it).
      if (tw.compact && this.hud.visible && !this.hudChosen) this._setHud(false);
    };
    document.getElementById("hud-toggle").addEventListener("click", () => this.toggleHud());
    mq?.addEventListener?.("change", layout);
    layout();
    this.help.textContent = tw.touch
      ? "Left stick moves and aims · FIRE shoots"
      : "WASD / arrows move · mouse aims · click or space fires · H toggles the HUD";
  }

  start() {
    requestAnimationFrame(() => this.frame());
  }

  toggleHud() {
    this.hudChosen = true;
    this._setHud(!this.hud.visible);
  }

  _setHud(visible) {
    if (this.hud.visible !== visible) this.hud.toggle();
    tw.hudVisible = this.hud.visible;
    if (this.hud.visible) this.lastHudAt = 0;
  }

  /** Events from one snapshot (events.js) arrive here from the Game. */
  onEvents(ev, t) {
    const g = this.game;
    const ownSlot = g.welcome ? g.welcome.entity : -1;
    const who = (slot) => {
      const pid = g.playerIds.get(slot);
      return pid === undefined ? null : { name: g.names.get(slot) || `#${slot}`, playerId: pid, me: slot === ownSlot };
    };
    for (const k of ev.kills) {
      tw.kills++;
      const killer = k.killer >= 0 ? who(k.killer) : null;
      const victim = k.victimKind === KIND_NPC ? { name: "NPC", playerId: null } : who(k.victim);
      // Player deaths for everyone; NPC kills only when they are ours (40 NPCs would flood it).
      if (!victim || (victim.playerId === null && !(killer && killer.me))) continue;
      this.feed.add({ at: t, killer, victim, mine: !!(killer?.me || victim.me) });
    }
    for (const h of ev.hits) {
      tw.hits++;
      this.hitMarks.push({ ...h, at: t });
    }
    if (ev.damage > 0) {
      tw.damageFlashes++;
      this.flash.classList.remove("on");
      void this.flash.offsetWidth; // restart the CSS animation
      this.flash.classList.add("on");
      clearTimeout(this.flashTimer);
      this.flashTimer = setTimeout(() => this.flash.classList.remove("on"), FLASH_MS);
    }
  }

  frame() {
    const g = this.game;
    const t = now();
    const dtS = Math.min(0.25, t - this.lastFrameAt);
    this.lastFrameAt = t;
    this.fpsMeter.add(t);
    g.predictor.decay(dtS);

    const ownSlot = g.welcome ? g.welcome.entity : -1;
    const sampled = g.interp.sample(t, ownSlot);
    const renderTick = sampled.renderTick;
    // Our predicted projectiles stand in for their server entities (shots.js): one on screen.
    const hidden = g.shots.hidden();
    const entities = hidden.size
      ? sampled.entities.filter((e) => hidden.get(e.slot) !== e.id) : sampled.entities;
    const ownShots = g.shots.drawables(t, dtS);
    const tickNow = g.serverTickNow(t);
    let meEntity = null;
    const auth = g.latest && ownSlot >= 0 ? entityAt(g.latest.words, ownSlot) : null;
    if (auth && auth.kind === KIND_PLAYER) {
      const dead = (auth.flags & EFLAG_DEAD) !== 0;
      const pos = dead ? null : g.predictor.rendered((t - g.lastTickAt) * g.tickRate);
      meEntity = { ...auth, ...(pos || {}), aim: dead ? auth.aim : (g.aim ?? auth.aim) };
      tw.me = { x: meEntity.x, y: meEntity.y };
      this._deathOverlay(dead ? auth : null, tickNow);
    } else {
      this._deathOverlay(null, tickNow);
    }

    for (const e of entities) {
      if (e.kind === KIND_PLAYER) this.playerHpMax = Math.max(this.playerHpMax, e.hp);
      else if (e.kind === KIND_NPC) this.npcHpMax = Math.max(this.npcHpMax, e.hp);
    }
    this.hitMarks = this.hitMarks.filter((h) => t - h.at < HIT_MARK_S);
    this._publishSample(t, renderTick, entities);
    // Entering / leaving our interest fades (fade.js); ghosts are drawn, never counted.
    const drawn = this.fader.apply(entities, t);
    const delayS = g.moveParams?.respawnDelayS;
    this.renderer.draw({
      world: g.world,
      follow: this.follow,
      dtS,
      me: meEntity,
      meEntity,
      entities: drawn,
      names: g.names,
      playerIds: g.playerIds,
      away: g.away,
      playerRadius: g.moveParams?.playerRadius || 12,
      npcRadius: 10,
      playerHpMax: this.playerHpMax,
      npcHpMax: this.npcHpMax,
      hitMarks: this.hitMarks.map((h) => ({ ...h, age: (t - h.at) / HIT_MARK_S })),
      ownShots,
      respawnText: (e) => {
        const d = g.deadSince.get(e.slot);
        const left = d ? respawnSecondsLeft(d[1], delayS, g.tickRate, tickNow) : null;
        return left === null ? "respawning…" : `respawn in ${left} s`;
      },
    });

    const rect = this.renderer.viewRect();
    tw.camera = { x: this.renderer.cam.x, y: this.renderer.cam.y, scale: this.renderer.cam.scale,
                  rect };
    this.minimap.update(t, { world: g.world, rect, me: tw.me, entities, playerIds: g.playerIds,
                             interest: g.interest });
    tw.minimap = { shown: this.minimap.shown, draws: this.minimap.draws, dots: this.minimap.dots };
    tw.fading = this.fader.fading;
    g.conn.refresh(t);
    tw.banner = g.conn.banner.text;
    if (t - this.lastHudAt >= HUD_REFRESH_S) {
      this.lastHudAt = t;
      tw.hudBlank = !tw.connected;
      this.hud.update(tw.connected ? this.hudStats(t) : null);
      this.scoreboard.update(
        tw.players.map((p) => ({ ...p, me: p.entity === ownSlot && tw.connected })),
      );
      tw.killFeed = this.feed.update(t);
    }
    requestAnimationFrame(() => this.frame());
  }

  /** One overlay and one timer for our own death: "Eliminated", then "Respawn in N s". */
  _deathOverlay(deadMe, tickNow) {
    const g = this.game;
    tw.dead = !!deadMe;
    if (!deadMe) {
      tw.respawnIn = null;
      this.overlay.hidden = true;
      return;
    }
    const d = g.deadSince.get(deadMe.slot);
    const left = d ? respawnSecondsLeft(d[1], g.moveParams?.respawnDelayS, g.tickRate, tickNow) : null;
    tw.respawnIn = left;
    const line = left === null ? "Respawning…" : left > 0 ? `Respawn in ${left} s` : "Respawning…";
    const text = `Eliminated|${line}`;
    if (text !== this.overlayText) {
      this.overlayText = text;
      this.overlay.replaceChildren();
      const big = document.createElement("div");
      big.className = "big";
      big.textContent = "Eliminated";
      const sub = document.createElement("div");
      sub.className = "countdown";
      sub.textContent = line;
      this.overlay.append(big, sub);
    }
    this.overlay.hidden = false;
  }

  /** `tw.sample`: what this frame drew for our own player and one NPC (kept while it lives). */
  _publishSample(t, renderTick, entities) {
    const keep = this.sampleNpc;
    let npc = keep ? entities.find((e) => e.slot === keep.slot && e.id === keep.id) : null;
    if (!npc) npc = entities.find((e) => e.kind === KIND_NPC && !(e.flags & EFLAG_DEAD)) || null;
    this.sampleNpc = npc ? { slot: npc.slot, id: npc.id } : null;
    const frames = this.game.interp.frames;
    tw.sample = {
      t,
      renderTick,
      newestTick: frames.length ? frames[frames.length - 1].tick : null,
      me: tw.me ? { x: tw.me.x, y: tw.me.y } : null,
      firstNpc: npc ? { slot: npc.slot, id: npc.id, x: npc.x, y: npc.y,
                        dead: (npc.flags & EFLAG_DEAD) !== 0 } : null,
    };
  }

  hudStats(t) {
    const g = this.game;
    return {
      serverRttMs: tw.rttMs,
      pingRttMs: tw.pingRttMs,
      serverTick: tw.serverTick,
      tickRate: g.tickRate,
      snapshotsPerS: g.snapRate.rate(t),
      kbPerS: g.byteRate.rate(t) / 1000,
      lastSnapshotBytes: g.lastSnapshotBytes,
      keyframes: tw.keyframes,
      deltas: tw.deltas,
      interpDelayMs: g.interp.delayS * 1000,
      corrections: g.predictor.corrections,
      lastCorrection: g.predictor.lastCorrection,
      pendingInputs: g.predictor.pending.length,
      fps: this.fpsMeter.rate(t),
      players: tw.players.filter((p) => p.connected).length,
      entities: tw.entityCount,
      worldEntities: tw.worldEntities,
    };
  }
}
