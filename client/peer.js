// One WebRTC session with the server: an RTCPeerConnection with one sendrecv audio
// transceiver (the microphone) and the ordered `control` datachannel, set up with a single
// non-trickle offer/answer over HTTP. aiortc has no ICE restart, so a failed session is
// replaced by a new one rather than repaired.

import { SandraError } from "/control-socket.js";

const GATHER_TIMEOUT_MS = 3000;
const OPEN_TIMEOUT_MS = 10000;

export class PeerSession {
  /**
   * @param {object} o
   * @param {string} o.baseUrl  where the server is ("" for the page's own origin)
   * @param {RTCIceServer[]} o.iceServers
   * @param {MediaStreamTrack|null} o.micTrack  null: send nothing (the transceiver is still there)
   * @param {(stream: MediaStream) => void} o.onRemoteStream
   * @param {string} [o.token]  sent as a bearer token when the server requires one
   * @param {RTCIceTransportPolicy} [o.iceTransportPolicy]  "relay": TURN only
   * @param {string} [o.resumeToken]  continue that conversation (call:started's resume_token)
   */
  static async open({ baseUrl, iceServers, micTrack, onRemoteStream, token, iceTransportPolicy, resumeToken }) {
    const pc = new RTCPeerConnection({ iceServers, ...(iceTransportPolicy ? { iceTransportPolicy } : {}) });
    const session = new PeerSession(pc, baseUrl);
    const iceErrors = []; // TURN/STUN servers that refused us (issue 11: a clear error, not a timeout)
    pc.addEventListener("icecandidateerror", (event) => iceErrors.push(event));
    try {
      session.transceiver = pc.addTransceiver(micTrack ?? "audio", { direction: "sendrecv" });
      pc.addEventListener("track", (event) => {
        onRemoteStream(event.streams[0] ?? new MediaStream([event.track]));
      });
      session.channel = pc.createDataChannel("control", { ordered: true });
      await pc.setLocalDescription(await pc.createOffer());
      await iceGatheringComplete(pc);
      if (iceErrors.length && !/^a=candidate:/m.test(pc.localDescription.sdp)) throw relayError(iceErrors);
      const answer = await postOffer(baseUrl, pc.localDescription, token, resumeToken);
      session.id = answer.session_id;
      await pc.setRemoteDescription({ type: answer.type, sdp: answer.sdp });
      await channelOpen(session.channel, pc);
      return session;
    } catch (err) {
      session.close();
      throw err;
    }
  }

  constructor(pc, baseUrl) {
    this.pc = pc;
    this.baseUrl = baseUrl;
    this.id = null;
    this.channel = null;
    this.transceiver = null;
    this.closed = false;
  }

  /** Close the peer connection and tell the server to drop the session. Safe to call twice. */
  close({ hangUp = true } = {}) {
    if (this.closed) return;
    this.closed = true;
    this.pc.close();
    if (hangUp && this.id) {
      // keepalive: the request survives the page being closed.
      fetch(`${this.baseUrl}/api/sessions/${encodeURIComponent(this.id)}`, { method: "DELETE", keepalive: true }).catch(() => {});
    }
  }

  /** {audioChunksSent, audioChunksReceived, jitterBufferDelayMs, jitterBufferEmitted} from getStats. */
  async stats() {
    const out = { audioChunksSent: 0, audioChunksReceived: 0, jitterBufferDelay: 0, jitterBufferEmitted: 0, connected: false };
    if (this.closed) return out;
    const report = await this.pc.getStats();
    report.forEach((s) => {
      if (s.type === "outbound-rtp" && s.kind === "audio") out.audioChunksSent += s.packetsSent ?? 0;
      if (s.type === "inbound-rtp" && s.kind === "audio") {
        out.audioChunksReceived += s.packetsReceived ?? 0;
        out.jitterBufferDelay += s.jitterBufferDelay ?? 0;
        out.jitterBufferEmitted += s.jitterBufferEmittedCount ?? 0;
      }
    });
    return out;
  }
}

function iceGatheringComplete(pc) {
  if (pc.iceGatheringState === "complete") return Promise.resolve();
  return new Promise((resolve) => {
    // With a STUN/TURN server that does not answer, send what we have after a while.
    const timer = setTimeout(done, GATHER_TIMEOUT_MS);
    function done() {
      clearTimeout(timer);
      pc.removeEventListener("icegatheringstatechange", check);
      resolve();
    }
    function check() {
      if (pc.iceGatheringState === "complete") done();
    }
    pc.addEventListener("icegatheringstatechange", check);
  });
}

function relayError(errors) {
  const first = errors[0];
  const detail = [first.errorCode, first.errorText].filter(Boolean).join(" ");
  return new SandraError(
    "relay_failed",
    `The relay server (TURN) refused the connection${detail ? ` (${detail})` : ""}: its credentials are wrong or expired.`,
  );
}

/** The ICE servers (TURN with short-lived credentials) for this page, or null from a server without /api/ice. */
export async function fetchIceServers(baseUrl, token) {
  const headers = token ? { Authorization: `Bearer ${token}` } : {};
  let response;
  try {
    response = await fetch(`${baseUrl}/api/ice`, { headers, cache: "no-store" });
  } catch (err) {
    throw new SandraError("network", "Sandra's server cannot be reached. Check your connection and try again.", { cause: err });
  }
  if (response.status === 404) return null;
  let body = null;
  try {
    body = await response.json();
  } catch {
    // reported below
  }
  if (!response.ok) {
    throw new SandraError(body?.error?.code ?? `http_${response.status}`, body?.error?.message ?? `Sandra's server answered ${response.status}.`, { source: "server" });
  }
  return Array.isArray(body?.iceServers) ? body.iceServers : null;
}

async function postOffer(baseUrl, offer, token, resumeToken) {
  const headers = { "Content-Type": "application/json" };
  if (token) headers.Authorization = `Bearer ${token}`;
  let response;
  try {
    response = await fetch(`${baseUrl}/api/offer`, {
      method: "POST",
      headers,
      body: JSON.stringify({ sdp: offer.sdp, type: offer.type, ...(resumeToken ? { resume_token: resumeToken } : {}) }),
    });
  } catch (err) {
    throw new SandraError("network", "Sandra's server cannot be reached. Check your connection and try again.", { cause: err });
  }
  let body = null;
  try {
    body = await response.json();
  } catch {
    // fall through: reported below
  }
  if (!response.ok) {
    const code = body?.error?.code ?? (response.status === 503 ? "busy" : `http_${response.status}`);
    const message = body?.error?.message ?? `Sandra's server answered ${response.status}.`;
    throw new SandraError(code, message, { source: "server" });
  }
  if (!body || typeof body.sdp !== "string" || body.type !== "answer") {
    throw new SandraError("bad_answer", "Sandra's server sent an answer that is not an SDP answer.", { source: "server" });
  }
  return body;
}

function channelOpen(channel, pc) {
  if (channel.readyState === "open") return Promise.resolve();
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => fail("The connection to Sandra timed out."), OPEN_TIMEOUT_MS);
    function cleanup() {
      clearTimeout(timer);
      channel.removeEventListener("open", opened);
      pc.removeEventListener("connectionstatechange", changed);
    }
    function opened() {
      cleanup();
      resolve();
    }
    function fail(message) {
      cleanup();
      reject(new SandraError("connect_failed", message));
    }
    function changed() {
      if (pc.connectionState === "failed") fail("The audio connection to Sandra failed (network or firewall).");
    }
    channel.addEventListener("open", opened);
    pc.addEventListener("connectionstatechange", changed);
  });
}
