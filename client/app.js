// The call page: one big Call button, Sandra's face, the live conversation.

import { createAvatar } from "/avatar.js";
import { LATENCIES } from "/metric-names.js";
import { SandraRealtime } from "/sandra.js";

const TEXT = {
  en: {
    tagline: "Your concierge · Valencia",
    call: "Call Sandra",
    mute: "Mute",
    unmute: "Unmute",
    interrupt: "Interrupt",
    hangup: "Hang up",
    conversation: "Conversation",
    hint: "Ask about check-in, Wi-Fi, the beach, paella…",
    empty: "Sandra speaks Spanish and English. Call her, or type below.",
    placeholder: "Type a message…",
    "state.idle": "Tap Call to talk to Sandra",
    "state.connecting": "Connecting…",
    "state.reconnecting": "Connection lost, reconnecting…",
    "state.listening": "Listening…",
    "state.user_speaking": "You're speaking",
    "state.thinking": "Thinking…",
    "state.speaking": "Sandra is speaking",
    "state.ended": "Call ended. Tap Call to talk again",
    you: "You",
    sandra: "Sandra",
    interrupted: "interrupted",
    notified: "Sandra passed your message on to your host.",
    latency: "Last reply in",
    quick: "Quick questions",
    chips: [
      ["Check-in time", "What time is check-in?"],
      ["Wi-Fi", "What is the Wi-Fi password?"],
      ["The beach", "How do I get to the beach?"],
      ["Paella", "Where can I eat a good paella?"],
    ],
    "link.token_expired": "This guest link expired on {date}. Please ask your host for a new one.",
    "link.token_not_yet_valid": "This guest link works from {date}. See you then!",
    "link.invalid_token": "This guest link is not valid. Please check that you opened the whole link, or ask your host for a new one.",
    "link.auth_required": "To call Sandra, open the guest link your host sent you.",
    "link.too_many_calls": "Sandra is already on a call with this guest link. Hang up the other call first.",
  },
  es: {
    tagline: "Tu conserje · Valencia",
    call: "Llamar a Sandra",
    mute: "Silenciar",
    unmute: "Activar",
    interrupt: "Interrumpir",
    hangup: "Colgar",
    conversation: "Conversación",
    hint: "Pregunta por el check-in, el wifi, la playa, la paella…",
    empty: "Sandra habla español e inglés. Llámala o escribe abajo.",
    placeholder: "Escribe un mensaje…",
    "state.idle": "Pulsa Llamar para hablar con Sandra",
    "state.connecting": "Conectando…",
    "state.reconnecting": "Conexión perdida, reconectando…",
    "state.listening": "Te escucho…",
    "state.user_speaking": "Estás hablando",
    "state.thinking": "Pensando…",
    "state.speaking": "Sandra está hablando",
    "state.ended": "Llamada terminada. Pulsa Llamar para volver a hablar",
    you: "Tú",
    sandra: "Sandra",
    interrupted: "interrumpida",
    notified: "Sandra ha pasado tu mensaje a tu anfitrión.",
    latency: "Última respuesta en",
    quick: "Preguntas rápidas",
    chips: [
      ["Hora de entrada", "¿A qué hora es el check-in?"],
      ["Wifi", "¿Cuál es la contraseña del wifi?"],
      ["La playa", "¿Cómo llego a la playa?"],
      ["Paella", "¿Dónde puedo comer una buena paella?"],
    ],
    "link.token_expired": "Este enlace de huésped caducó el {date}. Pide uno nuevo a tu anfitrión.",
    "link.token_not_yet_valid": "Este enlace de huésped funciona a partir del {date}. ¡Hasta pronto!",
    "link.invalid_token": "Este enlace de huésped no es válido. Comprueba que abriste el enlace completo o pide uno nuevo a tu anfitrión.",
    "link.auth_required": "Para llamar a Sandra, abre el enlace de huésped que te envió tu anfitrión.",
    "link.too_many_calls": "Sandra ya está en una llamada con este enlace. Cuelga la otra llamada primero.",
  },
};

// --- guest link (issue 11): ?t=<token> leaves the address bar, stays for this tab ---------

const guestLink = takeGuestLink();

