// The WebSocket connection: protobuf frames in and out, join/resume, ping, reconnect.
//
// Theory of operation
// -------------------
// `Net` owns one WebSocket at a time. On open it sends Join (or Resume with the token of
// the last Welcome). Every binary message is decoded as a ServerFrame and handed to
// `onFrame`. A Ping goes out every second once we are welcomed (Pong gives the client's
// own RTT). When the socket closes without us asking, status.js's `closeVerdict` reads the
// close code and the Kick that came before it: a permanent refusal (a refused name, a kick,
// a closed room) stops the client, and `onClose` says why; anything else schedules a new
// attempt with exponential backoff (0.5 s doubling to 8 s, with +-25 % jitter, and never
// sooner than the Kick's retry_after_s). A Resume refused by the server (close 1008 before
// any Welcome) drops the token and retries at once with a fresh Join. `leave()` sends
// Leave (the server frees the seat at once) and stops; `rejoin(name)` starts over.
//
// Join tokens: a server started with a join secret refuses `/ws` without `?token=...`.
// The first socket goes to the plain URL; if it is refused before it opens, every later
// connect first asks `POST /matchmake` for a fresh token (a 404 there means tokens are
// off, and the plain URL is used again). A default server is never asked, so a normal
// page load makes no failing request.

import { PROTOCOL_VERSION } from "./gen/wire.js";
import { closeVerdict } from "./status.js";

export { PROTOCOL_VERSION }; // the .proto's ProtocolVersion enum, via gen/wire.js
export const BACKOFF_MIN_S = 0.5;
export const BACKOFF_MAX_S = 8;
export const PING_INTERVAL_S = 1;

/** Load the message types from the JSON descriptor built by `npm run build`. */
export async function loadProto(url = "/gen/tickwire.json") {
  const resp = await fetch(url);
  if (!resp.ok) throw new Error(`cannot load ${url}: HTTP ${resp.status} (run make install)`);
  const root = globalThis.protobuf.Root.fromJSON(await resp.json());
  return {
    ClientFrame: root.lookupType("tickwire.ClientFrame"),
    ServerFrame: root.lookupType("tickwire.ServerFrame"),
  };
}

/** The name of the oneof field set in a decoded ServerFrame. */
export function frameKind(frame) {
  if (frame.kind) return frame.kind;
  for (const k of ["snapshot", "welcome", "pong", "roster", "params", "kick"]) if (frame[k]) return k;
  return null;
}

export class Net {
  /**
   * @param {object} opts url, name, types (from loadProto), and handlers:
   *   onFrame(kind, msg, bytes), onOpen(), onWelcome(welcome), onClose(info), onRetry(info)
   */
  constructor(opts) {
    Object.assign(this, opts);
    this.ws = null;
    this.welcomed = false;
    this.resumeToken = null;
    this.attempt = 0; // failed attempts since the last Welcome
    this.sentResume = false;
    this.retryTimer = null;
    this.pingTimer = null;
    this.stopped = false;
    this.pendingConnect = null; // a connect waiting for its /matchmake answer
    // "unknown" until a socket is refused before it opens, then "required" (ask
    // /matchmake before each connect) or "off" (it answered 404). Default servers are never
    // asked, so their pages see no 404.
    this.joinTokens = "unknown";
    this.bytesIn = 0;
    this.framesIn = 0;
  }

  start() {
    this.stopped = false;
    this._connect();
  }

  stop() {
    this.stopped = true;
    this.pendingConnect = null;
    clearTimeout(this.retryTimer);
    clearInterval(this.pingTimer);
    if (this.ws) this.ws.close(1000, "client closed");
  }

  /** Leave for good: Leave frees the seat at once (a plain drop keeps it for the grace). */
  leave() {
    const sent = this.welcomed && this.send({ leave: {} });
    this.resumeToken = null;
    this.stop();
    return sent;
  }

  /** Start over as a new player (after a refusal, a kick or a leave), optionally renamed. */
  rejoin(name) {
    if (name !== undefined) this.name = name;
    clearTimeout(this.retryTimer);
    this.resumeToken = null;
    this.attempt = 0;
    this.start();
  }

  _connect() {
    clearTimeout(this.retryTimer);
    this.retryTimer = null;
    if (this.joinTokens !== "required") {
      this._open(this.url);
      return;
    }
    const attempt = {};
    this.pendingConnect = attempt;
    this._tokenUrl().then((url) => {
      // stop() or a newer attempt while we were asking for a token: drop this one.
      if (this.pendingConnect !== attempt || this.stopped) return;
      this.pendingConnect = null;
      this._open(url);
    });
  }

