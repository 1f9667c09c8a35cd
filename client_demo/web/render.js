// Canvas drawing: the arena, entities, labels, scoreboard and the death overlay.
// Pure drawing: it reads a `view` object prepared by main.js and keeps only the camera.

import { KIND_PLAYER, KIND_NPC, KIND_PROJECTILE, EFLAG_DEAD } from "./codec.js";
import { playerColor } from "./events.js";
import { cameraTarget } from "./camera.js";

const COLORS = {
  bg: "#0b0f17",
  outside: "#06080d",
  grid: "rgba(120, 150, 200, 0.07)",
  gridMajor: "rgba(120, 150, 200, 0.14)",
  border: "rgba(120, 170, 255, 0.55)",
  me: "#38d9ff",
  npc: "#f0a04b",
  npcEdge: "#7a4a16",
  projectile: "#fff1a8",
  dead: "#5b6270",
  text: "#dfe7f5",
  dim: "#8893a7",
  hpBack: "rgba(0, 0, 0, 0.55)",
  hpGood: "#4ade80",
  hpMid: "#facc15",
  hpLow: "#f87171",
};

export class Renderer {
  constructor(canvas) {
    this.canvas = canvas;
    this.ctx = canvas.getContext("2d");
    this.cam = { x: 500, y: 500, scale: 1 };
    this.dpr = 1;
  }

  resize() {
    const dpr = window.devicePixelRatio || 1;
    const w = Math.max(1, Math.floor(this.canvas.clientWidth * dpr));
    const h = Math.max(1, Math.floor(this.canvas.clientHeight * dpr));
    if (this.canvas.width !== w || this.canvas.height !== h) {
      this.canvas.width = w;
      this.canvas.height = h;
    }
    this.dpr = dpr;
  }

  /** Screen (CSS pixels) to world units, with the camera of the last frame. */
  toWorld(sx, sy) {
    const c = this.cam;
    const cw = this.canvas.clientWidth, ch = this.canvas.clientHeight;
    return { x: c.x + (sx - cw / 2) / c.scale, y: c.y + (sy - ch / 2) / c.scale };
  }

  /**
   * Fit the whole world when it fits at a comfortable zoom, else follow `focus`
   * (camera.js); eased by `follow` (a CameraFollow) when given, exact otherwise.
   */
  updateCamera(world, focus, follow = null, dtS = 0) {
    const target = cameraTarget(this.canvas.clientWidth, this.canvas.clientHeight, world, focus);
    this.cam = follow ? follow.step(target, dtS) : { x: target.x, y: target.y, scale: target.scale };
  }

  /** The world rectangle the camera shows: {x0, y0, x1, y1} in world units. */
  viewRect() {
    const c = this.cam;
    const halfW = this.canvas.clientWidth / 2 / c.scale, halfH = this.canvas.clientHeight / 2 / c.scale;
    return { x0: c.x - halfW, y0: c.y - halfH, x1: c.x + halfW, y1: c.y + halfH };
  }

  draw(view) {
    this.resize();
    const { ctx } = this;
    const cw = this.canvas.clientWidth, ch = this.canvas.clientHeight;
    this.updateCamera(view.world, view.me, view.follow, view.dtS);
    const { x: camX, y: camY, scale } = this.cam;
    ctx.setTransform(this.dpr, 0, 0, this.dpr, 0, 0);
    ctx.fillStyle = COLORS.outside;
    ctx.fillRect(0, 0, cw, ch);
    // world transform
    ctx.setTransform(this.dpr * scale, 0, 0, this.dpr * scale, this.dpr * (cw / 2 - camX * scale), this.dpr * (ch / 2 - camY * scale));
    this._arena(view.world, scale);

    const labels = [];
    // Only what is on screen (plus a margin for labels and bars): a big world holds far
    // more than the canvas shows.
    const r = this.viewRect(), m = 60 / scale;
    const onScreen = view.entities.filter((e) => e.x > r.x0 - m && e.x < r.x1 + m
                                              && e.y > r.y0 - m && e.y < r.y1 + m);
    for (const e of onScreen) {
      if (e.kind === KIND_PROJECTILE) {
        ctx.globalAlpha = e.fade ?? 1;
        this._projectile(e, scale);
        ctx.globalAlpha = 1;
      }
    }
    for (const tr of view.ownShots?.tracers || []) this._tracer(tr, scale);
    for (const e of view.ownShots?.projectiles || []) {
      ctx.globalAlpha = e.alpha;
      this._projectile(e, scale);
      ctx.globalAlpha = 1;
    }
    for (const e of onScreen) {
      if (e.kind === KIND_NPC) this._npc(e, view, scale);
    }
    for (const e of onScreen) {
      if (e.kind === KIND_PLAYER) labels.push(this._player(e, view, false, scale));
    }
    if (view.meEntity) labels.push(this._player(view.meEntity, view, true, scale));
    for (const h of view.hitMarks || []) this._hitMark(h, scale);

    // screen-space labels (crisp text at any zoom)
    ctx.setTransform(this.dpr, 0, 0, this.dpr, 0, 0);
    for (const l of labels) if (l) this._label(l, cw, ch);
  }

