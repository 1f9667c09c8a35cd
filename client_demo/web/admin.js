// Tickwire admin page. The parameters form is generated from GET /admin/params' schema and
// applied with POST /admin/params; GET /admin/events (server-sent events, read with fetch
// so the token can go in a header) keeps the page on what actually runs: the version, each
// change from the file or another admin, and any error in the parameters file. The fleet
// view (nodes, their load and last refresh, and every room, private ones included) comes
// from GET /admin/fleet, polled every second; rooms carry their seats, with Kick and Ban
// (another node's room: its seats come from that node, and the kick is forwarded there; a
// node that does not answer is linked to its own admin page). A single server is a fleet
// of one node.
// The token lives in sessionStorage (gone when the tab closes) and is sent as a Bearer
// header; nothing is loaded from outside this server. Server data is only ever inserted
// as text (player names come from clients).

const TOKEN_KEY = "tickwire.adminToken";
const SLIDER_STEPS = 1000; // slider positions; the value scale maps them to the range
const MAX_LOG = 30; // events kept in the page's change log
const $ = (id) => document.getElementById(id);

let schema = {};
let state = null; // the server's state: version, values, file, persisted, file_error, pending_restart
let pollTimer = null;
let events = null; // AbortController of the open event stream
let appliedVersion = null; // the version the status line reports as applied from this page

function token() { return sessionStorage.getItem(TOKEN_KEY) || ""; }
function running() { return state ? state.values : {}; }

async function api(method, path, body) {
  const init = { method, headers: { Authorization: `Bearer ${token()}` } };
  if (body !== undefined) {
    init.headers["Content-Type"] = "application/json";
    init.body = JSON.stringify(body);
  }
  const resp = await fetch(path, init);
  let data = null;
  try { data = await resp.json(); } catch { data = null; }
  if (resp.status === 401) {
    sessionStorage.removeItem(TOKEN_KEY); // a rejected token is not kept for the next load
    showLogin("wrong or missing token");
    throw new Error("unauthorized");
  }
  return { status: resp.status, data };
}

function el(tag, props = {}, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(props)) {
    if (k === "class") node.className = v;
    else if (k === "text") node.textContent = v;
    else node.setAttribute(k, v);
  }
  for (const c of children) node.append(c);
  return node;
}

function showLogin(message = "") {
  $("app").hidden = true;
  $("login").hidden = false;
  $("login-error").textContent = message;
  if (pollTimer) { clearInterval(pollTimer); pollTimer = null; }
  if (events) { events.abort(); events = null; }
}

function setStatus(text, kind = "") {
  const s = $("status");
  s.textContent = text;
  s.className = kind;
}

// -- slider scales -------------------------------------------------------------------------
// A range that spans decades (world.capacity 64-16384, player.accel 1-100000) gets a log
// scale: each slider step is the same ratio, not the same amount. A range that starts at 0
// is shifted by one unit first (log(v + 1)). Values from the slider are rounded to a step
// that fits: whole numbers for int keys, three significant digits on log scales, and a
// round 1/2/5 step near a thousandth of the span on linear ones.

export function scaleFor(meta) {
  const shift = meta.min > 0 ? 0 : 1;
  const lo = meta.min + shift;
  const hi = meta.max + shift;
  if (meta.min >= 0 && hi / lo >= 100) {
    const a = Math.log(lo);
    const b = Math.log(hi);
    return {
      kind: "log",
      toPos: (v) => ((Math.log(Math.min(Math.max(v, meta.min), meta.max) + shift) - a) / (b - a)) * SLIDER_STEPS,
      fromPos: (p) => roundValue(meta, Math.exp(a + (p / SLIDER_STEPS) * (b - a)) - shift, "log"),
    };
  }
  const span = meta.max - meta.min;
  return {
    kind: "linear",
    toPos: (v) => ((Math.min(Math.max(v, meta.min), meta.max) - meta.min) / span) * SLIDER_STEPS,
    fromPos: (p) => roundValue(meta, meta.min + (p / SLIDER_STEPS) * span, "linear"),
  };
}

