// The host's dashboard: live calls, recent calls with transcript and audio, the inbox,
// latency charts and guest links. Talks only to Sandra's admin API with the admin token,
// kept in sessionStorage (this tab only).

import { LATENCIES } from "/metric-names.js";
import { encode } from "/vendor/uqr.js";

const TOKEN_KEY = "sandra.adminToken";
const LIVE_EVERY_MS = 2000;
const LIST_EVERY_MS = 8000;
// The charted stages: the server's one list of latency names (barge-in has no place in a
// reply's latency), with the dashboard's longer labels.
const LABELS = {
  voice_to_voice_ms: "Voice to voice",
  text_to_voice_ms: "Typed to voice",
  eos_ms: "End of turn",
  stt_ms: "Speech to text",
  llm_ttft_ms: "LLM first token",
  tts_ttfb_ms: "TTS first byte",
};
const STAGES = LATENCIES.filter((m) => m.name !== "barge_in_ms").map((m) => [m.name, LABELS[m.name] ?? m.en]);

const $ = (id) => document.getElementById(id);
const rendered = new Map(); // list id -> what it shows: an unchanged list is not rebuilt (hover, focus, clicks survive)
function changed(id, data) {
  const key = JSON.stringify(data);
  if (rendered.get(id) === key) return false;
  rendered.set(id, key);
  return true;
}
let token = sessionStorage.getItem(TOKEN_KEY);
let timers = [];
let liveIds = new Set();
let openCall = null;

class ApiError extends Error {
  constructor(status, code, message) { super(message); this.status = status; this.code = code; }
}

async function api(path, options = {}) {
  const headers = { Authorization: `Bearer ${token}`, ...(options.body ? { "Content-Type": "application/json" } : {}) };
  const response = await fetch(path, { ...options, headers: { ...headers, ...(options.headers || {}) } });
  if (response.status === 401) {
    const body = await response.json().catch(() => ({}));
    if (body?.error?.code === "admin_required") { signOut("That token was not accepted."); }
    throw new ApiError(401, body?.error?.code || "unauthorized", body?.error?.message || "Not allowed.");
  }
  if (!response.ok) {
    const body = await response.json().catch(() => null);
    throw new ApiError(response.status, body?.error?.code || "http_error",
      body?.error?.message || `${response.status} ${response.statusText}`);
  }
  return response;
}
const getJson = async (path) => (await api(path)).json();

// --- small DOM helpers -------------------------------------------------------------------

function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (v === undefined || v === null || v === false) continue;
    if (k === "class") node.className = v; else if (k === "text") node.textContent = v;
    else if (k.startsWith("on")) node.addEventListener(k.slice(2), v); else node.setAttribute(k, v === true ? "" : v);
  }
  for (const c of children) if (c !== null && c !== undefined) node.append(c);
  return node;
}
const svg = (tag, attrs = {}) => {
  const node = document.createElementNS("http://www.w3.org/2000/svg", tag);
  for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, v);
  return node;
};
const clock = (s) => { s = Math.max(0, Math.round(s || 0)); return `${Math.floor(s / 60)}:${String(s % 60).padStart(2, "0")}`; };
const ms = (v) => (v === undefined || v === null ? "–" : v >= 1000 ? `${(v / 1000).toFixed(2)} s` : `${Math.round(v)} ms`);
const when = (iso) => {
  if (!iso) return "";
  const d = new Date(iso);
  const today = new Date().toDateString() === d.toDateString();
  return today ? d.toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" })
    : d.toLocaleString([], { day: "numeric", month: "short", hour: "2-digit", minute: "2-digit" });
};
const STATE_TEXT = { idle: "Connected", listening: "Listening", user_speaking: "Guest speaking", thinking: "Thinking", speaking: "Sandra speaking" };

// --- sign in / out -------------------------------------------------------------------------

function show(view) {
  document.body.dataset.view = view;
  $("gate").hidden = view !== "gate";
  $("dashboard").hidden = view !== "dashboard";
  $("logout").hidden = view !== "dashboard";
}

function signOut(message) {
  sessionStorage.removeItem(TOKEN_KEY);
  rendered.clear();
  token = null;
  for (const t of timers) clearInterval(t);
  timers = [];
  $("live-pill").hidden = true;
  show("gate");
  $("gate-error").hidden = !message;
  $("gate-error").textContent = message || "";
}