function takeGuestLink() {
  const url = new URL(location.href);
  const fromUrl = url.searchParams.get("t");
  if (fromUrl) {
    sessionStorage.setItem("sandra.token", fromUrl);
    url.searchParams.delete("t");
    history.replaceState(history.state, "", url.pathname + url.search + url.hash);
  }
  const token = sessionStorage.getItem("sandra.token") || undefined;
  let claims = {};
  try {
    claims = token ? JSON.parse(atob(token.split(".")[1].replace(/-/g, "+").replace(/_/g, "/"))) : {};
  } catch {
    claims = {}; // not readable: the server says why
  }
  return { token, claims };
}

/** A friendly sentence for a refused guest link, in the page's language; null for other errors. */
function linkMessage(code) {
  const text = TEXT[language]?.[`link.${code}`] ?? TEXT.en[`link.${code}`];
  if (!text) return null;
  const when = code === "token_expired" ? guestLink.claims.exp : guestLink.claims.nbf;
  const date = Number.isFinite(when)
    ? new Date(when * 1000).toLocaleDateString(language, { day: "numeric", month: "long", year: "numeric", timeZone: "UTC" })
    : "";
  return text.replace("{date}", date);
}

const $ = (sel) => document.querySelector(sel);
const ui = {
  call: $("#call"),
  inCall: $(".in-call"),
  mute: $("#mute"),
  interrupt: $("#interrupt"),
  hangup: $("#hangup"),
  state: $("#state"),
  stateText: $("#state-text"),
  avatarWrap: $(".avatar-wrap"),
  error: $("#error"),
  latency: $("#latency"),
  transcript: $("#transcript"),
  composer: $("#composer"),
  text: $("#text"),
  audio: $("#remote-audio"),
  langs: [...document.querySelectorAll(".lang-opt")],
  chips: $("#chips"),
};

let language = pickLanguage();
let phase = "idle"; // idle | connecting | in-call | ended
let serverState = "idle";
const turns = new Map(); // turn_id -> {user, sandra}

const t = (key) => TEXT[language][key] ?? TEXT.en[key] ?? key;

function pickLanguage() {
  if (guestLink.claims.lang === "en" || guestLink.claims.lang === "es") return guestLink.claims.lang;
  const saved = localStorage.getItem("sandra.language");
  if (saved === "en" || saved === "es") return saved;
  return (navigator.language || "en").toLowerCase().startsWith("es") ? "es" : "en";
}

function applyLanguage() {
  document.documentElement.lang = language;
  for (const el of document.querySelectorAll("[data-i18n]")) el.textContent = t(el.dataset.i18n);
  for (const el of document.querySelectorAll("[data-i18n-placeholder]")) el.placeholder = t(el.dataset.i18nPlaceholder);
  for (const b of ui.langs) b.setAttribute("aria-checked", String(b.dataset.lang === language));
  ui.mute.querySelector(".btn-label").textContent = sandra?.muted ? t("unmute") : t("mute");
  ui.chips.replaceChildren(
    ...t("chips").map(([label, question]) => {
      const chip = document.createElement("button");
      chip.type = "button";
      chip.className = "chip";
      chip.textContent = label;
      chip.dataset.question = question;
      chip.addEventListener("click", () => sendTyped(question));
      return chip;
    }),
  );
  renderState();
}

// --- state indicator --------------------------------------------------------------

function renderState() {
  let key = "idle";
  if (phase === "connecting") key = "connecting";
  else if (phase === "reconnecting") key = "reconnecting";
  else if (phase === "in-call") key = serverState === "idle" ? "listening" : serverState;
  else if (phase === "ended") key = "ended";
  ui.state.dataset.state = key;
  ui.avatarWrap.dataset.state = key;
  ui.stateText.textContent = t(`state.${key}`);
  const inCall = phase === "in-call" || phase === "reconnecting";
  ui.call.hidden = inCall;
  ui.inCall.hidden = !inCall;
  ui.call.disabled = phase === "connecting";
  ui.interrupt.disabled = !(inCall && (serverState === "speaking" || serverState === "thinking"));
  document.body.dataset.phase = phase;
}

function showError(message) {
  ui.error.textContent = message;
  ui.error.hidden = !message;
}

// --- conversation -----------------------------------------------------------------

function bubble(role) {
  ui.transcript.querySelector(".empty")?.remove();
  const li = document.createElement("li");
  li.className = `msg msg-${role}`;
  const who = document.createElement("span");
  who.className = "who";
  who.textContent = role === "user" ? t("you") : t("sandra");
  const body = document.createElement("p");
  body.className = "text";
  li.append(who, body);
  ui.transcript.append(li);
  scrollDown();
  return li;
}