function niceStep(span) {
  const raw = span / SLIDER_STEPS;
  const mag = 10 ** Math.floor(Math.log10(raw));
  for (const m of [1, 2, 5, 10]) if (raw <= m * mag) return m * mag;
  return 10 * mag;
}

function roundValue(meta, v, kind) {
  let out;
  if (meta.type === "int") out = Math.round(v);
  else if (kind === "log") out = v === 0 ? 0 : Number(v.toPrecision(3));
  else {
    const step = niceStep(meta.max - meta.min);
    out = Number((Math.round(v / step) * step).toFixed(Math.max(0, -Math.floor(Math.log10(step)))));
  }
  return Math.min(Math.max(out, meta.min), meta.max);
}

// -- field validation ----------------------------------------------------------------------
// An emptied or non-numeric field is never read as 0: it is an error shown on its row,
// and Apply stays off while any row has one. The server refuses such values too.

function parseField(input) {
  const key = input.dataset.key;
  const meta = schema[key];
  if (meta.type === "bool") return { value: input.checked };
  if (meta.type === "str") {
    return meta.choices.includes(input.value) ? { value: input.value }
      : { error: `${key} must be one of ${meta.choices.join(" | ")}` };
  }
  const text = input.value.trim();
  if (text === "") return { error: `${key} is empty; enter a number` };
  const n = Number(text);
  if (!Number.isFinite(n)) return { error: `${key}: "${text}" is not a number` };
  if (meta.type === "int" && !Number.isInteger(n)) return { error: `${key} must be a whole number` };
  if (n < meta.min || n > meta.max) return { error: `${key} must be within [${meta.min}, ${meta.max}]` };
  return { value: n };
}

// -- the parameters form -------------------------------------------------------------------

function fieldFor(key, meta, value) {
  const row = el("div", { class: meta.live ? "param" : "param restart-only", "data-key": key });
  const label = el("label", { class: "key", for: `in-${key}`, text: key });
  if (!meta.live) {
    label.append(el("span", { class: "badge", title: "read when the server starts; change it in the parameters file", text: "restart only" }));
  }
  row.append(label);
  let input;
  if (meta.type === "bool") {
    input = el("input", { type: "checkbox", id: `in-${key}` });
    input.checked = Boolean(value);
    row.append(input, el("span"), el("span", { class: "unit", text: meta.unit || "" }));
  } else if (meta.type === "str") {
    input = el("select", { id: `in-${key}` },
               ...meta.choices.map((c) => el("option", { value: c, text: c })));
    input.value = value;
    row.append(input, el("span"), el("span", { class: "unit", text: meta.unit || "" }));
  } else {
    const scale = scaleFor(meta);
    const slider = el("input", { type: "range", min: 0, max: SLIDER_STEPS, step: 1,
                                 "data-scale": scale.kind, "aria-label": `${key} slider` });
    input = el("input", { type: "number", id: `in-${key}`, min: meta.min, max: meta.max,
                          step: meta.type === "int" ? 1 : "any" });
    slider.value = scale.toPos(value);
    input.value = value;
    slider.addEventListener("input", () => {
      input.value = scale.fromPos(Number(slider.value));
      onEdit();
    });
    input.addEventListener("input", () => {
      const n = Number(input.value);
      if (input.value.trim() !== "" && Number.isFinite(n)) slider.value = scale.toPos(n);
      onEdit();
    });
    row.append(slider, input, el("span", { class: "unit", text: meta.unit || "" }));
    if (!meta.live) slider.disabled = true;
  }
  if (!meta.live) {
    input.disabled = true; // shown, not editable: a running room cannot take it
  } else {
    input.classList.add("value");
  }
  input.dataset.key = key;
  input.addEventListener("change", onEdit);
  const range = meta.type === "bool" ? "" : meta.type === "str" ? ` (${meta.choices.join(" | ")})`
    : ` [${meta.min} – ${meta.max}]`;
  row.append(el("div", { class: "doc", text: `${meta.doc}${range}` }));
  row.append(el("div", { class: "pending" }));
  row.append(el("div", { class: "error" }));
  return row;
}

