// Tickwire spectator page: a recording served by `tickwire replay FILE --serve`, or a live
// room of a game server (`/replay.html?room=ID`). Spectators take no seat and send no
// input: the page only reads frames (one per tick: every live entity as plain numbers) and
// draws them with the demo client's renderer. Play, pause, speed, seek and follow are the
// page's own; for a recording it fetches frames ahead of the play head in chunks.

import { Renderer } from "./render.js";
import { KIND_PLAYER } from "./codec.js";

const $ = (id) => document.getElementById(id);
const CHUNK = 150; // frames per request
const AHEAD = 90; // frames wanted ahead of the play head before it moves on
const KEEP_BEHIND = 120; // frames kept behind the play head (a short step back is free)

const room = new URLSearchParams(location.search).get("room");
const renderer = new Renderer($("arena"));
const state = {
  mode: room ? "live" : "replay",
  info: null,
  frames: new Map(), // tick -> frame
  pos: 0, // play head, in ticks (fractional while playing)
  playing: false,
  speed: 1,
  follow: null, // player id, or null for the whole arena
  names: new Map(), // player id -> name
  fetching: false,
  latest: null, // live: the newest frame
  ready: false,
};
window.tickwireReplay = state;

function entityObjects(frame) {
  return frame.e.map(([slot, kind, x, y, vx, vy, hp, flags, aim, owner, score]) =>
    ({ slot, kind, x, y, vx, vy, hp, flags, aim, owner, score }));
}

function setPlaying(on) {
  state.playing = on;
  $("play").textContent = on ? "Pause" : "Play";
}

function fillFollow(players) {
  const sel = $("follow");
  const keep = sel.value;
  sel.replaceChildren(new Option("whole arena", ""));
  for (const p of players) {
    const name = p.name || `player ${p.player_id}`;
    state.names.set(p.player_id, name);
    sel.append(new Option(name, String(p.player_id)));
  }
  sel.value = [...sel.options].some((o) => o.value === keep) ? keep : "";
}

// -- recording: frames fetched ahead -------------------------------------------------------

async function fetchFrames(from) {
  state.fetching = true;
  try {
    const resp = await fetch(`/replay/frames?from=${from}&count=${CHUNK}`);
    if (!resp.ok) throw new Error(`frames: HTTP ${resp.status}`);
    const { frames } = await resp.json();
    for (const f of frames) state.frames.set(f.tick, f);
  } catch (err) {
    $("source").textContent = String(err.message || err);
    $("source").className = "error";
  } finally {
    state.fetching = false;
  }
}

function wanted() {
  // The first tick near the play head that is not buffered yet, or null.
  const head = Math.floor(state.pos);
  const end = Math.min(state.info.end_tick, head + AHEAD);
  for (let t = head; t <= end; t++) if (!state.frames.has(t)) return t;
  return null;
}

function trim() {
  const head = Math.floor(state.pos);
  for (const t of state.frames.keys()) {
    if (t < head - KEEP_BEHIND || t > head + AHEAD + 2 * CHUNK) state.frames.delete(t);
  }
}

async function startReplay() {
  const resp = await fetch("/replay/info");
  if (!resp.ok) throw new Error(`info: HTTP ${resp.status}`);
  const info = await resp.json();
  state.info = info;
  state.pos = info.start_tick;
  $("source").textContent = `${info.file} · ticks ${info.start_tick}–${info.end_tick} at ${info.tick_rate} Hz`
    + (info.diverged ? ` · diverged at ${info.diverged}` : "");
  const seek = $("seek");
  seek.min = info.start_tick;
  seek.max = info.end_tick;
  seek.value = info.start_tick;
  fillFollow(info.players);
  for (const id of ["play", "speed", "seek", "follow"]) $(id).disabled = false;
  await fetchFrames(info.start_tick);
  state.ready = true;
}

// -- live room: a stream of frames ---------------------------------------------------------

async function startLive() {
  const resp = await fetch(`/spectate/${encodeURIComponent(room)}`);
  if (!resp.ok) throw new Error(`room ${room}: HTTP ${resp.status}`);
  const info = await resp.json();
  state.info = info;
  fillFollow(info.players);
  $("source").textContent = `live: room ${room} at ${info.tick_rate} Hz (spectating: no seat, no input)`;
  $("play").disabled = false;
  $("follow").disabled = false;
  setPlaying(true);
  const es = new EventSource(`/spectate/${encodeURIComponent(room)}/events`);
  es.addEventListener("frame", (ev) => {
    const frame = JSON.parse(ev.data);
    if (state.playing) { state.latest = frame; state.pos = frame.tick; }
    state.ready = true;
  });
  es.addEventListener("players", (ev) => fillFollow(JSON.parse(ev.data)));
  es.onerror = () => { $("source").textContent = `live: room ${room} · reconnecting…`; };
}

// -- drawing -------------------------------------------------------------------------------

function currentFrame() {
  if (state.mode === "live") return state.latest;
  return state.frames.get(Math.floor(state.pos)) || null;
}

function draw() {
  const frame = currentFrame();
  if (!frame || !state.info) return;
  const info = state.info;
  const entities = entityObjects(frame);
  const names = new Map();
  let focus = null;
  for (const e of entities) {
    if (e.kind !== KIND_PLAYER) continue;
    names.set(e.slot, state.names.get(e.owner) || `player ${e.owner}`);
    if (state.follow !== null && e.owner === state.follow) focus = { x: e.x, y: e.y };
  }
  renderer.draw({
    world: { w: info.width, h: info.height }, entities, me: focus, meEntity: null, names,
    away: new Set(), playerRadius: info.player_radius, npcRadius: info.npc_radius,
    playerHpMax: info.player_hp, npcHpMax: info.npc_hp,
  });
  state.cam = renderer.cam; // for tests: where the camera looks
  $("tick").textContent = state.mode === "live"
    ? `tick ${frame.tick} · live${state.playing ? "" : " (paused)"}`
    : `tick ${frame.tick} / ${info.end_tick} · ${((frame.tick - info.start_tick) / info.tick_rate).toFixed(1)} s`;
}

let last = performance.now();
function loop(now) {
  const dt = Math.min(0.25, (now - last) / 1000);
  last = now;
  if (state.mode === "replay" && state.info) {
    if (state.playing) {
      const next = state.pos + dt * state.info.tick_rate * state.speed;
      // Move only through buffered frames: a gap waits for its fetch, never skips.
      if (state.frames.has(Math.floor(next))) state.pos = next;
      else if (Math.floor(next) > state.info.end_tick) { state.pos = state.info.end_tick; setPlaying(false); }
      $("seek").value = Math.floor(state.pos);
    }
    const gap = wanted();
    if (gap !== null && !state.fetching) fetchFrames(gap);
    trim();
  }
  draw();
  requestAnimationFrame(loop);
}

$("play").addEventListener("click", () => {
  if (state.mode === "replay" && !state.playing && Math.floor(state.pos) >= state.info.end_tick) {
    state.pos = state.info.start_tick; // play again from the start
  }
  setPlaying(!state.playing);
});
$("speed").addEventListener("change", () => { state.speed = Number($("speed").value); });
$("seek").addEventListener("input", () => { state.pos = Number($("seek").value); });
$("follow").addEventListener("change", () => {
  state.follow = $("follow").value === "" ? null : Number($("follow").value);
});

(state.mode === "live" ? startLive() : startReplay()).catch((err) => {
  $("source").textContent = String(err.message || err);
  $("source").className = "error";
});
requestAnimationFrame(loop);
