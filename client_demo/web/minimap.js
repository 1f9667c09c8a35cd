// The minimap: a corner map of a world bigger than the screen — its bounds, the part the
// camera shows, the area the server keeps us informed about (our interest), the entities
// we know of, and us.
//
// Theory of operation
// -------------------
// It is shown only when the world is much bigger than the view (MINIMAP_WORLD_VIEWS on
// either axis), so today's arena, which nearly fits, looks as before. It has its own small
// canvas (#minimap) and is redrawn at most REDRAW_HZ times a second: the map is ~160 px
// across, where a world unit is a fraction of a pixel, so smoother would not show.
// `minimapLayout` (pure) maps world units into the map, keeping the world's aspect.

import { KIND_PLAYER, KIND_NPC, EFLAG_DEAD } from "./codec.js";
import { playerColor } from "./events.js";

export const MINIMAP_WORLD_VIEWS = 1.5;
const REDRAW_HZ = 15;
const PAD = 4; // CSS px inside the map's edge

/** Whether a world {w, h} wants a minimap when the camera shows a `rect` {x0, y0, x1, y1}. */
export function wantsMinimap(world, rect) {
  return world.w > MINIMAP_WORLD_VIEWS * (rect.x1 - rect.x0)
    || world.h > MINIMAP_WORLD_VIEWS * (rect.y1 - rect.y0);
}

/** The map's transform for a `size` x `size` CSS px box: {k, ox, oy} (px = o + k * units). */
export function minimapLayout(world, size) {
  const k = (size - 2 * PAD) / Math.max(world.w, world.h);
  return { k, ox: (size - world.w * k) / 2, oy: (size - world.h * k) / 2 };
}

export class Minimap {
  constructor(canvas) {
    this.canvas = canvas;
    this.ctx = canvas ? canvas.getContext("2d") : null;
    this.shown = false;
    this.drawnAt = -Infinity;
    this.draws = 0;
    this.dots = 0;
  }

  /**
   * At local time `t`: show or hide for this world and camera rect, and redraw when due.
   * `m`: {world, rect, me {x, y} | null, entities, interest {radius} | null, playerIds}.
   */
  update(t, m) {
    if (!this.canvas) return;
    const want = wantsMinimap(m.world, m.rect);
    if (want !== this.shown) {
      this.shown = want;
      this.canvas.hidden = !want;
      document.body.classList.toggle("has-minimap", want);
      this.drawnAt = -Infinity;
    }
    if (!want || t - this.drawnAt < 1 / REDRAW_HZ) return;
    this.drawnAt = t;
    this._draw(m);
  }

  _draw(m) {
    const { canvas, ctx } = this;
    const dpr = window.devicePixelRatio || 1;
    const size = canvas.clientWidth || 160;
    const px = Math.max(1, Math.round(size * dpr));
    if (canvas.width !== px || canvas.height !== px) {
      canvas.width = px;
      canvas.height = px;
    }
    ctx.setTransform(dpr, 0, 0, dpr, 0, 0);
    ctx.clearRect(0, 0, size, size);
    const { k, ox, oy } = minimapLayout(m.world, size);
    const X = (x) => ox + x * k, Y = (y) => oy + y * k;
    ctx.fillStyle = "rgba(11, 15, 23, 0.85)";
    ctx.fillRect(X(0), Y(0), m.world.w * k, m.world.h * k);
    if (m.interest && m.interest.radius > 0 && m.me) {
      ctx.beginPath();
      ctx.arc(X(m.me.x), Y(m.me.y), m.interest.radius * k, 0, Math.PI * 2);
      ctx.fillStyle = "rgba(56, 217, 255, 0.10)";
      ctx.fill();
      ctx.strokeStyle = "rgba(56, 217, 255, 0.45)";
      ctx.lineWidth = 1;
      ctx.stroke();
    }
    let dots = 0;
    for (const e of m.entities) {
      if (e.kind !== KIND_NPC && e.kind !== KIND_PLAYER) continue;
      const dead = (e.flags & EFLAG_DEAD) !== 0;
      const pid = m.playerIds?.get(e.slot);
      ctx.fillStyle = dead ? "#5b6270" : e.kind === KIND_NPC ? "#f0a04b"
        : pid ? playerColor(pid) : "#dfe7f5";
      const r = e.kind === KIND_PLAYER ? 2 : 1;
      ctx.fillRect(X(e.x) - r / 2, Y(e.y) - r / 2, r, r);
      dots++;
    }
    const v = m.rect;
    ctx.strokeStyle = "rgba(223, 231, 245, 0.7)";
    ctx.lineWidth = 1;
    ctx.strokeRect(X(Math.max(0, v.x0)), Y(Math.max(0, v.y0)),
                   (Math.min(m.world.w, v.x1) - Math.max(0, v.x0)) * k,
                   (Math.min(m.world.h, v.y1) - Math.max(0, v.y0)) * k);
    ctx.strokeStyle = "rgba(120, 170, 255, 0.55)";
    ctx.strokeRect(X(0), Y(0), m.world.w * k, m.world.h * k);
    if (m.me) {
      ctx.beginPath();
      ctx.arc(X(m.me.x), Y(m.me.y), 3, 0, Math.PI * 2);
      ctx.fillStyle = "#38d9ff";
      ctx.fill();
    }
    this.draws++;
    this.dots = dots;
  }
}