function buildForm() {
  const fields = $("fields");
  fields.replaceChildren();
  const groups = new Map();
  for (const [key, meta] of Object.entries(schema)) {
    const table = key.split(".")[0];
    if (!groups.has(table)) {
      const fs = el("fieldset", {}, el("legend", { text: `[${table}]` }));
      groups.set(table, fs);
      fields.append(fs);
    }
    groups.get(table).append(fieldFor(key, meta, running()[key]));
  }
  showPending();
}

// The running values changed (another admin, the file): rows the user has not touched
// follow them; rows with an unsaved edit keep the edit.
function refreshUntouched(changed) {
  for (const key of Object.keys(changed || {})) {
    const row = document.querySelector(`.param[data-key="${CSS.escape(key)}"]`);
    if (!row || row.classList.contains("changed") || row.classList.contains("invalid")) continue;
    const meta = schema[key];
    const value = running()[key];
    const input = row.querySelector(`#${CSS.escape(`in-${key}`)}`);
    if (meta.type === "bool") input.checked = Boolean(value);
    else if (meta.type === "str") input.value = value;
    else {
      input.value = value;
      row.querySelector("input[type=range]").value = scaleFor(meta).toPos(value);
    }
  }
}

function showPending() {
  const pending = (state && state.pending_restart) || {};
  for (const row of document.querySelectorAll(".param")) {
    const key = row.dataset.key;
    const box = row.querySelector(".pending");
    box.textContent = key in pending
      ? `pending restart: the file says ${pending[key]}; ${running()[key]} runs until then` : "";
  }
}

function edits() {
  const out = {};
  const errors = [];
  for (const input of document.querySelectorAll("input.value, select.value")) {
    const key = input.dataset.key;
    const row = input.closest(".param");
    const parsed = parseField(input);
    row.querySelector(".error").textContent = parsed.error || "";
    row.classList.toggle("invalid", Boolean(parsed.error));
    if (parsed.error) errors.push(parsed.error);
    else if (parsed.value !== running()[key]) out[key] = parsed.value;
  }
  return { changes: out, errors };
}

function onEdit() {
  const { changes, errors } = edits();
  for (const row of document.querySelectorAll(".param")) {
    row.classList.toggle("changed", row.dataset.key in changes);
  }
  const n = Object.keys(changes).length;
  $("apply").disabled = n === 0 || errors.length > 0;
  $("revert").disabled = n === 0 && errors.length === 0;
  if (errors.length) setStatus(errors.join("; "), "error");
  else if (n) setStatus(`${n} unsaved change${n > 1 ? "s" : ""}`);
  else if ($("status").className === "error") setStatus("");
}

function showState() {
  if (!state) return;
  $("version").textContent = `params version ${state.version}`;
  const src = $("source");
  if (state.persisted) {
    src.textContent = `changes are written to ${state.file}`;
    src.className = "";
  } else {
    src.textContent = "no parameters file: changes apply in memory only and are lost at restart";
    src.className = "warn";
  }
  const err = $("file-error");
  err.hidden = !state.file_error;
  err.textContent = state.file_error ? `parameters file error (running values kept): ${state.file_error}` : "";
  showPending();
}

async function loadParams() {
  const { status, data } = await api("GET", "/admin/params");
  if (status !== 200) { setStatus(`cannot load parameters (${status})`, "error"); return; }
  schema = data.schema;
  state = data;
  showState();
  buildForm();
  onEdit();
}

