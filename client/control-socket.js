// A Socket-like wrapper around the `control` RTCDataChannel.
//
//   socket.on("transcript", (msg, meta) => ...)   // a server message; meta.receivedAt is performance.now()
//   socket.emit("message", { text })              // send a client message
//   await socket.request("call:start", { language: "es" })  // resolves with the answer echoing our id
//
// It counts messages both ways, pings every second for latency and liveness, and reports
// each message to traffic listeners (the debug console's log).

import { Emitter } from "/emitter.js";

export class SandraError extends Error {
  constructor(code, message, { source = "client", cause } = {}) {
    super(message, cause ? { cause } : undefined);
    this.name = "SandraError";
    this.code = code;
    this.source = source;
  }
}

let nextId = 0;

export class ControlSocket extends Emitter {
  #channel;
  #pending = new Map();
  #traffic = new Set();
  #heartbeat = null;
  #lastPongAt = 0;
  #closeDispatched = false;

  messagesSent = 0;
  messagesReceived = 0;
  /** Round-trip time of the last ping, in ms (null before the first pong). */
  latency = null;
  authenticated = false;

  constructor(channel) {
    super();
    this.#channel = channel;
    channel.addEventListener("message", (event) => this.#receive(event.data));
    channel.addEventListener("close", () => this.#closed());
  }

  get connected() {
    return this.#channel.readyState === "open";
  }

  /** Subscribe to every message in both directions: fn({direction: "in"|"out", message, at}). */
  onTraffic(fn) {
    this.#traffic.add(fn);
    return () => this.#traffic.delete(fn);
  }

  /** Send a client message. Returns the message as sent. */
  emit(type, data = {}) {
    return this.sendRaw(JSON.stringify({ ...data, type }));
  }

  /** Send text as it is (the debug console uses this to send malformed messages on purpose). */
  sendRaw(text) {
    if (!this.connected) throw new SandraError("not_connected", "The connection to Sandra is not open.");
    this.#channel.send(text);
    this.messagesSent += 1;
    let message;
    try {
      message = JSON.parse(text);
    } catch {
      message = { raw: text };
    }
    this.#report("out", message);
    return message;
  }

  /** Send a message with a fresh id and resolve with the server's answer to it (reject on `error`). */
  request(type, data = {}, { timeout = 5000 } = {}) {
    const id = `c${++nextId}`;
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        this.#pending.delete(id);
        reject(new SandraError("timeout", `Sandra did not answer '${type}' within ${timeout} ms.`));
      }, timeout);
      this.#pending.set(id, { resolve, reject, timer });
      try {
        this.emit(type, { ...data, id });
      } catch (err) {
        clearTimeout(timer);
        this.#pending.delete(id);
        reject(err);
      }
    });
  }

  /** Ping every `interval` ms; dispatches "dead" when no pong came for `deadAfter` ms. */
  startHeartbeat({ interval = 1000, deadAfter = 5000 } = {}) {
    this.stopHeartbeat();
    this.#lastPongAt = performance.now();
    const beat = () => {
      if (!this.connected) return;
      if (performance.now() - this.#lastPongAt > deadAfter) {
        this.stopHeartbeat();
        this.dispatch("dead", { silentMs: performance.now() - this.#lastPongAt });
        return;
      }
      this.emit("ping", { t: performance.now() });
    };
    beat();
    this.#heartbeat = setInterval(beat, interval);
  }

  stopHeartbeat() {
    clearInterval(this.#heartbeat);
    this.#heartbeat = null;
  }

  close() {
    this.stopHeartbeat();
    if (this.#channel.readyState !== "closed") this.#channel.close();
    this.#closed();
  }

  #receive(data) {
    const receivedAt = performance.now();
    this.messagesReceived += 1;
    let message;
    try {
      message = JSON.parse(data);
    } catch {
      this.#report("in", { raw: String(data) });
      this.dispatch("error", { type: "error", code: "bad_json", message: "Sandra sent a message that is not JSON." });
      return;
    }
    if (message === null || typeof message !== "object" || typeof message.type !== "string") {
      this.#report("in", { raw: String(data) });
      return;
    }
    this.#report("in", message, receivedAt);
    if (message.type === "pong") {
      this.#lastPongAt = receivedAt;
      if (typeof message.t === "number") {
        this.latency = Math.round(Math.max(0, receivedAt - message.t) * 10) / 10;
        this.dispatch("latency", { latency: this.latency });
      }
    }
    if (message.type === "auth:ok") this.authenticated = true;
    const waiting = message.id != null ? this.#pending.get(String(message.id)) : undefined;
    if (waiting) {
      this.#pending.delete(String(message.id));
      clearTimeout(waiting.timer);
      if (message.type === "error") {
        waiting.reject(new SandraError(message.code ?? "error", message.message ?? "Sandra refused the request.", { source: "server" }));
      } else {
        waiting.resolve(message);
      }
    }
    this.dispatch(message.type, message, { receivedAt });
  }

  #closed() {
    this.stopHeartbeat();
    this.authenticated = false;
    for (const [id, waiting] of this.#pending) {
      clearTimeout(waiting.timer);
      waiting.reject(new SandraError("closed", "The connection to Sandra closed."));
      this.#pending.delete(id);
    }
    if (!this.#closeDispatched) {
      this.#closeDispatched = true;
      this.dispatch("close", {});
    }
  }

  #report(direction, message, at = performance.now()) {
    for (const fn of this.#traffic) {
      try {
        fn({ direction, message, at });
      } catch (err) {
        reportError(err);
      }
    }
  }
}