/** A line from the concierge's tools (e.g. the host was notified), between the bubbles. */
function systemNote(text) {
  ui.transcript.querySelector(".empty")?.remove();
  const li = document.createElement("li");
  li.className = "note";
  li.textContent = text;
  ui.transcript.append(li);
  scrollDown();
}

function scrollDown() {
  ui.transcript.scrollTop = ui.transcript.scrollHeight;
}

function turn(id) {
  if (!turns.has(id)) turns.set(id, { user: null, sandra: null, streamed: "" });
  return turns.get(id);
}

function onTranscript(msg) {
  const entry = turn(msg.turn_id);
  if (!entry.user) {
    entry.user = bubble("user");
    // The caller's words come before Sandra's answer even if the answer started first.
    if (entry.sandra) ui.transcript.insertBefore(entry.user, entry.sandra);
  }
  entry.user.querySelector(".text").textContent = msg.text;
  entry.user.classList.toggle("partial", !msg.final);
  scrollDown();
}

function onDelta(msg) {
  const entry = turn(msg.turn_id);
  entry.sandra ??= bubble("sandra");
  entry.streamed += msg.text ?? "";
  entry.sandra.querySelector(".text").textContent = entry.streamed;
  entry.sandra.classList.add("streaming");
  scrollDown();
}

function onDone(msg) {
  const entry = turn(msg.turn_id);
  entry.sandra ??= bubble("sandra");
  entry.sandra.classList.remove("streaming");
  const body = entry.sandra.querySelector(".text");
  const said = msg.text ?? entry.streamed;
  if (msg.interrupted) {
    markInterrupted(entry, said);
  } else {
    body.textContent = said || entry.streamed;
  }
}

function markInterrupted(entry, said) {
  if (!entry?.sandra) return;
  if (said != null) entry.said = said;
  const li = entry.sandra;
  li.classList.remove("streaming");
  li.classList.add("interrupted");
  if (!li.querySelector(".badge")) {
    const badge = document.createElement("span");
    badge.className = "badge";
    badge.textContent = t("interrupted");
    li.querySelector(".who").after(badge);
  }
  const full = entry.streamed;
  const spoken = entry.said;
  if (spoken == null) return; // the server has not said yet how much was played
  const body = li.querySelector(".text");
  body.textContent = "";
  if (full.startsWith(spoken) && full.length > spoken.length) {
    // What she got to say, then what she did not, struck through.
    const rest = document.createElement("span");
    rest.className = "unsaid";
    rest.textContent = full.slice(spoken.length);
    body.append(spoken, rest);
  } else {
    body.textContent = spoken || full;
  }
}

function currentReply() {
  const ids = [...turns.keys()];
  for (let i = ids.length - 1; i >= 0; i--) {
    const entry = turns.get(ids[i]);
    if (entry.sandra) return entry;
  }
  return null;
}

const turnMetrics = new Map(); // turn_id -> every metric the server sent for it

function onMetrics(msg) {
  const merged = { ...(turnMetrics.get(msg.turn_id) ?? {}), ...msg };
  turnMetrics.set(msg.turn_id, merged);
  const total = merged.voice_to_voice_ms ?? merged.text_to_voice_ms;
  if (!Number.isFinite(total)) return; // e.g. a barge-in's own timing: keep showing the last reply
  const parts = LATENCIES.filter((m) => !m.name.endsWith("_to_voice_ms") && Number.isFinite(merged[m.name]))
    .map((m) => `${m[language] ?? m.en} ${Math.round(merged[m.name])} ms`);
  ui.latency.hidden = false;
  ui.latency.innerHTML = "";
  const head = document.createElement("strong");
  head.textContent = `${t("latency")} ${(total / 1000).toFixed(2)} s`;
  const detail = document.createElement("span");
  detail.textContent = parts.join(" · ");
  ui.latency.append(head, detail);
  ui.latency.dataset.voiceToVoiceMs = String(Math.round(total));
}

// --- actions ----------------------------------------------------------------------

async function startCall() {
  if (phase === "connecting" || phase === "in-call") return;
  showError("");
  sandra.unlockAudio(); // synchronously inside the tap: iOS
  phase = "connecting";
  renderState();
  try {
    await sandra.startCall({ language });
    phase = "in-call";
    serverState = "listening";
  } catch (err) {
    phase = "idle";
    showError(linkMessage(err.code) ?? err.message);
  }
  renderState();
}