async function apply(event) {
  event.preventDefault();
  const { changes, errors } = edits();
  if (errors.length || !Object.keys(changes).length) return;
  $("apply").disabled = true;
  let status, data;
  try {
    ({ status, data } = await api("POST", "/admin/params", changes));
  } catch (err) {
    // 401: api() already went back to the login form. Anything else: the server is gone.
    if (err.message !== "unauthorized") setStatus(`cannot apply: ${err.message}`, "error");
    $("apply").disabled = false;
    return;
  }
  if (status !== 200) {
    setStatus(data && data.error ? data.error : `error ${status}`, "error");
    $("apply").disabled = false;
    return;
  }
  state = data.state;
  showState();
  buildForm();
  onEdit();
  appliedVersion = data.version;
  if (data.persisted) setStatus(`applied: version ${data.version} runs; written to ${data.file}`, "ok");
  else setStatus(`applied in memory: version ${data.version} runs; not saved, lost at restart`, "warn");
}

// -- live events ---------------------------------------------------------------------------

function logEvent(ev) {
  const list = $("events");
  const time = new Date().toLocaleTimeString();
  let text;
  if (ev.event === "applied") {
    const keys = Object.entries(ev.changed || {}).map(([k, v]) => `${k} = ${v}`).join(", ");
    const pending = Object.entries(ev.state.pending_restart || {}).map(([k, v]) => `${k} = ${v}`).join(", ");
    text = `${time} · version ${ev.state.version} from ${ev.source}: ${keys || "no live value changed"}`
      + (pending ? `; pending restart: ${pending}` : "");
  } else if (ev.event === "file_error") {
    text = `${time} · file error, version ${ev.state.version} keeps running: ${ev.error}`;
  } else return;
  list.prepend(el("li", { class: ev.event, text }));
  while (list.children.length > MAX_LOG) list.lastElementChild.remove();
}

function onServerEvent(ev) {
  if (!ev || !ev.state) return;
  const before = state ? state.version : null;
  state = ev.state;
  showState();
  if (appliedVersion !== null && state.version !== appliedVersion) {
    // "applied: version N runs" is no longer true: the header and the log say what runs.
    appliedVersion = null;
    if (["ok", "warn"].includes($("status").className)) setStatus("");
  }
  if (ev.event === "state" && before !== null && before !== state.version) {
    refreshUntouched(state.values); // reconnected after missing events
  } else if (ev.event === "applied") {
    refreshUntouched(ev.changed);
  }
  logEvent(ev);
  onEdit();
}

async function followEvents() {
  let delay = 500;
  while (events && !events.signal.aborted) {
    const ctl = events;
    try {
      const resp = await fetch("/admin/events", {
        headers: { Authorization: `Bearer ${token()}` }, signal: ctl.signal });
      if (resp.status === 401) { showLogin("wrong or missing token"); return; }
      if (resp.ok) {
        $("live").textContent = "live";
        $("live").className = "ok";
        delay = 500;
        const reader = resp.body.pipeThrough(new TextDecoderStream()).getReader();
        let buf = "";
        for (;;) {
          const { value, done } = await reader.read();
          if (done) break;
          buf += value;
          let end;
          while ((end = buf.indexOf("\n\n")) >= 0) {
            const block = buf.slice(0, end);
            buf = buf.slice(end + 2);
            const data = block.split("\n").filter((l) => l.startsWith("data: ")).map((l) => l.slice(6)).join("\n");
            if (data) onServerEvent(JSON.parse(data));
          }
        }
      }
    } catch (err) {
      if (ctl.signal.aborted) return;
    }
    $("live").textContent = "reconnecting…";
    $("live").className = "warn";
    await new Promise((r) => setTimeout(r, delay));
    delay = Math.min(delay * 2, 5000);
  }
}

// -- the room list -------------------------------------------------------------------------

function ageText(s) {
  if (s === null || s === undefined) return "not registered";
  return s < 1 ? "just now" : `${s.toFixed(1)} s ago`;
}

