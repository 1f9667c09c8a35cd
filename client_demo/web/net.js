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
// Seats: before each Join, `seat()` (lobby.js: POST /matchmake) gives the socket URL with a
// single-use seat token, on whichever node runs the room; without a `seat` hook the plain
// `url` is used. A Resume goes back to the same node without a token. A Resume that cannot
// even open a socket RESUME_MISSES times in a row means the node is gone: the token is
// dropped and the next attempt matchmakes again (as the Python client does). A seat that
// cannot be had is either transient (503, 429, unreachable: the usual backoff, the banner
// saying why) or final (a full or vanished room: `onSeatError`, and the page offers what
// the player can do).

import { PROTOCOL_VERSION } from "./gen/wire.js";
import { closeVerdict } from "./status.js";

export { PROTOCOL_VERSION }; // the .proto's ProtocolVersion enum, via gen/wire.js
export const BACKOFF_MIN_S = 0.5;
export const BACKOFF_MAX_S = 8;
export const PING_INTERVAL_S = 1;
const PING_WAIT_MS = 100; // how long a due Ping waits for an input to follow
export const RESUME_MISSES = 2; // Resumes that never opened before we matchmake again

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
   *   onFrame(kind, msg, bytes), onOpen(), onWelcome(welcome), onClose(info), onRetry(info);
   *   seat() -> Promise<url> (may be set later; throws an error with {retry, verdict}),
   *   onSeatError(err) (a refusal retrying will not cure; Net has stopped)
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
    this.pingDue = false; // the ping timer asks; the next input carries it out
    this.stopped = false;
    this.pendingConnect = null; // a connect waiting for its seat
    this.nodeUrl = null; // the /ws of the node that runs our seat, without a token
    this.resumeMisses = 0;
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
    if (this.resumeToken && this.nodeUrl) {
      this._open(this.nodeUrl);
      return;
    }
    if (!this.seat) {
      this._open(this.url);
      return;
    }
    const attempt = {};
    this.pendingConnect = attempt;
    this.seat().then((url) => {
      // stop() or a newer attempt while we were asking for a seat: drop this one.
      if (this.pendingConnect !== attempt || this.stopped) return;
      this.pendingConnect = null;
      const node = new URL(url);
      node.search = ""; // the seat token is single-use; a Resume needs none
      this.nodeUrl = node.toString();
      this.resumeMisses = 0;
      this._open(url);
    }, (err) => {
      if (this.pendingConnect !== attempt || this.stopped) return;
      this.pendingConnect = null;
      this._seatFailed(err);
    });
  }

  _seatFailed(err) {
    if (!err.retry) {
      this.stopped = true;
      this.resumeToken = null;
      this.onSeatError?.(err);
      return;
    }
    // The server unreachable right after it closed on us (a restart): keep saying why it
    // went rather than "cannot reach".
    const verdict = err.status === 0 && this.lastVerdict?.retry ? this.lastVerdict : err.verdict;
    this.lastVerdict = verdict;
    this._retryLater({ code: 0, reason: err.message, wasClean: false, wasWelcomed: false,
                       kick: null, verdict, seatError: err.code || "unreachable" });
  }

  _retryLater(info) {
    const base = Math.min(BACKOFF_MAX_S, BACKOFF_MIN_S * 2 ** this.attempt);
    const delay = Math.max(info.verdict.retryAfterS, base * (0.75 + 0.5 * Math.random()));
    this.attempt++;
    this.onClose?.({ ...info, retryInS: delay, attempt: this.attempt });
    this.retryAt = performance.now() / 1000 + delay;
    this.retryTimer = setTimeout(() => this._connect(), delay * 1000);
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
        this.resumeMisses = 0;
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
      if (!opened && this.resumeToken && this.seat && ++this.resumeMisses >= RESUME_MISSES) {
        // Our node cannot be reached: its rooms are gone with it. Matchmake again.
        this.resumeToken = null;
        this.nodeUrl = null;
        info.nodeGone = true;
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
      this._retryLater(info);
    };
  }

  _startPing() {
    clearInterval(this.pingTimer);
    // A due Ping goes right after the next input (see send), or on its own when no input
    // comes within PING_WAIT_MS: a server reading at the tick times a read by its newest
    // bytes, so a Ping followed by an input in the same read would come out too long.
    const due = () => {
      this.pingDue = true;
      setTimeout(() => { if (this.pingDue) this._ping(); }, PING_WAIT_MS);
    };
    due();
    this.pingTimer = setInterval(due, PING_INTERVAL_S * 1000);
  }

  _ping() {
    this.pingDue = false;
    this.send({ ping: { clientTime: performance.now() / 1000 } });
  }

  /** Send one ClientFrame given as a plain object, e.g. {input: {...}}. */
  send(obj) {
    const ws = this.ws;
    if (!ws || ws.readyState !== WebSocket.OPEN) return false;
    const T = this.types.ClientFrame;
    ws.send(T.encode(T.fromObject(obj)).finish());
    if (this.pingDue && obj.input) this._ping();
    return true;
  }

  get open() {
    return !!this.ws && this.ws.readyState === WebSocket.OPEN;
  }
}