async function signIn(candidate) {
  token = candidate;
  try {
    await refreshAll();
  } catch (err) {
    if (err.status !== 401) { $("gate-error").hidden = false; $("gate-error").textContent = err.message; }
    return;
  }
  sessionStorage.setItem(TOKEN_KEY, token);
  show("dashboard");
  timers = [setInterval(() => refreshLive().catch(report), LIVE_EVERY_MS),
    setInterval(() => refreshList().catch(report), LIST_EVERY_MS)];
}

function report(err) { if (err.status !== 401) console.warn("admin:", err.message); }

// --- data ------------------------------------------------------------------------------------

async function refreshAll() {
  const [calls, inbox] = await Promise.all([getJson("/api/calls"), getJson("/api/inbox")]);
  renderLive(calls.live);
  renderCalls(calls.calls, calls.recording);
  renderChart(calls.calls);
  renderInbox(inbox);
}

async function refreshLive() {
  const { live } = await getJson("/api/calls?live=1");
  const ended = [...liveIds].some((id) => !live.some((c) => c.session_id === id));
  renderLive(live);
  if (ended) await refreshList();
}

async function refreshList() {
  const [calls, inbox] = await Promise.all([getJson("/api/calls"), getJson("/api/inbox")]);
  renderCalls(calls.calls, calls.recording);
  renderChart(calls.calls);
  renderInbox(inbox);
}

// --- live calls ------------------------------------------------------------------------------

function renderLive(live) {
  liveIds = new Set(live.map((c) => c.session_id));
  $("live-pill").hidden = live.length === 0;
  $("live-count").textContent = String(live.length);
  $("live-updated").textContent = `updated ${new Date().toLocaleTimeString([], { hour: "2-digit", minute: "2-digit", second: "2-digit" })}`;
  const list = $("live");
  if (!live.length) { list.replaceChildren(el("li", { class: "empty", text: "No one is on a call right now." })); return; }
  list.replaceChildren(...live.map((c) => {
    const m = c.last_metrics || {};
    const latency = m.voice_to_voice_ms ?? m.text_to_voice_ms;
    return el("li", { class: "live-call", "data-session": c.session_id },
      el("div", { class: "row" },
        el("span", { class: "state", "data-state": c.state }, el("span", { class: "state-dot" }), STATE_TEXT[c.state] || c.state),
        el("span", { class: "lang-tag", text: c.language })),
      el("div", { class: "row muted small" },
        el("span", { class: "mono", text: clock(c.duration_s) }),
        el("span", { text: `${c.turns} turns` }),
        el("span", { class: "mono", text: latency !== undefined ? `last reply ${ms(latency)}` : "no reply yet" })),
    );
  }));
}

// --- recent calls ----------------------------------------------------------------------------

function renderCalls(calls, recordingOn) {
  if (!changed("calls", [calls, recordingOn, openCall])) return;
  $("recording-note").textContent = recordingOn ? "recording on" : "recording off ([recording] enabled)";
  const list = $("calls");
  if (!calls.length) {
    list.replaceChildren(el("li", { class: "empty", text: recordingOn ? "No recorded calls yet." : "Recording is off: turn it on to keep calls here." }));
    return;
  }
  list.replaceChildren(...calls.map((c) => el("li", {
    class: "call-item", "data-session": c.session_id, tabindex: "0", role: "button",
    "aria-current": openCall === c.session_id ? "true" : "false",
    onclick: () => openDetail(c.session_id), onkeydown: (e) => { if (e.key === "Enter") openDetail(c.session_id); },
  },
  el("span", { class: "when", text: `${when(c.started_at)}${c.guest?.name ? ` · ${c.guest.name}` : ""}` }),
  el("span", { class: "lang-tag", text: c.language || "?" }),
  el("span", { class: "facts" },
    el("span", { class: "mono", text: clock(c.duration_s) }),
    el("span", { text: `${c.turns} turns` }),
    c.interrupted ? el("span", { class: "flag", text: `${c.interrupted} interrupted` }) : null,
    el("span", { text: c.recording ? "♪ audio" : "no audio" })))));
}

