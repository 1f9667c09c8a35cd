// DOM overlays: the net HUD (toggled with H or F3), the scoreboard, the connection banner.

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

  /** `s` holds the numbers shown; see main.js `hudStats`. */
  update(s) {
    if (!this.visible) return;
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
      ["entities", `${s.entities}`],
    ];
    this.el.innerHTML =
      `<div class="hud-title">net <span class="hud-key">H / F3</span></div>` +
      rows.map(([k, v]) => `<div class="row"><span>${k}</span><b>${v}</b></div>`).join("");
  }
}

export class Scoreboard {
  constructor(el) {
    this.el = el;
  }

  /** rows: [{name, score, me, connected, dead}] */
  update(rows) {
    rows = [...rows].sort((a, b) => b.score - a.score || a.name.localeCompare(b.name));
    const esc = (t) => t.replace(/[&<>"]/g, (c) => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;" })[c]);
    this.el.innerHTML =
      `<div class="sb-title">Scoreboard</div>` +
      rows
        .map(
          (r) =>
            `<div class="sb-row${r.me ? " me" : ""}${r.connected ? "" : " away"}${r.dead ? " dead" : ""}">` +
            `<span class="sb-name">${esc(r.name)}</span><span class="sb-score">${r.score}</span></div>`,
        )
        .join("");
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
