// What a closed connection means for the player: retry or stop, and what to say.
//
// Theory of operation
// -------------------
// `closeVerdict` is a pure function of what the client saw: the close event's code and
// reason, the Kick frame that came before it (if any), and whether the socket was ever
// welcomed. A Kick from a current server carries `label` (a program's name for the cause,
// the server's metric label) and `retry`: retry=false is a permanent refusal, so the
// client stops and says why; retry=true is a transient drop, retried with backoff, no
// sooner than `retryAfterS`. A Kick with no label (an older server) is classified by its
// close code and reason text instead. Browsers report a socket that died without a close
// frame as 1006; a drain's Kick (1001) that arrived first still wins over that 1006.
//
// The verdict: {
//   retry: bool              reconnect automatically (Net applies backoff)
//   retryAfterS: number      at least this long before the next attempt (0: backoff only)
//   action: null | "rename" | "rejoin" | "reload"   what the player can do when retry is false
//   waitS: number            with action "rejoin": how long the button stays disabled (a ban)
//   title: string            player language, e.g. "Server restarting — reconnecting…"
//   detail: string           the server's own words, when they help ("" otherwise)
//   kind: "error" | "warn" | "ok"  banner style
// }

export const CLOSE_NORMAL = 1000;
export const CLOSE_GOING_AWAY = 1001;
export const CLOSE_ABNORMAL = 1006; // set by the browser: no close frame was received
export const CLOSE_POLICY = 1008;

/** Labels the client acts on (the server's refusal labels; see proto/README.md "Kick"). */
export const LABEL = {
  badJoin: "bad_join", // the name was refused: ask for another
  badVersion: "bad_version", // this page is older or newer than the server
  kicked: "kicked", // removed by an admin; retry_after_s is the ban
  banned: "banned", // a Join during a ban; retry_after_s is what is left of it
  roomClosed: "room_closed",
  replaced: "replaced", // the same player resumed from another tab or device
  left: "left", // our own Leave
  draining: "draining",
  serverFull: "server_full",
  badResume: "bad_resume", // the resume token is unknown or expired: join afresh at once
};

const verdict = (v) => ({ retry: true, retryAfterS: 0, action: null, waitS: 0, detail: "",
                          kind: "error", ...v });

/**
 * @param {{code: number, reason?: string, kick?: {code, reason, label, retry, retryAfterS}|null,
 *          wasWelcomed?: boolean, stopped?: boolean}} c
 */
export function closeVerdict(c) {
  const kick = c.kick || null;
  const reason = (kick && kick.reason) || c.reason || "";
  if (c.stopped) return verdict({ retry: false, action: "rejoin", title: "You left the game",
                                  kind: "warn" });
  if (kick && kick.label) return byLabel(kick, reason);
  return byCode(kick ? kick.code : c.code, reason);
}

function byLabel(kick, reason) {
  const after = kick.retryAfterS || 0;
  switch (kick.label) {
    case LABEL.badJoin:
      return verdict({ retry: false, action: "rename", title: "That name was refused — choose another",
                       detail: reason });
    case LABEL.badVersion:
      return verdict({ retry: false, action: "reload", detail: reason,
                       title: "This page is out of date for this server — reload it" });
    case LABEL.kicked:
    case LABEL.banned:
      return verdict({ retry: false, action: "rejoin", waitS: after, detail: "",
                       title: kick.label === LABEL.kicked ? "You were removed by an admin"
                                                           : "You are kept out for a while by an admin" });
    case LABEL.roomClosed:
      return verdict({ retry: false, action: "rejoin", title: "Room closed", kind: "warn" });
    case LABEL.replaced:
      return verdict({ retry: false, action: "rejoin", kind: "warn",
                       title: "You are playing in another tab or window" });
    case LABEL.left:
      return verdict({ retry: false, action: "rejoin", title: "You left the game", kind: "warn" });
    case LABEL.draining:
      return verdict({ title: "Server restarting — reconnecting…", retryAfterS: after, kind: "warn" });
    case LABEL.badResume:
      // Whatever `retry` says: the seat is gone, but a fresh Join is welcome (Net does it).
      return verdict({ title: "Connection lost — reconnecting…" });
    case LABEL.serverFull:
      return verdict({ title: "Server full — trying again…", retryAfterS: after, kind: "warn" });
    default:
      if (kick.retry) return verdict({ title: "Connection lost — reconnecting…", retryAfterS: after });
      return verdict({ retry: false, action: "rejoin", title: "The server refused this connection",
                       detail: reason });
  }
}

// An older server: no label, so read the close code and the reason text.
function byCode(code, reason) {
  const r = reason.toLowerCase();
  if (code === CLOSE_GOING_AWAY) return verdict({ title: "Server restarting — reconnecting…", kind: "warn" });
  if (code === CLOSE_NORMAL && r === "left") return byLabel({ label: LABEL.left }, reason);
  if (code === CLOSE_POLICY) {
    if (r.startsWith("name")) return byLabel({ label: LABEL.badJoin }, reason);
    if (r.startsWith("protocol version")) return byLabel({ label: LABEL.badVersion }, reason);
    if (r.includes("kicked")) {
      const m = /try again in (\d+) s/.exec(r); // a Join during a ban
      return byLabel({ label: m ? LABEL.banned : LABEL.kicked, retryAfterS: m ? Number(m[1]) : 0 }, reason);
    }
    if (r.includes("room closed")) return byLabel({ label: LABEL.roomClosed }, reason);
    if (r.startsWith("replaced")) return byLabel({ label: LABEL.replaced }, reason);
    if (r === "server full" || r.includes("room full")) return byLabel({ label: LABEL.serverFull }, reason);
  }
  return verdict({ title: "Connection lost — reconnecting…" });
}

/** The banner line for a verdict at local time `nowS`, given when a retry or a wait ends. */
export function bannerText(v, { nowS = 0, retryAt = null, waitUntil = null, connecting = false } = {}) {
  if (v.retry) {
    if (connecting || retryAt === null) return v.title;
    const left = Math.max(0, retryAt - nowS);
    return left >= 1 ? `${v.title.replace(/…$/, "")} in ${Math.ceil(left)} s…` : v.title;
  }
  if (v.action === "rejoin" && waitUntil !== null && waitUntil > nowS) {
    return `${v.title} — you can rejoin in ${Math.ceil(waitUntil - nowS)} s`;
  }
  return v.title;
}
