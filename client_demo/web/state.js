// `window.tickwire`: the state the page publishes for tests, probes and power users. Every
// part of the client writes its own fields here; nothing reads them back for its logic.

export const now = () => performance.now() / 1000;

function pickName() {
  const q = new URLSearchParams(location.search).get("name");
  let saved = null; // the name typed on the start screen last time (lobby.js)
  try { saved = localStorage.getItem("tickwire.name"); } catch { /* storage blocked */ }
  const fallback = `player-${1000 + Math.floor(Math.random() * 9000)}`;
  const name = (q ?? saved ?? "").trim().slice(0, 24).trim();
  return name || fallback;
}

export const tw = {
  connected: false,
  playerId: null,
  entity: null,
  name: pickName(),
  serverTick: 0,
  rttMs: null, // the server's measure (Snapshot.rtt_ms)
  pingRttMs: null, // ours, from Ping/Pong
  entityCount: 0,
  me: null, // {x, y}: predicted / rendered own position
  server: null, // {x, y}: own position in the newest authoritative snapshot
  players: [], // [{playerId, entity, name, connected, score, dead}]
  snapshots: 0,
  keyframes: 0,
  deltas: 0,
  decodeErrors: 0,
  lastClose: null, // {code, reason, label}
  status: null, // after a close: {title, retry, action, detail} (status.js closeVerdict)
  banner: "",
  hudVisible: true,
  hudBlank: false, // the HUD shows dashes while disconnected
  reconnects: 0,
  touch: false, // touch controls shown
  compact: false, // small-screen layout (shortened scoreboard)
  dead: false, // our own entity waits to respawn
  respawnIn: null, // whole seconds until our respawn, counting down; null when alive
  killFeed: [], // ["alice ✕ bob", ...] as shown
  kills: 0, // kill events seen (all players)
  hits: 0, // our hits (hit markers shown)
  damageFlashes: 0, // times we were hurt (damage flashes shown)
  left: false, // we sent Leave
  shotsPredicted: 0, // our shots drawn at once (shots.js)
  shotsFired: 0, // our hitscan shots the server resolved (Shots frames)
  shotsHit: 0, // of which hit something (hit marker shown)
  shotsOnTarget: 0, // of which hit the entity in `aimAt`
  shotsClamped: 0, // of which the server clamped the claimed view
  lastRewindMs: null, // how far the server rewound our last hitscan shot
  aimAt: null, // probe hook: {slot} makes the page aim at that entity and fire (game.js)
  // Written once per animation frame, for probes (bench/browser_smoothness.py); read-only:
  // {t (s), renderTick, newestTick, me: {x, y} | null, firstNpc: {slot, id, x, y, dead} | null}
  sample: null,
  // lobby.js: {screen: "start"|"joining"|"playing", intent, room, node, mode, private,
  // link (a private room's share link), error: {code, status, title} | null, modes, copied}
  lobby: null,
};
window.tickwire = tw;
