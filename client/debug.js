// The datachannel debug console: drive a session by hand and watch every message.

import { LATENCIES } from "/metric-names.js";
import { SandraRealtime } from "/sandra.js";

const $ = (sel) => document.querySelector(sel);
const NOISE = new Set(["ping", "pong", "viseme"]);
const MAX_LOG = 3000;
const TURN_COLUMNS = LATENCIES.map((m) => m.name); // the server's one list of latency names

const entries = []; // {at, direction, message, el}
const started = performance.now();
let sandra = null;

function stamp(at) {
  const wall = new Date(performance.timeOrigin + at);
  const hh = String(wall.getHours()).padStart(2, "0");
  const mm = String(wall.getMinutes()).padStart(2, "0");
  const ss = String(wall.getSeconds()).padStart(2, "0");
  const ms = String(wall.getMilliseconds()).padStart(3, "0");
  return `${hh}:${mm}:${ss}.${ms}`;
}

function typeOf(message) {
  return typeof message?.type === "string" ? message.type : "(raw)";
}

function visible(entry) {
  const type = typeOf(entry.message);
  if ($("#hide-noise").checked && NOISE.has(type)) return false;
  const filter = $("#filter").value.trim();
  if (!filter) return true;
  return filter.split("|").some((f) => f.trim() && type.includes(f.trim()));
}

function log(direction, message, at = performance.now()) {
  const li = document.createElement("li");
  const type = typeOf(message);
  li.className = `entry ${direction}`;
  li.dataset.type = type;
  li.dataset.direction = direction;
  const time = document.createElement("time");
  time.textContent = stamp(at);
  time.title = `+${((at - started) / 1000).toFixed(3)} s`;
  const arrow = document.createElement("span");
  arrow.className = "dir";
  arrow.textContent = { in: "⬇", out: "⬆", local: "•" }[direction];
  const kind = document.createElement("span");
  kind.className = "type";
  kind.textContent = type;
  const body = document.createElement("code");
  const { type: _omit, ...rest } = message ?? {};
  body.textContent = message?.raw !== undefined ? message.raw : JSON.stringify(rest);
  li.append(time, arrow, kind, body);
  const entry = { at, direction, message, el: li };
  entries.push(entry);
  li.hidden = !visible(entry);
  const box = $("#log");
  const atBottom = box.scrollHeight - box.scrollTop - box.clientHeight < 40;
  box.append(li);
  if (entries.length > MAX_LOG) entries.shift().el.remove();
  if (atBottom) box.scrollTop = box.scrollHeight;
}

function refilter() {
  for (const entry of entries) entry.el.hidden = !visible(entry);
}

function note(text, extra = {}) {
  log("local", { type: "client", note: text, ...extra });
}

function addTurnMetrics(msg) {
  const body = $("#turns tbody");
  const key = String(msg.turn_id ?? "");
  let row = body.querySelector(`tr[data-turn="${CSS.escape(key)}"]`);
  if (!row) {
    row = document.createElement("tr");
    row.dataset.turn = key;
    row.append(...[key, ...TURN_COLUMNS].map(() => document.createElement("td")));
    row.cells[0].textContent = key;
    body.prepend(row);
  }
  TURN_COLUMNS.forEach((col, i) => {
    if (Number.isFinite(msg[col])) row.cells[i + 1].textContent = String(Math.round(msg[col]));
  });
}

function renderMetrics() {
  if (!sandra) return;
  const m = sandra.getMetrics();
  const rows = Object.entries(m).map(([k, v]) => `<tr><th>${k}</th><td>${v === null ? "–" : k === "latency" ? `${v.toFixed(1)} ms` : v}</td></tr>`);
  $("#client-metrics").innerHTML = rows.join("");
  const status = sandra.getStatus();
  $("#status").textContent = JSON.stringify(status, null, 2);
  $("#ping").textContent = status.socket.latency === null ? "–" : `${status.socket.latency.toFixed(0)} ms`;
  const conn = $("#conn");
  const state = status.socket.authenticated ? (status.callActive ? "in call" : "connected") : status.socket.connected ? "connecting" : "disconnected";
  conn.textContent = state;
  conn.dataset.state = state.replace(" ", "-");
  $("#session").textContent = sandra.sessionId ?? "–";
}

async function act(label, fn) {
  try {
    const result = await fn();
    if (result?.type) note(`${label}: ${result.type}`);
  } catch (err) {
    note(`${label} failed: ${err.message}`, { code: err.code });
  }
  renderMetrics();
}

sandra = await SandraRealtime.initialize({ audioElement: $("#remote-audio") });
window.sandra = sandra;
window.debugLog = entries;

sandra.on("traffic", ({ direction, message, at }) => log(direction, message, at));
sandra.on("metrics", addTurnMetrics);
sandra.on("state", (msg) => ($("#server-state").textContent = msg.state));
sandra.on("connection", (msg) => note(`connection ${msg.state}`));
sandra.on("reconnecting", (msg) => note(`reconnecting (attempt ${msg.attempt}, ${msg.reason})`));
sandra.on("reconnected", (msg) => note(`reconnected as ${msg.session_id}`));
sandra.on("latency", renderMetrics);

$("#connect").addEventListener("click", () => {
  sandra.unlockAudio();
  sandra.options.microphone = $("#use-mic").checked;
  act("connect", () => sandra.connect());
});
$("#start").addEventListener("click", () => {
  sandra.unlockAudio();
  sandra.options.microphone = $("#use-mic").checked;
  act("call:start", () => sandra.startCall({ language: $("#language").value }));
});
$("#end").addEventListener("click", () => act("call:end", () => sandra.send("call:end")));
$("#barge").addEventListener("click", () => act("barge-in", () => sandra.bargeIn()));
$("#disconnect").addEventListener("click", () => act("disconnect", () => sandra.endCall()));
$("#msg-form").addEventListener("submit", (event) => {
  event.preventDefault();
  const text = $("#msg").value;
  act("message", () => sandra.sendMessage(text)).then(() => ($("#msg").value = ""));
});
$("#send-raw").addEventListener("click", () => act("raw", () => sandra.sendRaw($("#raw").value)));
$("#raw").addEventListener("keydown", (event) => {
  if (event.key === "Enter" && (event.ctrlKey || event.metaKey)) $("#send-raw").click();
});
$("#filter").addEventListener("input", refilter);
$("#hide-noise").addEventListener("change", refilter);
$("#clear").addEventListener("click", () => {
  entries.splice(0).forEach((e) => e.el.remove());
});
$("#copy").addEventListener("click", async () => {
  const text = entries
    .filter(visible)
    .map((e) => `${stamp(e.at)} ${e.direction.padEnd(5)} ${JSON.stringify(e.message)}`)
    .join("\n");
  try {
    await navigator.clipboard.writeText(text);
    note(`copied ${text.split("\n").length} lines`);
  } catch (err) {
    note(`copy failed: ${err.message}`);
  }
});

setInterval(renderMetrics, 1000);
renderMetrics();
document.body.dataset.ready = "true";