  /**
   * The socket URL with a fresh join token from POST /matchmake (a server started with a
   * join secret wants one per connection). 404 means the server has tokens off: use the
   * plain URL from now on. Any other answer or a network error also gives the plain URL
   * (that socket then fails or not, and the usual backoff applies).
   */
  async _tokenUrl() {
    const wsUrl = new URL(this.url);
    const httpUrl = new URL("/matchmake", wsUrl);
    httpUrl.protocol = wsUrl.protocol === "wss:" ? "https:" : "http:";
    try {
      const resp = await fetch(httpUrl, { method: "POST" });
      if (resp.status === 404) {
        this.joinTokens = "off";
      } else if (resp.ok) {
        const { token } = await resp.json();
        if (token) wsUrl.searchParams.set("token", token);
      }
    } catch (err) {
      console.warn("tickwire: /matchmake unreachable", err);
    }
    return wsUrl.toString();
  }

  _open(url) {
    const ws = new WebSocket(url);
    ws.binaryType = "arraybuffer";
    this.ws = ws;
    this.welcomed = false;
    this.kick = null; // the Kick received on this socket, if any
    let opened = false;
    ws.onopen = () => {
      opened = true;
      if (this.resumeToken) {
        this.sentResume = true;
        this.send({ resume: { protocolVersion: PROTOCOL_VERSION, token: this.resumeToken } });
      } else {
        this.sentResume = false;
        this.send({ join: { protocolVersion: PROTOCOL_VERSION, name: this.name } });
      }
      this.onOpen?.();
    };
    ws.onmessage = (ev) => {
      if (ws !== this.ws || !(ev.data instanceof ArrayBuffer)) return;
      const bytes = new Uint8Array(ev.data);
      this.bytesIn += bytes.length;
      this.framesIn++;
      let frame;
      try {
        frame = this.types.ServerFrame.decode(bytes);
      } catch (err) {
        console.warn("tickwire: undecodable server frame", err);
        return;
      }
      const kind = frameKind(frame);
      if (kind === "welcome") {
        this.welcomed = true;
        this.attempt = 0;
        this.lastVerdict = null;
        const tok = frame.welcome.resumeToken;
        this.resumeToken = tok && tok.length ? tok : null;
        this._startPing();
        this.onWelcome?.(frame.welcome);
      }
      if (kind === "kick") {
        const k = frame.kick;
        this.kick = { code: k.code, reason: k.reason || "", label: k.label || "", retry: !!k.retry,
                      retryAfterS: k.retryAfterS || 0 };
      }
      if (kind) this.onFrame?.(kind, frame[kind], bytes.length);
    };
    ws.onclose = (ev) => {
      if (ws !== this.ws) return;
      clearInterval(this.pingTimer);
      const wasWelcomed = this.welcomed;
      this.welcomed = false;
      this.ws = null;
      const info = { code: ev.code, reason: ev.reason || "", wasClean: ev.wasClean, wasWelcomed,
                     kick: this.kick };
      if (this.stopped) {
        this.onClose?.({ ...info, retryInS: null, verdict: closeVerdict({ ...info, stopped: true }) });
        return;
      }
      if (!opened && this.joinTokens === "unknown") {
        // Refused before the upgrade (the browser does not say why): perhaps this server
        // wants a join token. Ask /matchmake for one and retry at once, once.
        this.joinTokens = "required";
        this.onClose?.({ ...info, retryInS: 0, verdict: closeVerdict(info) });
        this._connect();
        return;
      }
      // A reconnect attempt that never opened says nothing new: while a server restarts,
      // the player keeps seeing why the connection went, not "connection lost".
      const verdict = !opened && this.lastVerdict?.retry ? this.lastVerdict : closeVerdict(info);
      this.lastVerdict = verdict;
      info.verdict = verdict;
      if (this.sentResume && !wasWelcomed && ev.code === 1008 && verdict.retry) {
        // Token refused (expired, or a new server): start over with a fresh Join.
        this.resumeToken = null;
        info.resumeRefused = true;
        this.onClose?.({ ...info, retryInS: 0 });
        this._connect();
        return;
      }
      if (!verdict.retry) {
        // Permanent: retrying would be refused again. The page offers what the player can do.
        this.stopped = true;
        this.resumeToken = null;
        this.onClose?.({ ...info, retryInS: null });
        return;
      }
      const base = Math.min(BACKOFF_MAX_S, BACKOFF_MIN_S * 2 ** this.attempt);
      const delay = Math.max(verdict.retryAfterS, base * (0.75 + 0.5 * Math.random()));
      this.attempt++;
      this.onClose?.({ ...info, retryInS: delay, attempt: this.attempt });
      this.retryAt = performance.now() / 1000 + delay;
      this.retryTimer = setTimeout(() => this._connect(), delay * 1000);
    };
  }

  _startPing() {
    clearInterval(this.pingTimer);
    const ping = () => this.send({ ping: { clientTime: performance.now() / 1000 } });
    ping();
    this.pingTimer = setInterval(ping, PING_INTERVAL_S * 1000);
  }

  /** Send one ClientFrame given as a plain object, e.g. {input: {...}}. */
  send(obj) {
    const ws = this.ws;
    if (!ws || ws.readyState !== WebSocket.OPEN) return false;
    const T = this.types.ClientFrame;
    ws.send(T.encode(T.fromObject(obj)).finish());
    return true;
  }

  get open() {
    return !!this.ws && this.ws.readyState === WebSocket.OPEN;
  }
}
