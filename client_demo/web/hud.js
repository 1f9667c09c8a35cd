// DOM overlays: the net HUD (toggled with H or F3), the scoreboard, the kill feed, the
// connection banner. Server data (player names) is only ever inserted as text.

import { playerColor } from "./events.js";

/** Counts events over a sliding one-second window (snapshots/s, bytes/s, fps). */
export class RateMeter {
  constructor(windowS = 1) {
    this.windowS = windowS;
    this.events = []; // [timeS, amount]
  }
  add(nowS, amount = 1) {
    this.events.push([nowS, amount]);
  }
  rate(nowS) {
    const from = nowS - this.windowS;
    while (this.events.length && this.events[0][0] < from) this.events.shift();
    let sum = 0;
    for (const [, a] of this.events) sum += a;
    return sum / this.windowS;
  }
}

const fmt = (v, digits = 0) => (v === null || v === undefined || Number.isNaN(v) ? "–" : v.toFixed(digits));

export class Hud {
  constructor(el) {
    this.el = el;
    this.visible = true;
    this.el.hidden = false;
  }

  toggle() {
    this.visible = !this.visible;
    this.el.hidden = !this.visible;
  }

  /** `s` holds the numbers shown (see game.js `hudStats`); null: disconnected, all blank. */
  update(s) {
    if (!this.visible) return;
    if (!s) {
      this.el.innerHTML = `<div class="hud-title">net <span class="hud-key">H / F3</span></div>` +
        HUD_LABELS.map((k) => `<div class="row"><span>${k}</span><b>–</b></div>`).join("");
      return;
    }
    const rows = [
      ["RTT (server)", s.serverRttMs === null ? "–" : `${fmt(s.serverRttMs)} ms`],
      ["RTT (ping)", s.pingRttMs === null ? "–" : `${fmt(s.pingRttMs)} ms`],
      ["server tick", `${s.serverTick}`],
      ["tick rate", `${s.tickRate} Hz`],
      ["snapshots/s", fmt(s.snapshotsPerS)],
      ["in", `${fmt(s.kbPerS, 1)} kB/s`],
      ["last snapshot", `${s.lastSnapshotBytes} B`],
      ["key / delta", `${s.keyframes} / ${s.deltas}`],
      ["interp delay", `${fmt(s.interpDelayMs)} ms`],
      ["correction", `${fmt(s.lastCorrection, 2)} u (${s.corrections})`],
      ["pending inputs", `${s.pendingInputs}`],
      ["fps", fmt(s.fps)],
      ["players", `${s.players}`],
      // With interest management: what we know of (in view) / what the room holds.
      ["entities", s.worldEntities === null || s.worldEntities === undefined
        ? `${s.entities}` : `${s.entities} / ${s.worldEntities}`],
    ];
    this.el.innerHTML =
      `<div class="hud-title">net <span class="hud-key">H / F3</span></div>` +
      rows.map(([k, v]) => `<div class="row"><span>${k}</span><b>${v}</b></div>`).join("");
  }
}

const HUD_LABELS = ["RTT (server)", "RTT (ping)", "server tick", "tick rate", "snapshots/s", "in",
  "last snapshot", "key / delta", "interp delay", "correction", "pending inputs", "fps",
  "players", "entities"];

export const esc = (t) => String(t).replace(/[&<>"]/g, (c) => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;" })[c]);

/**
 * The rows a scoreboard shows, best first. `compact` (small screens): the top three and,
 * if not among them, our own row with its rank.
 */
export function scoreboardRows(rows, compact) {
  const sorted = [...rows].sort((a, b) => b.score - a.score || a.name.localeCompare(b.name)
                                || a.playerId - b.playerId);
  const ranked = sorted.map((r, i) => ({ ...r, rank: i + 1 }));
  if (!compact) return ranked;
  const top = ranked.slice(0, 3);
  const me = ranked.find((r) => r.me);
  if (me && me.rank > 3) top.push(me);
  return top;
}

export class Scoreboard {
  constructor(el) {
    this.el = el;
    this.compact = false;
  }

  /** rows: [{playerId, name, score, me, connected, dead}] */
  update(rows) {
    const shown = scoreboardRows(rows, this.compact);
    const more = rows.length - shown.length;
    this.el.classList.toggle("compact", this.compact);
    this.el.innerHTML =
      (this.compact ? "" : `<div class="sb-title">Scoreboard</div>`) +
      shown
        .map(
          (r) =>
            `<div class="sb-row${r.me ? " me" : ""}${r.connected ? "" : " away"}${r.dead ? " dead" : ""}">` +
            `<span class="sb-rank">${r.rank}</span>` +
            `<span class="sb-name" style="--pc: ${r.me ? "var(--me)" : playerColor(r.playerId)}">${esc(r.name)}</span>` +
            `<span class="sb-score">${r.score}</span></div>`,
        )
        .join("") +
      (this.compact && more > 0 ? `<div class="sb-more">+${more}</div>` : "");
  }
}

export const FEED_KEEP_S = 6;
export const FEED_MAX = 4;

/** "alice ✕ bob" lines, newest last; each fades after FEED_KEEP_S. */
export class KillFeed {
  constructor(el) {
    this.el = el;
    this.entries = []; // {at, killer: {name, playerId} | null, victim: {name, playerId|null}, mine}
  }

  add(entry) {
    this.entries.push(entry);
    if (this.entries.length > FEED_MAX) this.entries.shift();
  }

  /** Drop old lines and redraw; returns what is shown (for window.tickwire). */
  update(nowS) {
    this.entries = this.entries.filter((e) => nowS - e.at < FEED_KEEP_S);
    const who = (p) => p.playerId === null ? `<span class="kf-npc">${esc(p.name)}</span>`
      : `<span style="color: ${p.me ? "var(--me)" : playerColor(p.playerId)}">${esc(p.name)}</span>`;
    this.el.innerHTML = this.entries
      .map((e) => `<div class="kf-row${e.mine ? " mine" : ""}">${e.killer ? who(e.killer) + " " : ""}` +
                  `<span class="kf-x">✕</span> ${who(e.victim)}</div>`)
      .join("");
    this.el.hidden = this.entries.length === 0;
    return this.entries.map((e) => `${e.killer ? `${e.killer.name} ` : ""}✕ ${e.victim.name}`);
  }
}

export class Banner {
  constructor(el) {
    this.el = el;
    this.hideTimer = null;
  }
  show(text, kind = "error") {
    clearTimeout(this.hideTimer);
    this.el.textContent = text;
    this.el.className = `banner ${kind}`;
    this.el.hidden = false;
  }
  hideAfter(ms) {
    clearTimeout(this.hideTimer);
    this.hideTimer = setTimeout(() => (this.el.hidden = true), ms);
  }
  get text() {
    return this.el.hidden ? "" : this.el.textContent;
  }
}