async function openDetail(sessionId) {
  openCall = sessionId;
  for (const item of document.querySelectorAll(".call-item")) item.setAttribute("aria-current", String(item.dataset.session === sessionId));
  const doc = await getJson(`/api/calls/${encodeURIComponent(sessionId)}`);
  $("detail").hidden = false;
  $("detail-title").textContent = `${when(doc.started_at)} · ${clock(doc.duration_s)}`;
  $("detail-sub").textContent = [doc.guest?.name, (doc.language || "").toUpperCase(), doc.close_reason].filter(Boolean).join(" · ");
  const player = $("player");
  player.pause();
  $("detail-note").hidden = true;
  if (doc.recording && doc.audio_url) {
    player.src = doc.audio_url; // a signed URL for this one file: the element streams and seeks with ranges
    player.hidden = false;
  } else {
    player.removeAttribute("src");
    player.hidden = true;
    $("detail-note").hidden = false;
    $("detail-note").textContent = "No audio for this call.";
  }
  const tools = (doc.tools || []).filter((t) => t.name === "notify_host");
  $("lines").replaceChildren(...doc.turns.map((t) => {
    const lat = t.metrics?.voice_to_voice_ms ?? t.metrics?.text_to_voice_ms;
    return el("li", {
      class: `line ${t.who}`, "data-start": String(t.start_ms), "data-end": String(t.end_ms),
      title: "Play from here", onclick: () => playFrom(t.start_ms),
    },
    el("span", { class: "t", text: clock(t.start_ms / 1000) }),
    el("div", {},
      el("div", { class: "who", text: t.who === "guest" ? (t.kind === "text" ? "Guest · typed" : "Guest") : "Sandra" }),
      el("div", { class: "text" }, t.text, t.interrupted ? el("span", { class: "cut", text: "interrupted" }) : null),
      lat !== undefined ? el("div", { class: "lat", text: `replied in ${ms(lat)}` }) : null));
  }), ...tools.map((t) => el("li", { class: "line sandra" }, el("span", { class: "t", text: clock(t.at_ms / 1000) }),
    el("div", {}, el("div", { class: "who", text: "Host notified" }), el("div", { class: "text", text: t.input?.message || "" })))));
}

function playFrom(startMs) {
  const player = $("player");
  if (!player.src) return;
  player.currentTime = Math.max(0, startMs / 1000 - 0.15);
  player.play().catch(() => {});
}

function highlight() {
  const at = $("player").currentTime * 1000;
  for (const line of document.querySelectorAll("#lines .line[data-start]")) {
    line.classList.toggle("playing", at >= Number(line.dataset.start) - 150 && at <= Number(line.dataset.end) + 150);
  }
}

// --- latency chart ---------------------------------------------------------------------------

function percentile(values, p) {
  if (!values.length) return null;
  const sorted = [...values].sort((a, b) => a - b);
  return sorted[Math.min(sorted.length - 1, Math.max(0, Math.ceil((p / 100) * sorted.length) - 1))];
}

function renderChart(calls) {
  if (!changed("chart", calls.map((c) => c.metrics))) return;
  const chart = $("chart");
  const turns = calls.flatMap((c) => c.metrics || []);
  const rows = STAGES.map(([key, label]) => {
    const values = turns.map((m) => m[key]).filter((v) => typeof v === "number");
    return { key, label, n: values.length, p50: percentile(values, 50), p95: percentile(values, 95) };
  });
  const max = Math.max(1, ...rows.map((r) => r.p95 || 0));
  const left = 112, width = 170, rowH = 38;
  chart.replaceChildren();
  chart.setAttribute("data-turns", String(turns.length));
  for (let x = 0; x <= 4; x++) chart.append(svg("line", { class: "grid", x1: left + (width * x) / 4, x2: left + (width * x) / 4, y1: 4, y2: rows.length * rowH - 6 }));
  rows.forEach((r, i) => {
    const y = i * rowH + 8;
    const label = svg("text", { class: "label", x: 0, y: y + 14 });
    label.textContent = r.label;
    chart.append(label);
    if (r.p50 === null) {
      const none = svg("text", { class: "value", x: left + 4, y: y + 14 });
      none.textContent = "no data yet";
      chart.append(none);
      return;
    }
    chart.append(svg("rect", { class: "p95", "data-stage": r.key, x: left, y, width: Math.max(2, (r.p95 / max) * width), height: 18, rx: 4 }));
    chart.append(svg("rect", { class: "p50", "data-stage": r.key, x: left, y: y + 4, width: Math.max(2, (r.p50 / max) * width), height: 10, rx: 3 }));
    const value = svg("text", { class: "value", x: left + width + 6, y: y + 13 });
    value.textContent = r.p95 >= 1000 ? `${(r.p50 / 1000).toFixed(2)} / ${(r.p95 / 1000).toFixed(2)} s`
      : `${Math.round(r.p50)} / ${Math.round(r.p95)} ms`;
    chart.append(value);
  });
  const n = svg("text", { class: "label", x: 0, y: rows.length * rowH + 8 });
  n.textContent = `${turns.length} replies in ${calls.length} calls`;
  chart.setAttribute("viewBox", `0 0 380 ${rows.length * rowH + 14}`);
  chart.append(n);
}

