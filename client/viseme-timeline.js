// The viseme timeline: which mouth shape the caller should see at a given moment.
//
// Pure: no clock reads, no DOM. Times are performance.now() milliseconds handed in.
// A `viseme` message says: viseme v starts at `t_ms` into the reply's audio, and the audio
// at `playhead_ms` was leaving the server when the message was sent. The caller hears
// reply position p at about  receivedAt + (p - playhead_ms) + playoutDelay,  so the
// reply's position 0 is heard at  anchor = receivedAt - playhead_ms + playoutDelay.

/** Mouth parameters per Oculus viseme: open (jaw), wide (lip corners), round (pucker), 0..1. */
export const SHAPES = [
  { open: 0.0, wide: 0.5, round: 0.0 }, // 0 sil
  { open: 0.0, wide: 0.42, round: 0.15 }, // 1 PP
  { open: 0.1, wide: 0.55, round: 0.0 }, // 2 FF
  { open: 0.2, wide: 0.55, round: 0.0 }, // 3 TH
  { open: 0.28, wide: 0.55, round: 0.0 }, // 4 DD
  { open: 0.34, wide: 0.5, round: 0.05 }, // 5 kk
  { open: 0.26, wide: 0.35, round: 0.55 }, // 6 CH
  { open: 0.14, wide: 0.72, round: 0.0 }, // 7 SS
  { open: 0.22, wide: 0.55, round: 0.0 }, // 8 nn
  { open: 0.3, wide: 0.4, round: 0.45 }, // 9 RR
  { open: 0.9, wide: 0.58, round: 0.0 }, // 10 aa
  { open: 0.58, wide: 0.72, round: 0.0 }, // 11 E
  { open: 0.4, wide: 0.78, round: 0.0 }, // 12 ih
  { open: 0.7, wide: 0.3, round: 0.75 }, // 13 oh
  { open: 0.38, wide: 0.18, round: 1.0 }, // 14 ou
];

export const NAMES = ["sil", "PP", "FF", "TH", "DD", "kk", "CH", "SS", "nn", "RR", "aa", "E", "ih", "oh", "ou"];

export const CLOSED = SHAPES[0];

// Fraction of a viseme's duration over which it blends into the next (coarticulation).
const BLEND = 0.4;
// How far a new message's anchor may pull the current one (jitter in message arrival).
const ANCHOR_GAIN = 0.25;

export class VisemeTimeline {
  turnId = null;
  anchor = null;
  paused = false;
  #visemes = []; // {id, start, end} in reply-audio ms, sorted by start
  #ended = new Set(); // turns cut short: their late messages are ignored

  /** Add one `viseme` message received at `receivedAt` (ms) with the current playout delay (ms). */
  add(message, { receivedAt, delayMs = 0 }) {
    const list = Array.isArray(message.visemes) ? message.visemes : [];
    if (this.#ended.has(message.turn_id)) return;
    if (message.turn_id !== this.turnId) {
      this.clear();
      this.turnId = message.turn_id;
    }
    const playhead = Number.isFinite(message.playhead_ms) ? message.playhead_ms : 0;
    const anchor = receivedAt - playhead + delayMs;
    if (!this.paused) {
      this.anchor = this.anchor === null ? anchor : this.anchor + (anchor - this.anchor) * ANCHOR_GAIN;
    }
    for (const v of list) {
      if (!Number.isFinite(v?.t_ms) || !Number.isInteger(v?.id) || v.id < 0 || v.id >= SHAPES.length) continue;
      const dur = Number.isFinite(v.dur_ms) && v.dur_ms > 0 ? v.dur_ms : 80;
      this.#visemes.push({ id: v.id, start: v.t_ms, end: v.t_ms + dur });
    }
    this.#visemes.sort((a, b) => a.start - b.start);
  }

  /** A tentative barge-in paused Sandra: the mouth closes until `resume`. */
  pause() {
    this.paused = true;
  }

  /**
   * Sandra resumed (a `resume` message received at `receivedAt`): reply position
   * `playheadMs` is heard after the playout delay, and the timeline goes on from there.
   */
  resume({ receivedAt, playheadMs, delayMs = 0 }) {
    this.paused = false;
    if (Number.isFinite(playheadMs)) this.anchor = receivedAt - playheadMs + delayMs;
  }

  /** Drop everything: the mouth closes. With `endTurn` (barge-in) later messages of this turn are ignored. */
  clear({ endTurn = false, turnId = this.turnId } = {}) {
    this.#visemes = [];
    this.anchor = null;
    this.paused = false;
    if (endTurn && turnId != null) {
      this.#ended.add(turnId);
      if (this.#ended.size > 32) this.#ended.delete(this.#ended.values().next().value);
    }
  }

  /** True while a viseme is playing or still to come at `now`. */
  isActive(now) {
    if (this.anchor === null || this.#visemes.length === 0) return false;
    return this.#visemes[this.#visemes.length - 1].end > now - this.anchor;
  }

  /** The viseme id playing at `now` (0 when none). */
  visemeAt(now) {
    const found = this.#find(now);
    return found ? found.current.id : 0;
  }

  /** Target mouth shape at `now`: the playing viseme blended into the next one near its end. */
  shapeAt(now) {
    const found = this.#find(now);
    if (!found) return { ...CLOSED, id: 0 };
    const { current, next, t } = found;
    const a = SHAPES[current.id];
    const len = current.end - current.start;
    const blendFrom = current.end - len * BLEND;
    let k = 0;
    if (t > blendFrom && len > 0) k = smoothstep((t - blendFrom) / (len * BLEND));
    // Into the next viseme if it follows closely, else towards a closed mouth.
    const b = next && next.start - current.end < 60 ? SHAPES[next.id] : CLOSED;
    return { open: lerp(a.open, b.open, k), wide: lerp(a.wide, b.wide, k), round: lerp(a.round, b.round, k), id: current.id };
  }

  /** Forget visemes that ended before `now` (keeps the list short during long replies). */
  prune(now) {
    if (this.anchor === null) return;
    const t = now - this.anchor;
    let i = 0;
    while (i < this.#visemes.length - 1 && this.#visemes[i + 1].end < t) i++;
    if (i > 0) this.#visemes.splice(0, i);
  }

  get size() {
    return this.#visemes.length;
  }

  #find(now) {
    if (this.anchor === null || this.paused) return null;
    const t = now - this.anchor;
    const list = this.#visemes;
    for (let i = 0; i < list.length; i++) {
      const v = list[i];
      if (v.start > t) return null;
      if (t < v.end) return { current: v, next: list[i + 1], t };
    }
    return null;
  }
}

export function lerp(a, b, k) {
  return a + (b - a) * k;
}

function smoothstep(x) {
  const c = Math.min(1, Math.max(0, x));
  return c * c * (3 - 2 * c);
}