function renderFleet(view) {
  const box = $("fleet");
  const rows = [el("tr", {}, el("th", { text: "node" }), el("th", { text: "address" }),
                   el("th", { text: "state" }), el("th", { class: "num", text: "players" }),
                   el("th", { class: "num", text: "rooms" }), el("th", { text: "refreshed" }))];
  for (const n of view.nodes) {
    const name = el("td", { text: n.node + (n.self ? " (this node)" : "") });
    const addr = el("td", {});
    if (!n.self && n.admin_url) {
      addr.append(el("a", { href: n.admin_url, target: "_blank", rel: "noopener", text: n.url }));
    } else {
      addr.textContent = n.url || "this server";
    }
    const load = n.capacity ? `${n.players}/${n.capacity}` : String(n.players);
    const stale = n.refreshed_age_s !== null && n.refreshed_age_s > 5;
    rows.push(el("tr", { class: "node" + (n.draining ? " away" : ""), "data-node": n.node }, name, addr,
      el("td", { class: n.draining || n.seats_error ? "warn" : "",
                 title: n.seats_error ? `its seats: ${n.seats_error}` : "",
                 text: (n.draining ? "draining" : "serving") + (n.seats_error ? " (no seats)" : "") }),
      el("td", { class: "num", text: load }),
      el("td", { class: "num", text: String(n.rooms.length) }),
      el("td", { class: stale ? "warn" : "", text: ageText(n.refreshed_age_s) })));
  }
  const parts = [el("table", {}, ...rows)];
  if (view.error) parts.unshift(el("div", { class: "health bad", role: "alert",
                                            text: `registry unreachable: ${view.error}` }));
  box.replaceChildren(...parts);
}

/** Every room of the fleet view, this node's first, each tagged with its node. */
function roomsOf(view) {
  const nodes = [...view.nodes].sort((a, b) => (b.self ? 1 : 0) - (a.self ? 1 : 0));
  return nodes.flatMap((n) => n.rooms.map((r) => ({ ...r, node: n.node, admin_url: n.admin_url,
                                                     self: n.self })));
}

function renderRooms(rooms) {
  const box = $("rooms");
  if (!rooms.length) { box.replaceChildren(el("p", { text: "no rooms" })); return; }
  // The list is rebuilt every second (RTTs and ticks move), but a Kick/Ban button must not
  // be swapped for a new one under the operator's pointer between press and release (the
  // click would land on neither), nor lose its disabled state while its request runs: the
  // same seat keeps its buttons across rebuilds.
  const kept = new Map([...box.querySelectorAll("button[data-key]")].map((b) => [b.dataset.key, b]));
  const button = (r, s, what) => {
    const key = `${r.node}|${r.id || r.room}|${s.player_id}|${what}`;
    const b = kept.get(key) || kickButton(r, s, what);
    b.dataset.key = key;
    return b;
  };
  box.replaceChildren(...rooms.map((r) => {
    const id = r.id || r.room;
    const tags = `${r.mode ? ` · mode ${r.mode}` : ""}${r.private ? " · private" : ""}`;
    if (!r.seats) {
      // A room of another node that did not answer for its seats: they live on that node.
      const where = el("div", { class: "health", text: `on node ${r.node}${tags}` });
      if (r.admin_url) {
        where.append(" · ", el("a", { href: r.admin_url, target: "_blank", rel: "noopener",
                                      text: "kick on that node's admin page" }));
      }
      return el("div", { class: "room", "data-room": id },
        el("strong", { text: `${id} — ${r.players}/${r.capacity} players` }), where);
    }
    const bad = r.overruns > 0 || r.tick_duration_p99_ms > 1000 / r.tick_rate;
    const table = el("table", {},
      el("tr", {}, el("th", { text: "player" }), el("th", { class: "num", text: "id" }),
         el("th", { class: "num", text: "RTT (ms)" }), el("th", { text: "" })));
    for (const s of r.seats) {
      const tr = el("tr", { class: s.connected ? "" : "away" },
        el("td", { text: s.name + (s.connected ? "" : " (away)") }),
        el("td", { class: "num", text: String(s.player_id) }),
        el("td", { class: "num", text: s.rtt_ms.toFixed(1) }),
        el("td", { class: "acts" }, button(r, s, "kick"), button(r, s, "ban")));
      table.append(tr);
    }
    return el("div", { class: "room", "data-room": id },
      el("strong", { text: `${id} — ${r.players}/${r.capacity} players, tick ${r.tick}` }),
      el("div", { class: bad ? "health bad" : "health",
                  text: `tick ${r.tick_rate} Hz · duration p99 ${r.tick_duration_p99_ms.toFixed(2)} ms · overruns ${r.overruns}${tags}${r.self ? "" : ` · on node ${r.node}`}` }),
      table);
  }));
}