async function hangUp() {
  phase = "ended";
  serverState = "idle";
  renderState();
  await sandra.endCall();
  setMuted(false);
}

function setMuted(muted) {
  sandra.setMuted(muted);
  ui.mute.setAttribute("aria-pressed", String(muted));
  ui.mute.querySelector(".btn-label").textContent = muted ? t("unmute") : t("mute");
}

async function sendTyped(text) {
  const clean = text.trim();
  if (!clean) return;
  if (phase !== "in-call") {
    await startCall();
    if (phase !== "in-call") return;
  }
  const el = bubble("user");
  el.querySelector(".text").textContent = clean;
  el.classList.add("typed");
  try {
    const ack = await sandra.sendMessage(clean); // message:ack names the turn that answers it
    const entry = turn(ack.turn_id);
    entry.user = el;
    if (entry.sandra) ui.transcript.insertBefore(el, entry.sandra);
  } catch (err) {
    el.classList.add("failed");
    showError(err.message);
  }
}

// --- wiring -----------------------------------------------------------------------

const sandra = await SandraRealtime.initialize({ audioElement: ui.audio, language, token: guestLink.token });
const avatar = createAvatar($("#avatar"));
avatar.bind(sandra);
window.sandra = sandra;
window.SandraRealtime = SandraRealtime; // the guide's DevTools API: its static methods act on this page's call
window.sandraAvatar = avatar;

sandra.on("state", (msg) => {
  serverState = msg.state;
  renderState();
});
sandra.on("transcript", onTranscript);
sandra.on("response:delta", onDelta);
sandra.on("response:done", onDone);
sandra.on("barge-in", (msg) => {
  if (!msg.tentative) markInterrupted(currentReply(), null); // a tentative one may resume
});
sandra.on("metrics", onMetrics);
sandra.on("tool", (msg) => {
  if (msg.name === "notify_host") systemNote(t("notified"));
});
sandra.on("call:started", (msg) => {
  if (phase === "idle" || phase === "ended") { phase = "in-call"; renderState(); } // started from the console
  if (msg.language && msg.language !== language) {
    language = msg.language;
    applyLanguage();
  }
});
sandra.on("call:ended", () => {
  if (phase === "in-call" || phase === "reconnecting") phase = "ended";
  serverState = "idle";
  renderState();
});
sandra.on("reconnecting", () => {
  phase = "reconnecting";
  renderState();
});
sandra.on("reconnected", () => {
  showError("");
  phase = "in-call";
  renderState();
});
sandra.on("error", (msg) => showError(msg.message ?? "Something went wrong."));

ui.call.addEventListener("click", startCall);
// If the browser refused to start Sandra's audio (autoplay), any later tap on the page
// unlocks it: iOS Safari and Firefox only let audio start inside a user gesture.
document.addEventListener("pointerdown", () => {
  if (sandra.callActive && (ui.audio.paused || sandra.audioContext?.state !== "running")) sandra.unlockAudio();
}, { capture: true });
ui.hangup.addEventListener("click", hangUp);
ui.mute.addEventListener("click", () => setMuted(!sandra.muted));
ui.interrupt.addEventListener("click", () => {
  markInterrupted(currentReply(), null);
  sandra.bargeIn().catch((err) => showError(err.message));
});
ui.composer.addEventListener("submit", (event) => {
  event.preventDefault();
  const text = ui.text.value;
  ui.text.value = "";
  sendTyped(text);
});
for (const b of ui.langs) {
  b.addEventListener("click", () => {
    language = b.dataset.lang;
    localStorage.setItem("sandra.language", language);
    applyLanguage();
  });
}
window.addEventListener("pagehide", () => {
  // A reload keeps the conversation: the next Call in this tab resumes it (the server ends
  // the old connection when its heartbeat stops). The hang-up button really hangs up.
  if (sandra.callActive) sandra.suspend();
});

applyLanguage();
checkGuestLink();
document.body.dataset.ready = "true";

/** An expired or invalid guest link is told before the guest taps Call. */
async function checkGuestLink() {
  if (!guestLink.token) return;
  const response = await fetch("/api/ice", { headers: { Authorization: `Bearer ${guestLink.token}` } }).catch(() => null);
  if (!response || response.ok) return;
  const body = await response.json().catch(() => null);
  const message = linkMessage(body?.error?.code);
  if (message) {
    showError(message);
    ui.error.dataset.code = body.error.code;
  }
}
