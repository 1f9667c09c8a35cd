// The start screen and matchmaking: quick play, private rooms, join by link.
//
// Theory of operation
// -------------------
// Where the player wants to play is an *intent*: {mode} (quick play), {create, mode} (a new
// private room) or {room} (a friend's room, from a `?room=ID` link). Before every Join,
// net.js calls `seat()`, which asks POST /matchmake (on the page's own server: any node of
// a fleet answers) for a seat that fits the intent, and connects to the answer's `url`:
// the node that runs the room, with a single-use seat token. A Resume goes back to that
// node without a token; when it cannot reach it (the node is gone), net.js asks `seat()`
// again. Once a private room exists the intent becomes {room: ID}, so a reconnect, a
// Rejoin or a reload lands in the same room, and the page shows the link to share.
//
// Opened bare, the page shows the start screen (name, a mode picker when the server
// offers several modes from GET /modes, Quick play, Create private room). `?room=ID` joins
// that room at once; `?name=X` (a link that names the player, as tests and probes use)
// quick-plays at once, in `?mode=M` if given.
//
// Refusals are in player language (`matchVerdict`): a full room offers Try again and Quick
// play; a room that is gone or closing offers Quick play and Create; a fleet that is
// unavailable (503), busy (429) or unreachable is transient: net.js retries with backoff
// (never sooner than the answer's Retry-After) and the banner counts down, with the same request_id, so a lost answer never costs a
// second seat.

import { tw } from "./state.js";

/** Matchmaking refused or failed: `status` 0 means the server could not be reached. */
export class MatchError extends Error {
  constructor(status, code, message, retryAfterS = 0) {
    super(message || code);
    this.status = status;
    this.code = code;
    this.verdict = matchVerdict(status, code, message, retryAfterS);
    this.retry = this.verdict.retry;
  }
}

/** A Retry-After header's delay in seconds (the delay-seconds form; 0 when absent). */
export function retryAfterSeconds(value) {
  const text = (value ?? "").trim();
  return /^\d+$/.test(text) ? Number(text) : 0;
}

const verdict = (v) => ({ retry: false, retryAfterS: 0, action: null, waitS: 0, detail: "",
                          kind: "error", actions: [], ...v });

/**
 * What a matchmaking answer means for the player: retry on our own (transient), or stop
 * and offer `actions` ("retry" the same intent, "quick" play, "create" a private room).
 * The same shape as status.js's closeVerdict, so the banner shows transient ones.
 */
export function matchVerdict(status, code, message = "", retryAfterS = 0) {
  if (status === 0) return verdict({ retry: true, title: "Cannot reach the server — retrying…" });
  // Transient: net.js waits at least what the server asked (Retry-After) before retrying.
  if (status === 503 && code === "fleet_full") {
    return verdict({ retry: true, retryAfterS, kind: "warn",
                     title: "All servers are full — retrying…" });
  }
  if (status === 503 && code === "registry_unavailable") {
    return verdict({ retry: true, retryAfterS,
                     title: "Matchmaking is unavailable right now — retrying…" });
  }
  if (status >= 500 || status === 429) {
    return verdict({ retry: true, retryAfterS, kind: "warn", title: "Server busy — retrying…" });
  }
  switch (code) {
    case "room_full":
      return verdict({ title: "This room is full", actions: ["retry", "quick"],
                       detail: "Try again in a moment, or play in another room." });
    case "no_such_room":
      return verdict({ title: "This room no longer exists", actions: ["quick", "create"],
                       detail: "It ends when everyone has left. Start another one?" });
    case "room_closing":
      return verdict({ title: "This room is closing", actions: ["quick", "create"],
                       detail: "Its server is shutting down." });
    case "unknown_mode":
      return verdict({ title: "That game mode is not available", actions: ["quick"] });
    case "bad_request":
      return verdict({ title: "That link is not valid", actions: ["quick", "create"],
                       detail: message });
    default:
      return verdict({ title: "Matchmaking refused", actions: ["retry", "quick"],
                       detail: message });
  }
}

function requestId() {
  const bytes = new Uint8Array(8);
  crypto.getRandomValues(bytes);
  return Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");
}

export class Lobby {
  /** @param {object} game the Game (its `net`, `conn` and `start()` are used) */
  constructor(game) {
    this.game = game;
    this.started = false; // game.start() ran (the first play)
    this.intent = null;
    this.requestId = null; // kept across retries of one request, dropped once answered
    this.defaultMode = null;
    const $ = (id) => document.getElementById(id);
    this.box = $("start");
    this.error = $("start-error");
    this.errorTitle = $("start-error-title");
    this.errorDetail = $("start-error-detail");
    this.nameInput = $("start-name");
    this.modePick = $("mode-pick");
    this.modeSelect = $("mode-select");
    this.quickButton = $("quick-play");
    this.createButton = $("create-room");
    this.retryButton = $("try-again");
    this.share = $("share");
    this.shareLink = $("share-link");
    this.copyButton = $("share-copy");
    tw.lobby = { screen: "start", intent: null, room: null, node: null, mode: null,
                 private: false, link: null, error: null, modes: [], copied: false };

    $("start-form").addEventListener("submit", (e) => {
      e.preventDefault();
      this.quickPlay();
    });
    this.createButton.addEventListener("click", () => this.play({ create: true, mode: this._mode() }));
    this.retryButton.addEventListener("click", () => this.play(this.intent));
    this.copyButton.addEventListener("click", () => this.copyLink());
  }