  _arena(world, scale) {
    const { ctx } = this;
    ctx.fillStyle = COLORS.bg;
    ctx.fillRect(0, 0, world.w, world.h);
    const line = 1 / scale;
    // Grid lines on screen only (a big world has thousands).
    const r = this.viewRect();
    const x0 = Math.max(0, r.x0), x1 = Math.min(world.w, r.x1);
    const y0 = Math.max(0, r.y0), y1 = Math.min(world.h, r.y1);
    for (const [step, color] of [[50, COLORS.grid], [250, COLORS.gridMajor]]) {
      ctx.beginPath();
      for (let x = Math.max(step, Math.ceil(x0 / step) * step); x < world.w && x <= x1; x += step) {
        ctx.moveTo(x, y0);
        ctx.lineTo(x, y1);
      }
      for (let y = Math.max(step, Math.ceil(y0 / step) * step); y < world.h && y <= y1; y += step) {
        ctx.moveTo(x0, y);
        ctx.lineTo(x1, y);
      }
      ctx.strokeStyle = color;
      ctx.lineWidth = line;
      ctx.stroke();
    }
    ctx.strokeStyle = COLORS.border;
    ctx.lineWidth = 2 * line;
    ctx.strokeRect(0, 0, world.w, world.h);
  }

  _projectile(e, scale) {
    const { ctx } = this;
    const sp = Math.hypot(e.vx, e.vy) || 1;
    const tail = 14;
    ctx.strokeStyle = "rgba(255, 241, 168, 0.35)";
    ctx.lineWidth = 3;
    ctx.lineCap = "round";
    ctx.beginPath();
    ctx.moveTo(e.x, e.y);
    ctx.lineTo(e.x - (e.vx / sp) * tail, e.y - (e.vy / sp) * tail);
    ctx.stroke();
    ctx.fillStyle = COLORS.projectile;
    ctx.beginPath();
    ctx.arc(e.x, e.y, Math.max(3, 2 / scale), 0, Math.PI * 2);
    ctx.fill();
  }

  /** A hitscan ray: ours brighter, a hit ending in red; fading with `alpha`. */
  _tracer(tr, scale) {
    const { ctx } = this;
    ctx.save();
    ctx.globalAlpha = Math.max(0, Math.min(1, tr.alpha));
    ctx.strokeStyle = tr.hit ? "#fca5a5" : tr.own ? "#e8fbff" : "rgba(255, 241, 168, 0.8)";
    ctx.lineWidth = (tr.own ? 2 : 1.5) / scale;
    ctx.lineCap = "round";
    ctx.beginPath();
    ctx.moveTo(tr.x0, tr.y0);
    ctx.lineTo(tr.x1, tr.y1);
    ctx.stroke();
    ctx.restore();
  }

  _npc(e, view, scale) {
    const { ctx } = this;
    const r = view.npcRadius;
    const dead = e.flags & EFLAG_DEAD;
    ctx.save();
    ctx.translate(e.x, e.y);
    const fade = e.fade ?? 1; // fade.js: entering or leaving our interest
    ctx.globalAlpha = (dead ? 0.25 : 1) * fade;
    ctx.rotate(Math.atan2(e.vy, e.vx));
    ctx.beginPath();
    for (let i = 0; i < 6; i++) {
      const a = (i / 6) * Math.PI * 2;
      ctx.lineTo(Math.cos(a) * r, Math.sin(a) * r);
    }
    ctx.closePath();
    ctx.fillStyle = dead ? COLORS.dead : COLORS.npc;
    ctx.fill();
    ctx.lineWidth = 2 / scale;
    ctx.strokeStyle = COLORS.npcEdge;
    ctx.stroke();
    ctx.restore();
    if (!dead && e.hp < view.npcHpMax) {
      ctx.globalAlpha = fade;
      this._hpBar(e.x, e.y + r + 4, r * 2, e.hp / view.npcHpMax, scale);
      ctx.globalAlpha = 1;
    }
  }

