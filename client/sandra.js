// SandraRealtime: the browser side of a call with Sandra.
//
//   const sandra = await SandraRealtime.initialize({ language: "es" });
//   sandra.on("response:delta", (msg) => ...);   // every server message type, plus the client events below
//   await sandra.startCall();                     // microphone, connect, Sandra greets
//   sandra.sendMessage("¿A qué hora es el check-in?");
//   sandra.bargeIn();
//   await sandra.endCall();
//
// Client events: "connection" {state}, "reconnecting" {attempt}, "reconnected" {session_id},
// "remote-stream" {stream}, "mute" {muted}, "latency" {latency}, "traffic" {direction, message, at},
// "error" {code, message, source}. Server messages are re-dispatched under their own type with
// (message, {receivedAt}). The static methods act on the instance made by the last initialize(),
// as in the original deployment guide (`SandraRealtime.startCall()`).

import { ControlSocket, SandraError } from "/control-socket.js";
import { Emitter } from "/emitter.js";
import { PeerSession, fetchIceServers } from "/peer.js";

export { SandraError };

const DEFAULTS = {
  baseUrl: "",
  language: "en",
  token: undefined,
  audioElement: null,
  iceServers: [],
  fetchIceServers: true, // ask the server (GET /api/ice) for TURN credentials before each offer
  iceTransportPolicy: undefined, // "relay": TURN only
  microphone: true,
  pingIntervalMs: 1000,
  deadAfterMs: 5000,
  requestTimeoutMs: 8000,
  statsIntervalMs: 1000,
  reconnectAttempts: 3,
};

// Firefox's AudioContext.outputLatency asks the audio backend synchronously; with Firefox
// ESR 153 on PulseAudio it froze the page mid-call (until the slow-script watchdog) in two
// runs out of three, never once it was not read. There baseLatency alone is used.
const OUTPUT_LATENCY_MAY_BLOCK = /\bFirefox\//.test(globalThis.navigator?.userAgent ?? "");

const MIC_CONSTRAINTS = { echoCancellation: true, noiseSuppression: true, autoGainControl: true, channelCount: 1 };

export class SandraRealtime extends Emitter {
  static instance = null;

  /** Make (and remember) a ready SandraRealtime. Nothing is asked of the user yet.
   * With no options and one already made (the page's), returns that one: the guide's
   * DevTools sequence shares the page's call instead of opening a second. */
  static async initialize(options = {}) {
    if (SandraRealtime.instance && Object.keys(options).length === 0) return SandraRealtime.instance;
    const sandra = new SandraRealtime(options);
    await sandra.#init();
    SandraRealtime.instance = sandra;
    return sandra;
  }