  /** Decide from the URL: join a room, quick-play at once, or show the start screen. */
  start() {
    const q = new URLSearchParams(location.search);
    const room = (q.get("room") || "").trim();
    const mode = (q.get("mode") || "").trim() || undefined;
    this._loadModes(mode);
    if (room) this.play({ room });
    else if (q.has("name") || mode) this.play({ mode });
    else this.showStart(null);
  }

  quickPlay() {
    this._setRoomInUrl(null);
    this.play({ mode: this._mode() });
  }

  /** Start playing where `intent` says (the first time, this starts the game). */
  play(intent) {
    const name = this.nameInput.value.trim();
    if (name && name !== tw.name) {
      tw.name = name.slice(0, 24);
      try { localStorage.setItem("tickwire.name", tw.name); } catch { /* private mode */ }
    }
    this.intent = { ...intent };
    this.requestId = null;
    this.box.hidden = true;
    this.share.hidden = true;
    Object.assign(tw.lobby, { screen: "joining", intent: this.intent, error: null });
    this.game.conn.banner.show("Joining…", "warn");
    if (!this.started) {
      this.started = true;
      this.game.net.name = tw.name;
      this.game.start();
    } else {
      this.game.net.rejoin(tw.name);
    }
  }

  /** net.js's hook before each Join: the socket URL (with its seat token) for the intent. */
  async seat() {
    const body = { request_id: (this.requestId ||= requestId()) };
    const intent = this.intent || {};
    if (intent.room) body.room = intent.room;
    else if (intent.mode) body.mode = intent.mode;
    if (intent.create) body.create = true;
    let resp, answer;
    try {
      resp = await fetch("/matchmake", { method: "POST", body: JSON.stringify(body),
                                         headers: { "Content-Type": "application/json" } });
      answer = await resp.json().catch(() => ({}));
    } catch (err) {
      throw new MatchError(0, "unreachable", String(err?.message || err));
    }
    if (!resp.ok) {
      throw new MatchError(resp.status, answer.error || "", answer.message || "",
                           retryAfterSeconds(resp.headers.get("Retry-After")));
    }
    this.requestId = null;
    this._seated(answer);
    return answer.url;
  }

  _seated(answer) {
    Object.assign(tw.lobby, { screen: "playing", room: answer.room, node: answer.node,
                              mode: answer.mode, private: !!answer.private, error: null });
    if (answer.private) {
      // From now on this room, whatever happens: reconnects and reloads come back here.
      this.intent = { room: answer.room };
      tw.lobby.intent = this.intent;
      this._setRoomInUrl(answer.room);
      const link = new URL("/", location.href);
      link.searchParams.set("room", answer.room);
      tw.lobby.link = link.toString();
      this.shareLink.value = tw.lobby.link;
      this.share.hidden = false;
    } else {
      tw.lobby.link = null;
      this.share.hidden = true;
    }
  }

  /** net.js's hook for a refusal that retrying will not cure: back to the start screen. */
  onSeatError(err) {
    this.requestId = null;
    this.game.conn.banner.hideAfter(0);
    this.game.conn.leaveButton.hidden = true; // nothing to leave until the next seat
    if (err.code === "unknown_mode") this.modeSelect.value = this.defaultMode || "";
    this.showStart(err);
  }

  showStart(err) {
    const v = err ? err.verdict : null;
    this.share.hidden = true;
    this.error.hidden = !v;
    this.errorTitle.textContent = v ? v.title : "";
    this.errorDetail.textContent = v ? v.detail : "";
    this.retryButton.hidden = !(v && v.actions.includes("retry"));
    // Quick play and Create stay offered; with an error they say what the player can do.
    this.nameInput.value = tw.name;
    Object.assign(tw.lobby, { screen: "start", error: v ? { code: err.code, status: err.status,
                                                            title: v.title } : null });
    this.box.hidden = false;
    (v && v.actions[0] === "retry" ? this.retryButton : this.quickButton).focus();
  }

  async copyLink() {
    const link = this.shareLink.value;
    try {
      await navigator.clipboard.writeText(link);
    } catch {
      // No clipboard permission (an http:// page, an old browser): select it for Ctrl-C.
      this.shareLink.select();
    }
    tw.lobby.copied = true;
    this.copyButton.textContent = "Copied";
    setTimeout(() => { this.copyButton.textContent = "Copy link"; }, 2000);
  }

  _mode() {
    return this.modePick.hidden ? undefined : this.modeSelect.value || undefined;
  }

  _setRoomInUrl(room) {
    const url = new URL(location.href);
    if (room) url.searchParams.set("room", room);
    else url.searchParams.delete("room");
    history.replaceState(null, "", url);
  }

  async _loadModes(wanted) {
    let offered;
    try {
      const resp = await fetch("/modes");
      if (!resp.ok) return; // an older server: no picker, the server's default mode
      offered = await resp.json();
    } catch {
      return;
    }
    const modes = Array.isArray(offered.modes) ? offered.modes : [];
    this.defaultMode = offered.default || null;
    tw.lobby.modes = modes.map((m) => m.mode);
    this.modeSelect.replaceChildren(...modes.map((m) => {
      const opt = document.createElement("option");
      opt.value = m.mode;
      opt.textContent = `${m.mode} (up to ${m.capacity} players)`;
      return opt;
    }));
    this.modeSelect.value = tw.lobby.modes.includes(wanted) ? wanted : this.defaultMode || "";
    this.modePick.hidden = modes.length < 2;
  }
}