const BAN_S = 3600; // the Ban button: name and address, one hour

function kickButton(room, seat, what) {
  const b = el("button", { type: "button", class: `${what}-btn`, "data-player": String(seat.player_id),
                           title: what === "kick" ? "remove now; the name is kept out for a while (--kick-ban-s)"
                                                  : "remove now; name and address kept out for an hour",
                           text: what === "kick" ? "Kick" : "Ban" });
  b.addEventListener("click", () => kick(room, seat, what, b));
  return b;
}

async function kick(room, seat, what, button) {
  const roomId = room.id || room.room;
  // Another node's room: this node forwards the kick to the node that runs it.
  const base = room.self === false ? `/admin/nodes/${encodeURIComponent(room.node)}` : "/admin";
  const verb = what === "kick" ? "Kick" : "Ban";
  if (!confirm(`${verb} ${seat.name} (player ${seat.player_id})?`)) return;
  button.disabled = true;
  const query = what === "ban" ? `?ban_s=${BAN_S}` : "";
  let status, data;
  try {
    ({ status, data } = await api("POST", `${base}/rooms/${encodeURIComponent(roomId)}/kick/${seat.player_id}${query}`));
  } catch (err) {
    if (err.message !== "unauthorized") setKickStatus(`cannot ${what}: ${err.message}`, "error");
    button.disabled = false;
    return;
  }
  if (status !== 200) {
    setKickStatus(data && data.error ? data.error : `error ${status}`, "error");
    button.disabled = false;
    return;
  }
  const banned = data.banned_s > 0 ? `; kept out for ${Math.round(data.banned_s)} s` : "";
  setKickStatus(`${what === "kick" ? "kicked" : "banned"} ${seat.name}${banned}`, "ok");
  await pollRooms();
  await loadBans();
}

function setKickStatus(text, kind) {
  const s = $("kick-status");
  s.textContent = text;
  s.className = kind;
}

async function loadBans() {
  let status, data;
  try { ({ status, data } = await api("GET", "/admin/bans")); } catch { return; }
  const box = $("bans");
  if (status !== 200 || !data.bans.length) { box.replaceChildren(); return; }
  box.replaceChildren(el("div", { class: "health", text: "kept out:" }),
    ...data.bans.map((b) => el("div", { class: "ban", text: `${b.kind === "addr" ? "address" : "name"} ${b.value} — ${Math.ceil(b.seconds_left)} s` })));
}

async function pollRooms() {
  try {
    const resp = await fetch("/admin/fleet", { headers: { Authorization: `Bearer ${token()}` } });
    if (resp.ok) {
      const view = await resp.json();
      renderFleet(view);
      renderRooms(roomsOf(view));
    }
    await loadBans();
  } catch {
    $("rooms").textContent = "server unreachable";
  }
}

// -- start ---------------------------------------------------------------------------------

async function start() {
  if (!token()) { showLogin(); return; }
  $("login").hidden = true;
  $("app").hidden = false;
  try { await loadParams(); } catch { return; }
  if (!events) { events = new AbortController(); followEvents(); }
  await pollRooms();
  if (!pollTimer) pollTimer = setInterval(pollRooms, 1000);
}

$("login-form").addEventListener("submit", (e) => {
  e.preventDefault();
  sessionStorage.setItem(TOKEN_KEY, $("token").value.trim());
  $("token").value = "";
  start();
});
$("logout").addEventListener("click", () => { sessionStorage.removeItem(TOKEN_KEY); showLogin(); });
$("params-form").addEventListener("submit", apply);
$("revert").addEventListener("click", () => { buildForm(); onEdit(); setStatus(""); });
start();
