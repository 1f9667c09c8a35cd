// Tickwire admin page: parameters form generated from GET /admin/params' schema, applied
// with POST /admin/params; the live room list from GET /rooms, polled every second.
// The token lives in sessionStorage (gone when the tab closes) and is sent as a Bearer
// header; nothing is loaded from outside this server. Server data is only ever inserted
// as text (player names come from clients).

const TOKEN_KEY = "tickwire.adminToken";
const $ = (id) => document.getElementById(id);

let schema = {};
let running = {}; // values in force on the server
let pollTimer = null;

function token() { return sessionStorage.getItem(TOKEN_KEY) || ""; }

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
}

function setStatus(text, kind = "") {
  const s = $("status");
  s.textContent = text;
  s.className = kind;
}

// -- the parameters form -------------------------------------------------------------------

function stepFor(meta) {
  if (meta.type === "int") return 1;
  const span = meta.max - meta.min;
  return span / 1000;
}

function fieldFor(key, meta, value) {
  const row = el("div", { class: "param", "data-key": key });
  const label = el("label", { class: "key", for: `in-${key}`, text: key });
  if (!meta.live) label.append(el("span", { class: "badge", title: "needs a server restart", text: "restart" }));
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
    const slider = el("input", { type: "range", min: meta.min, max: meta.max, step: stepFor(meta),
                                 "aria-label": `${key} slider` });
    input = el("input", { type: "number", id: `in-${key}`, min: meta.min, max: meta.max,
                          step: meta.type === "int" ? 1 : "any" });
    slider.value = value;
    input.value = value;
    slider.addEventListener("input", () => {
      input.value = meta.type === "int" ? Math.round(Number(slider.value)) : Number(slider.value);
      onEdit();
    });
    input.addEventListener("input", () => { slider.value = input.value; onEdit(); });
    row.append(slider, input, el("span", { class: "unit", text: meta.unit || "" }));
  }
  input.dataset.key = key;
  input.classList.add("value");
  input.addEventListener("change", onEdit);
  const range = meta.type === "bool" ? "" : meta.type === "str" ? ` (${meta.choices.join(" | ")})`
    : ` [${meta.min} – ${meta.max}]`;
  row.append(el("div", { class: "doc", text: `${meta.doc}${range}` }));
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
    groups.get(table).append(fieldFor(key, meta, running[key]));
  }
}

function readValue(input) {
  const meta = schema[input.dataset.key];
  if (meta.type === "bool") return input.checked;
  if (meta.type === "str") return input.value;
  const n = Number(input.value);
  return meta.type === "int" ? Math.round(n) : n;
}

function changes() {
  const out = {};
  for (const input of document.querySelectorAll("input.value, select.value")) {
    const key = input.dataset.key;
    const v = readValue(input);
    if (v !== running[key]) out[key] = v;
  }
  return out;
}

function onEdit() {
  const changed = changes();
  for (const row of document.querySelectorAll(".param")) {
    row.classList.toggle("changed", row.dataset.key in changed);
  }
  const n = Object.keys(changed).length;
  $("apply").disabled = n === 0;
  $("revert").disabled = n === 0;
  if (n) setStatus(`${n} unsaved change${n > 1 ? "s" : ""}`);
}

async function loadParams() {
  const { status, data } = await api("GET", "/admin/params");
  if (status !== 200) { setStatus(`cannot load parameters (${status})`, "error"); return; }
  schema = data.schema;
  running = data.values;
  $("version").textContent = `params version ${data.version}`;
  buildForm();
  onEdit();
}

async function apply(event) {
  event.preventDefault();
  const body = changes();
  if (!Object.keys(body).length) return;
  $("apply").disabled = true;
  let status, data;
  try {
    ({ status, data } = await api("POST", "/admin/params", body));
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
  try { await loadParams(); } catch { return; }
  if (data.restart_required.length) {
    setStatus(`applied as version ${data.version}; needs a restart (kept): ${data.restart_required.join(", ")}`, "warn");
  } else {
    setStatus(`applied as version ${data.version}`, "ok");
  }
}

// -- the room list -------------------------------------------------------------------------

function renderRooms(rooms) {
  const box = $("rooms");
  if (!rooms.length) { box.replaceChildren(el("p", { text: "no rooms" })); return; }
  box.replaceChildren(...rooms.map((r) => {
    const bad = r.overruns > 0 || r.tick_duration_p99_ms > 1000 / r.tick_rate;
    const table = el("table", {},
      el("tr", {}, el("th", { text: "player" }), el("th", { class: "num", text: "id" }),
         el("th", { class: "num", text: "RTT (ms)" }), el("th", { text: "" })));
    for (const s of r.seats) {
      const tr = el("tr", { class: s.connected ? "" : "away" },
        el("td", { text: s.name + (s.connected ? "" : " (away)") }),
        el("td", { class: "num", text: String(s.player_id) }),
        el("td", { class: "num", text: s.rtt_ms.toFixed(1) }),
        el("td", { class: "acts" }, kickButton(r.id, s, "kick"), kickButton(r.id, s, "ban")));
      table.append(tr);
    }
    return el("div", { class: "room" },
      el("strong", { text: `${r.id} — ${r.players}/${r.capacity} players, tick ${r.tick}` }),
      el("div", { class: bad ? "health bad" : "health",
                  text: `tick ${r.tick_rate} Hz · duration p99 ${r.tick_duration_p99_ms.toFixed(2)} ms · overruns ${r.overruns}` }),
      table);
  }));
}

// -- kick and ban ---------------------------------------------------------------------------

const BAN_S = 3600; // the Ban button: name and address, one hour

function kickButton(roomId, seat, what) {
  const b = el("button", { type: "button", class: `${what}-btn`, "data-player": String(seat.player_id),
                           title: what === "kick" ? "remove now; the name is kept out for a while (--kick-ban-s)"
                                                  : "remove now; name and address kept out for an hour",
                           text: what === "kick" ? "Kick" : "Ban" });
  b.addEventListener("click", () => kick(roomId, seat, what, b));
  return b;
}

async function kick(roomId, seat, what, button) {
  const verb = what === "kick" ? "Kick" : "Ban";
  if (!confirm(`${verb} ${seat.name} (player ${seat.player_id})?`)) return;
  button.disabled = true;
  const query = what === "ban" ? `?ban_s=${BAN_S}` : "";
  let status, data;
  try {
    ({ status, data } = await api("POST", `/admin/rooms/${encodeURIComponent(roomId)}/kick/${seat.player_id}${query}`));
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
    const resp = await fetch("/rooms", { headers: { Authorization: `Bearer ${token()}` } });
    if (resp.ok) renderRooms(await resp.json());
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