  static #current() {
    if (!SandraRealtime.instance) throw new SandraError("not_initialized", "Call SandraRealtime.initialize() first.");
    return SandraRealtime.instance;
  }
  static connect(...a) { return SandraRealtime.#current().connect(...a); }
  static startCall(...a) { return SandraRealtime.#current().startCall(...a); }
  static sendMessage(...a) { return SandraRealtime.#current().sendMessage(...a); }
  static bargeIn(...a) { return SandraRealtime.#current().bargeIn(...a); }
  static endCall(...a) { return SandraRealtime.#current().endCall(...a); }
  static getStatus() { return SandraRealtime.#current().getStatus(); }
  static getMetrics() { return SandraRealtime.#current().getMetrics(); }

  options;
  audioElement;
  audioContext = null;
  remoteStream = null;
  sessionId = null;
  language;
  callActive = false;
  muted = false;
  avatar = null; // set by an avatar that binds itself (avatar.enabled / animating in getStatus)

  #systemReady = false;
  #peer = null;
  #socket = null;
  #mic = null;
  #connecting = null;
  #starting = null;
  #hangingUp = false;
  #reconnecting = false;
  #statsTimer = null;
  #stats = { audioChunksSent: 0, audioChunksReceived: 0 };
  #jitter = { delay: 0, emitted: 0, ms: 0 };
  #counts = { sent: 0, received: 0 }; // from sockets already closed
  // call:started's resume_token: a reconnect (or a reload, via sessionStorage) continues the
  // conversation on any server worker instead of starting over (issue 12).
  #resumeToken = resumeStore.get();

  constructor(options = {}) {
    super();
    this.options = { ...DEFAULTS, ...options };
    this.language = this.options.language;
  }

  async #init() {
    if (typeof RTCPeerConnection === "undefined") {
      throw new SandraError("unsupported", "This browser cannot make voice calls (no WebRTC).");
    }
    this.audioElement = this.options.audioElement ?? Object.assign(document.createElement("audio"), { autoplay: true });
    this.audioElement.autoplay = true;
    this.audioElement.setAttribute("playsinline", "");
    const Ctx = window.AudioContext ?? window.webkitAudioContext;
    this.audioContext = Ctx ? new Ctx({ latencyHint: "interactive" }) : null;
    this.#systemReady = true;
  }

  // --- public API -----------------------------------------------------------------

  /**
   * Unlock audio output. Call it synchronously from a tap/click handler (iOS Safari only
   * lets audio start inside a user gesture); startCall() does it itself first thing.
   */
  unlockAudio() {
    const ctx = this.audioContext;
    if (ctx && ctx.state !== "running") {
      ctx.resume().catch(() => {});
      const buffer = ctx.createBuffer(1, 1, ctx.sampleRate); // one silent sample wakes iOS up
      const source = ctx.createBufferSource();
      source.buffer = buffer;
      source.connect(ctx.destination);
      source.start();
    }
    this.audioElement.play?.().catch(() => {});
  }

  /** Microphone, WebRTC session, control channel, auth. Resolves once authenticated. */
  connect() {
    if (this.#socket?.authenticated && this.#peer && !this.#peer.closed) return Promise.resolve();
    this.#connecting ??= this.#connect().finally(() => {
      this.#connecting = null;
    });
    return this.#connecting;
  }

  /** Start a call: Sandra greets in `language` ("en" | "es"). Resolves with call:started. */
  startCall({ language } = {}) {
    this.unlockAudio();
    if (language) this.language = language;
    this.#starting ??= this.#startCall().finally(() => {
      this.#starting = null;
    });
    return this.#starting;
  }

  async #startCall() {
    await this.connect();
    const started = await this.#socket.request("call:start", { language: this.language }, { timeout: this.options.requestTimeoutMs });
    this.callActive = true;
    if (started.language) this.language = started.language;
    this.#keepResume(started.resume_token);
    return started;
  }

  /** Type a message to Sandra. Resolves with message:ack: its `turn_id` is the turn that
   * answers it. Sent right after an unawaited startCall() (the guide's console sequence),
   * it waits for the call to start first. */
  sendMessage(text) {
    const clean = String(text ?? "").trim();
    if (!clean) throw new SandraError("empty", "Type a message first.");
    const send = () =>
      this.#requireSocket().request("message", { text: clean }, { timeout: this.options.requestTimeoutMs });
    return this.#starting ? this.#starting.then(send) : send();
  }

  /** Stop Sandra talking now. Resolves with barge-in:ack. */
  bargeIn() {
    this.dispatch("barge-in:local", {});
    return this.#requireSocket().request("barge-in", {}, { timeout: this.options.requestTimeoutMs });
  }

  /**
   * Leave without hanging up (the page is being reloaded or left): the connection closes,
   * and while the session lasts the next startCall() in this tab continues the same
   * conversation (call:started {resumed: true}, no second greeting). Without a resume
   * token this is endCall().
   */
  suspend() {
    if (!this.#resumeToken) return this.endCall();
    this.#teardown({ hangUp: false });
    this.#stopMic();
    return Promise.resolve();
  }

  /** Hang up and release the microphone. Safe to call at any time, twice. */
  async endCall() {
    this.#hangingUp = true;
    try {
      if (this.#socket?.connected && this.callActive) {
        const ended = this.waitFor("call:ended", { timeout: 1500 }).catch(() => {});
        this.#socket.emit("call:end", {});
        await ended;
      }
    } finally {
      const wasActive = this.callActive;
      this.#keepResume(null);
      this.#teardown();
      this.#stopMic();
      this.#hangingUp = false;
      if (wasActive) this.dispatch("call:ended", { type: "call:ended", reason: "client" }, { receivedAt: performance.now() });
    }
  }

  /** Send any text on the control channel (debug console). */
  sendRaw(text) {
    return this.#requireSocket().sendRaw(text);
  }

  /** Send a typed client message; with `request: true` wait for the answer echoing its id. */
  send(type, data = {}, { request = false, timeout } = {}) {
    const socket = this.#requireSocket();
    return request ? socket.request(type, data, { timeout: timeout ?? this.options.requestTimeoutMs }) : socket.emit(type, data);
  }

  setMuted(muted) {
    this.muted = Boolean(muted);
    if (this.#mic) for (const track of this.#mic.getAudioTracks()) track.enabled = !this.muted;
    this.dispatch("mute", { muted: this.muted });
  }

  /** Delay from "this audio left the server" to "the caller hears it" (jitter buffer + output), in ms. */
  playoutDelayMs() {
    const ctx = this.audioContext;
    const outputS = ctx ? ((OUTPUT_LATENCY_MAY_BLOCK ? 0 : ctx.outputLatency) || ctx.baseLatency || 0) : 0;
    return this.#jitter.ms + outputS * 1000;
  }

  getStatus() {
    const socket = this.#socket;
    const pcState = this.#peer?.pc.connectionState;
    const track = this.remoteStream?.getAudioTracks()[0];
    return {
      systemReady: this.#systemReady,
      callActive: this.callActive,
      socket: {
        connected: Boolean(socket?.connected),
        authenticated: Boolean(socket?.authenticated),
        latency: socket?.latency ?? null,
      },
      webrtc: { enabled: typeof RTCPeerConnection !== "undefined", connected: pcState === "connected" },
      vad: { enabled: Boolean(this.#mic), analyzing: Boolean(this.#mic) && this.callActive && !this.muted },
      avatar: { enabled: Boolean(this.avatar), animating: Boolean(this.avatar?.isAnimating()) },
      audio: { streamingEnabled: Boolean(track && track.readyState === "live" && pcState === "connected") },
    };
  }

  getMetrics() {
    return {
      messagesSent: this.#counts.sent + (this.#socket?.messagesSent ?? 0),
      messagesReceived: this.#counts.received + (this.#socket?.messagesReceived ?? 0),
      audioChunksSent: this.#stats.audioChunksSent,
      audioChunksReceived: this.#stats.audioChunksReceived,
      latency: this.#socket?.latency ?? null,
    };
  }

  /** Read getStats now (getMetrics() reports the last reading, taken every second). */
  async refreshStats() {
    const peer = this.#peer;
    if (!peer || peer.closed) return this.getMetrics();
    const s = await peer.stats();
    // Packet counters restart with each new peer connection: keep them monotonic.
    this.#stats.audioChunksSent = (this.#stats.baseSent ?? 0) + s.audioChunksSent;
    this.#stats.audioChunksReceived = (this.#stats.baseReceived ?? 0) + s.audioChunksReceived;
    const dEmitted = s.jitterBufferEmitted - this.#jitter.emitted;
    const dDelay = s.jitterBufferDelay - this.#jitter.delay;
    if (dEmitted > 0) this.#jitter.ms = (dDelay / dEmitted) * 1000;
    else if (s.jitterBufferEmitted > 0) this.#jitter.ms = (s.jitterBufferDelay / s.jitterBufferEmitted) * 1000;
    this.#jitter.delay = s.jitterBufferDelay;
    this.#jitter.emitted = s.jitterBufferEmitted;
    return this.getMetrics();
  }

  // --- connection -----------------------------------------------------------------

  async #connect() {
    this.dispatch("connection", { state: "connecting" });
    try {
      if (this.options.microphone && !this.#mic) this.#mic = await openMicrophone();
      this.setMuted(this.muted);
      await this.#openSession({ resume: true });
    } catch (err) {
      this.dispatch("connection", { state: "failed" });
      this.#teardown();
      this.#stopMic();
      throw err;
    }
  }

  async #openSession({ resume = false } = {}) {
    const fetched = this.options.fetchIceServers ? await fetchIceServers(this.options.baseUrl, this.options.token) : null;
    const open = (resumeToken) => PeerSession.open({
      baseUrl: this.options.baseUrl,
      iceServers: [...this.options.iceServers, ...(fetched ?? [])],
      iceTransportPolicy: this.options.iceTransportPolicy,
      token: this.options.token,
      micTrack: this.#mic?.getAudioTracks()[0] ?? null,
      onRemoteStream: (stream) => this.#attachRemote(stream),
      resumeToken,
    });
    const resumeToken = resume ? this.#resumeToken : null;
    try {
      this.#peer = await open(resumeToken);
    } catch (err) {
      if (!resumeToken || err.code !== "invalid_resume_token") throw err;
      this.#keepResume(null); // that conversation is over: a fresh call instead
      this.#peer = await open(null);
    }
    this.sessionId = this.#peer.id;
    const peer = this.#peer;
    peer.pc.addEventListener("connectionstatechange", () => {
      if (peer !== this.#peer) return;
      this.dispatch("connection", { state: peer.pc.connectionState });
      if (peer.pc.connectionState === "failed") this.#lost("failed");
    });
    const socket = new ControlSocket(peer.channel);
    this.#socket = socket;
    socket.onTraffic((t) => this.dispatch("traffic", t));
    socket.on("*", (type, message, meta) => {
      if (type === "close") {
        if (socket === this.#socket) this.#lost("closed");
        return;
      }
      if (type === "dead") {
        if (socket === this.#socket) this.#lost("no pong");
        return;
      }
      if (type === "call:ended") {
        this.callActive = false;
        // The conversation is over only when the call really ended (the server's FINAL_REASONS);
        // after a lost connection, a restart ("server_restarting") or a take-over it can go on.
        if (FINAL_REASONS.has(message.reason)) this.#keepResume(null);
      }
      if (type === "error" && message.source === undefined) message = { ...message, source: "server" };
      this.dispatch(type, message, meta);
    });
    socket.startHeartbeat({ interval: this.options.pingIntervalMs, deadAfter: this.options.deadAfterMs });
    this.#startStats();
    const auth = await socket.request("auth", this.options.token ? { token: this.options.token } : {}, { timeout: this.options.requestTimeoutMs });
    if (auth.session_id) this.sessionId = auth.session_id;
    this.dispatch("connection", { state: "connected", session_id: this.sessionId });
  }

  #attachRemote(stream) {
    this.remoteStream = stream;
    this.audioElement.srcObject = stream;
    this.audioElement.play?.().catch(() => {
      // Autoplay refused (no gesture yet): the page's next tap calls unlockAudio().
    });
    this.dispatch("remote-stream", { stream });
  }

  /** The session died under us: replace it (aiortc cannot ICE-restart), then resume the call. */
  async #lost(why) {
    if (this.#hangingUp || this.#reconnecting || !this.#peer) return;
    const resumeCall = this.callActive;
    if (!resumeCall) {
      // No call to save (the server ended it, or we were only connected): just let go.
      this.#teardown({ hangUp: true });
      this.dispatch("connection", { state: "closed", reason: why });
      return;
    }
    this.#reconnecting = true;
    this.#teardown({ hangUp: !this.#resumeToken }); // resumable: the server keeps the conversation
    try {
      for (let attempt = 1; attempt <= this.options.reconnectAttempts; attempt++) {
        this.dispatch("reconnecting", { attempt, reason: why });
        await new Promise((r) => setTimeout(r, 500 * 2 ** (attempt - 1)));
        if (this.#hangingUp) return;
        try {
          await this.#openSession({ resume: true });
          if (resumeCall) {
            await this.#socket.request("call:start", { language: this.language }, { timeout: this.options.requestTimeoutMs });
            this.callActive = true;
          }
          this.dispatch("reconnected", { session_id: this.sessionId, attempt });
          return;
        } catch (err) {
          this.#teardown({ hangUp: !this.#resumeToken });
          if (attempt === this.options.reconnectAttempts) {
            const wasActive = this.callActive || resumeCall;
            this.callActive = false;
            this.#stopMic();
            this.dispatch("error", { type: "error", code: "reconnect_failed", message: `Lost the connection to Sandra and could not get it back (${err.message})`, source: "client" });
            if (wasActive) this.dispatch("call:ended", { type: "call:ended", reason: "connection_lost" }, { receivedAt: performance.now() });
          }
        }
      }
    } finally {
      this.#reconnecting = false;
    }
  }

  #keepResume(token) {
    this.#resumeToken = token ?? null;
    resumeStore.set(this.#resumeToken);
  }

  #teardown({ hangUp = true } = {}) {
    clearInterval(this.#statsTimer);
    this.#statsTimer = null;
    if (this.#socket) {
      this.#counts.sent += this.#socket.messagesSent;
      this.#counts.received += this.#socket.messagesReceived;
      const socket = this.#socket;
      this.#socket = null;
      socket.close();
    }
    if (this.#peer) {
      this.#stats.baseSent = this.#stats.audioChunksSent;
      this.#stats.baseReceived = this.#stats.audioChunksReceived;
      this.#jitter = { delay: 0, emitted: 0, ms: this.#jitter.ms };
      this.#peer.close({ hangUp });
      this.#peer = null;
    }
    this.callActive = false;
    if (this.audioElement) this.audioElement.srcObject = null;
    this.remoteStream = null;
  }

  #startStats() {
    clearInterval(this.#statsTimer);
    this.#statsTimer = setInterval(() => this.refreshStats().catch(() => {}), this.options.statsIntervalMs);
  }

  #stopMic() {
    this.#mic?.getTracks().forEach((t) => t.stop());
    this.#mic = null;
  }

  #requireSocket() {
    if (!this.#socket?.connected) throw new SandraError("not_connected", "Not connected to Sandra: start a call first.");
    return this.#socket;
  }
}

/** The microphone with echo cancellation, noise suppression and gain control, or a clear error. */
export async function openMicrophone() {
  if (!navigator.mediaDevices?.getUserMedia) {
    throw new SandraError(
      "insecure_context",
      window.isSecureContext === false
        ? "The microphone needs a secure page: open Sandra over https:// (or on localhost)."
        : "This browser cannot use a microphone.",
    );
  }
  try {
    return await navigator.mediaDevices.getUserMedia({ audio: MIC_CONSTRAINTS, video: false });
  } catch (err) {
    switch (err?.name) {
      case "NotAllowedError":
      case "SecurityError":
        throw new SandraError("mic_denied", "Microphone access was blocked. Allow the microphone for this page in your browser settings, then try again.", { cause: err });
      case "NotFoundError":
      case "OverconstrainedError":
        throw new SandraError("no_mic", "No microphone was found. Connect one (or use the text box) and try again.", { cause: err });
      case "NotReadableError":
      case "AbortError":
        throw new SandraError("mic_busy", "The microphone is in use by another app. Close it and try again.", { cause: err });
      default:
        throw new SandraError("mic_error", `The microphone could not be opened (${err?.message ?? err}).`, { cause: err });
    }
  }
}

/** call:ended reasons after which a conversation cannot be resumed (server/cluster FINAL_REASONS). */
const FINAL_REASONS = new Set(["caller hung up", "hung up by the server API", "session ttl"]);

// The resume token survives a reload of the page (not the tab: sessionStorage).
const resumeStore = {
  get() {
    try {
      return globalThis.sessionStorage?.getItem("sandra.resume") ?? null;
    } catch {
      return null;
    }
  },
  set(token) {
    try {
      if (token) globalThis.sessionStorage?.setItem("sandra.resume", token);
      else globalThis.sessionStorage?.removeItem("sandra.resume");
    } catch {
      // storage refused (private mode): resume within this page only
    }
  },
};
