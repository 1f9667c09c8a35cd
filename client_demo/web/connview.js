// What the player sees and can do about the connection: the banner in player language
// ("Server restarting — reconnecting…"), the dialog after a permanent refusal (a name
// field for a refused name, a Rejoin button after a kick once its ban is over, a Reload
// for an out-of-date page), the Leave button, and Leave when the tab goes away.
// The decisions are status.js's `closeVerdict`; this module only shows them.

import { Banner } from "./hud.js";
import { bannerText } from "./status.js";
import { tw, now } from "./state.js";

export class ConnectionView {
  constructor(game) {
    this.game = game;
    this.banner = new Banner(document.getElementById("banner"));
    this.dialog = document.getElementById("dialog");
    this.dialogTitle = document.getElementById("dialog-title");
    this.dialogDetail = document.getElementById("dialog-detail");
    this.nameForm = document.getElementById("name-form");
    this.nameInput = document.getElementById("name-input");
    this.rejoinButton = document.getElementById("rejoin");
    this.reloadButton = document.getElementById("reload");
    this.leaveButton = document.getElementById("leave");
    this.verdict = null;
    this.retryAt = null;
    this.waitUntil = null;
    this.wasDropped = false;

    this.nameForm.addEventListener("submit", (e) => {
      e.preventDefault();
      const name = this.nameInput.value.trim();
      if (!name) return;
      tw.name = name;
      const url = new URL(location.href);
      url.searchParams.set("name", name);
      history.replaceState(null, "", url);
      this._rejoin(name);
    });
    this.rejoinButton.addEventListener("click", () => this._rejoin());
    this.reloadButton.addEventListener("click", () => location.reload());
    this.leaveButton.addEventListener("click", () => this.game.leave());
    // The tab closes or navigates away: leave, so the seat is freed now rather than after
    // the resume grace. pagehide fires where unload does not (mobile, bfcache).
    window.addEventListener("pagehide", () => {
      this.hiddenByPagehide = true;
      this.game.leave();
    });
    // Back from the back/forward cache: the seat was given up, so join again.
    window.addEventListener("pageshow", (e) => {
      if (e.persisted && this.hiddenByPagehide) this._rejoin();
      this.hiddenByPagehide = false;
    });
  }

  _rejoin(name) {
    this.dialog.hidden = true;
    this.verdict = null;
    tw.status = null;
    this.banner.show("Joining…", "warn");
    this.game.net.rejoin(name);
  }

  onWelcome() {
    this.leaveButton.hidden = false;
    this.dialog.hidden = true;
    tw.status = null;
    if (this.wasDropped) {
      tw.reconnects++;
      this.banner.show("Reconnected", "ok");
      this.banner.hideAfter(3000);
    } else {
      this.banner.hideAfter(0);
    }
    this.wasDropped = false;
    this.verdict = null;
  }

  onClose(info) {
    const v = info.verdict;
    tw.lastClose = { code: info.code, reason: info.reason, label: info.kick?.label || "" };
    tw.rttMs = null;
    tw.pingRttMs = null;
    this.verdict = v;
    tw.status = v ? { title: v.title, retry: v.retry, action: v.action, detail: v.detail } : null;
    this.retryAt = info.retryInS === null || info.retryInS === undefined ? null : now() + info.retryInS;
    if (!v) return;
    if (v.retry) {
      this.wasDropped = true;
      this.dialog.hidden = true;
      this.banner.show(bannerText(v, { nowS: now(), retryAt: this.retryAt }), v.kind);
      return;
    }
    this.wasDropped = false;
    this.leaveButton.hidden = true;
    this.banner.hideAfter(0);
    this.waitUntil = v.waitS > 0 ? now() + v.waitS : null;
    this._showDialog(v);
  }

  _showDialog(v) {
    this.dialogTitle.textContent = v.title;
    this.dialogDetail.textContent = v.detail || "";
    this.dialogDetail.hidden = !v.detail;
    this.nameForm.hidden = v.action !== "rename";
    this.rejoinButton.hidden = v.action !== "rejoin";
    this.reloadButton.hidden = v.action !== "reload";
    this.rejoinButton.textContent = v.title === "You left the game" ? "Play again" : "Rejoin";
    if (v.action === "rename") {
      // Prefill with the refused name minus what cannot be printed (a common cause).
      this.nameInput.value = tw.name.replace(/[\u0000-\u001f\u007f-\u009f]/g, "").trim();
      this.dialog.hidden = false;
      this.nameInput.focus();
      this.nameInput.select();
    }
    this.dialog.hidden = false;
    this.refresh(now());
  }

  /** Called every animation frame: countdowns in the banner and on the Rejoin button. */
  refresh(t) {
    const v = this.verdict;
    if (!v || tw.connected) return;
    if (v.retry) {
      this.banner.show(bannerText(v, { nowS: t, retryAt: this.retryAt,
                                       connecting: !!this.game.net.ws }), v.kind);
      return;
    }
    const text = bannerText(v, { nowS: t, waitUntil: this.waitUntil });
    if (this.dialogTitle.textContent !== text) this.dialogTitle.textContent = text;
    const waiting = this.waitUntil !== null && this.waitUntil > t;
    this.rejoinButton.disabled = waiting;
  }
}