// --- host inbox ------------------------------------------------------------------------------

function renderInbox({ messages, unhandled }) {
  if (!changed("inbox", messages)) return;
  $("inbox-count").hidden = !unhandled;
  $("inbox-count").textContent = String(unhandled);
  const list = $("inbox");
  if (!messages.length) { list.replaceChildren(el("li", { class: "empty", text: "Nothing for you. Guests' requests appear here." })); return; }
  list.replaceChildren(...messages.map((m) => el("li", { class: `msg${m.handled ? " handled" : ""}`, "data-id": m.id },
    el("div", { class: "row" },
      el("span", { class: `urgency ${m.urgency || "normal"}`, text: m.urgency || "normal" }),
      el("span", { class: "muted small", text: when(m.time) })),
    el("div", { class: "text", text: m.message || "" }),
    m.handled ? el("span", { class: "muted small", text: "Handled" })
      : el("button", { type: "button", class: "btn btn-ghost btn-small", text: "Mark handled", onclick: () => markHandled(m.id) }))));
}

async function markHandled(id) {
  await api(`/api/inbox/${id}/handled`, { method: "POST" });
  renderInbox(await getJson("/api/inbox"));
}

// --- guest links -----------------------------------------------------------------------------

function drawQr(canvas, text) {
  const qr = encode(text, { ecc: "M", border: 2 });
  const n = qr.data.length;
  const scale = Math.floor(canvas.width / n);
  const offset = Math.floor((canvas.width - scale * n) / 2);
  const ctx = canvas.getContext("2d");
  ctx.fillStyle = "#fff";
  ctx.fillRect(0, 0, canvas.width, canvas.height);
  ctx.fillStyle = "#2d2019";
  qr.data.forEach((row, y) => row.forEach((dark, x) => { if (dark) ctx.fillRect(offset + x * scale, offset + y * scale, scale, scale); }));
  canvas.dataset.modules = String(n);
}

async function createLink(event) {
  event.preventDefault();
  const form = new FormData(event.target);
  const body = { from: form.get("from"), to: form.get("to"), lang: form.get("lang") };
  if (form.get("name")) body.name = form.get("name");
  if (form.get("max_calls")) body.max_calls = Number(form.get("max_calls"));
  $("link-error").hidden = true;
  try {
    const link = await (await api("/api/guest-links", { method: "POST", body: JSON.stringify(body) })).json();
    $("link-result").hidden = false;
    $("link-url").value = link.url;
    $("link-expires").textContent = link.expires_at ? `valid until ${new Date(link.expires_at).toLocaleString()}` : "";
    drawQr($("qr"), link.url);
  } catch (err) {
    $("link-result").hidden = true;
    $("link-error").hidden = false;
    $("link-error").textContent = `Could not create the link: ${err.message}`;
  }
}

// --- start -----------------------------------------------------------------------------------

function init() {
  const today = new Date();
  const inAWeek = new Date(today.getTime() + 7 * 86400_000);
  document.querySelector("[name=from]").value = today.toISOString().slice(0, 10);
  document.querySelector("[name=to]").value = inAWeek.toISOString().slice(0, 10);
  $("gate-form").addEventListener("submit", (e) => { e.preventDefault(); signIn($("token").value.trim()); });
  $("logout").addEventListener("click", () => signOut());
  $("detail-close").addEventListener("click", () => { $("detail").hidden = true; $("player").pause(); openCall = null; });
  $("player").addEventListener("timeupdate", highlight);
  $("link-form").addEventListener("submit", createLink);
  $("link-copy").addEventListener("click", () => navigator.clipboard?.writeText($("link-url").value).catch(() => {}));
  document.body.dataset.ready = "true";
  if (token) signIn(token); else show("gate");
}

init();