  _player(e, view, isMe, scale) {
    const { ctx } = this;
    const r = view.playerRadius;
    const dead = e.flags & EFLAG_DEAD;
    const name = view.names.get(e.slot) || `#${e.slot}`;
    const away = !isMe && view.away.has(e.slot); // seat kept for a resume
    const pid = view.playerIds?.get(e.slot);
    const color = dead ? COLORS.dead : isMe ? COLORS.me : pid ? playerColor(pid) : COLORS.dim;
    ctx.save();
    const fade = e.fade ?? 1; // fade.js: entering or leaving our interest
    ctx.globalAlpha = (dead ? 0.45 : away ? 0.4 : 1) * fade;
    if (isMe && !dead) {
      ctx.beginPath();
      ctx.arc(e.x, e.y, r + 7, 0, Math.PI * 2);
      ctx.strokeStyle = "rgba(56, 217, 255, 0.35)";
      ctx.lineWidth = 3;
      ctx.stroke();
    }
    ctx.beginPath();
    ctx.arc(e.x, e.y, r, 0, Math.PI * 2);
    ctx.fillStyle = color;
    ctx.fill();
    ctx.lineWidth = 2 / scale;
    ctx.strokeStyle = "rgba(0,0,0,0.5)";
    ctx.stroke();
    if (!dead) {
      ctx.beginPath();
      ctx.moveTo(e.x + Math.cos(e.aim) * r * 0.4, e.y + Math.sin(e.aim) * r * 0.4);
      ctx.lineTo(e.x + Math.cos(e.aim) * (r + 10), e.y + Math.sin(e.aim) * (r + 10));
      ctx.strokeStyle = isMe ? "#e8fbff" : "rgba(255,255,255,0.85)";
      ctx.lineWidth = 3;
      ctx.lineCap = "round";
      ctx.stroke();
      this._hpBar(e.x, e.y + r + 6, r * 2.4, e.hp / view.playerHpMax, scale);
    }
    ctx.restore();
    const c = this.cam, cw = this.canvas.clientWidth, ch = this.canvas.clientHeight;
    return {
      sx: cw / 2 + (e.x - c.x) * c.scale,
      sy: ch / 2 + (e.y - c.y - r) * c.scale - 8,
      text: away ? `${name} (away)` : name,
      // Our own countdown is in the death overlay: one label, one timer.
      sub: dead && !isMe ? (view.respawnText?.(e) ?? "respawning…") : null,
      isMe,
      alpha: fade,
    };
  }

  /** A hit marker: an X over what our shot hit, fading over its `age` (0..1). */
  _hitMark(h, scale) {
    const { ctx } = this;
    const r = 9 / scale, gap = 3 / scale;
    ctx.save();
    ctx.globalAlpha = Math.max(0, 1 - h.age);
    ctx.strokeStyle = h.killed ? "#f87171" : "#ffffff";
    ctx.lineWidth = 2.5 / scale;
    ctx.lineCap = "round";
    ctx.beginPath();
    for (const [sx, sy] of [[1, 1], [1, -1], [-1, 1], [-1, -1]]) {
      ctx.moveTo(h.x + sx * gap, h.y + sy * gap);
      ctx.lineTo(h.x + sx * r, h.y + sy * r);
    }
    ctx.stroke();
    ctx.restore();
  }

  _hpBar(x, y, w, frac, scale) {
    const { ctx } = this;
    const h = Math.max(3, 4 / scale);
    frac = Math.max(0, Math.min(1, frac));
    ctx.fillStyle = COLORS.hpBack;
    ctx.fillRect(x - w / 2, y, w, h);
    ctx.fillStyle = frac > 0.6 ? COLORS.hpGood : frac > 0.3 ? COLORS.hpMid : COLORS.hpLow;
    ctx.fillRect(x - w / 2, y, w * frac, h);
  }

  _label(l, cw, ch) {
    const { ctx } = this;
    if (l.sx < -100 || l.sx > cw + 100 || l.sy < -40 || l.sy > ch + 40) return;
    ctx.globalAlpha = l.alpha ?? 1;
    ctx.textAlign = "center";
    ctx.textBaseline = "bottom";
    ctx.font = `${l.isMe ? "600 " : ""}12px system-ui, "DejaVu Sans", sans-serif`;
    ctx.lineWidth = 3;
    ctx.strokeStyle = "rgba(0,0,0,0.75)";
    ctx.strokeText(l.text, l.sx, l.sy);
    ctx.fillStyle = l.isMe ? COLORS.me : COLORS.text;
    ctx.fillText(l.text, l.sx, l.sy);
    if (l.sub) {
      ctx.font = "11px system-ui, \"DejaVu Sans\", sans-serif";
      ctx.strokeText(l.sub, l.sx, l.sy - 14);
      ctx.fillStyle = "#fca5a5";
      ctx.fillText(l.sub, l.sx, l.sy - 14);
    }
    ctx.globalAlpha = 1;
  }
}
