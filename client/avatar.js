// Sandra's face: an SVG whose mouth follows the viseme timeline at display refresh rate.
//
//   const avatar = createAvatar(container);   // draws the face, starts the animation loop
//   avatar.bind(sandra);                        // visemes, barge-in, hang-up from a SandraRealtime
//   avatar.mouthOpenness(); avatar.currentViseme(); avatar.isAnimating();
//
// The mouth eases towards the timeline's target shape (time constant SMOOTH_MS) so shapes
// blend; on a barge-in it snaps shut. The eyes blink every few seconds while Sandra is not
// speaking.

import { CLOSED, NAMES, VisemeTimeline, lerp } from "/viseme-timeline.js";

const SVG_NS = "http://www.w3.org/2000/svg";
const SMOOTH_MS = 45;
const BLINK_MS = 170;
const MOUTH = { cx: 100, cy: 141 };

const FACE_SVG = `
<svg viewBox="0 0 200 200" role="img" aria-label="Sandra" xmlns="${SVG_NS}">
  <defs>
    <radialGradient id="av-bg" cx="50%" cy="38%" r="70%">
      <stop offset="0%" stop-color="#ffe3c4"/>
      <stop offset="100%" stop-color="#f2a86b"/>
    </radialGradient>
    <linearGradient id="av-skin" x1="0" y1="0" x2="0" y2="1">
      <stop offset="0%" stop-color="#f6cfae"/>
      <stop offset="100%" stop-color="#e9b48f"/>
    </linearGradient>
    <clipPath id="av-circle"><circle cx="100" cy="100" r="100"/></clipPath>
    <clipPath id="av-mouth-clip"><path class="av-inner-clip" d=""/></clipPath>
  </defs>
  <g clip-path="url(#av-circle)">
    <rect width="200" height="200" fill="url(#av-bg)"/>
    <circle cx="160" cy="42" r="16" fill="#fff4e0" opacity=".55"/>
    <!-- hair, back -->
    <path d="M46 104 C38 52 70 26 102 26 C138 26 166 52 156 110 C154 140 150 160 146 176 L56 176 C50 156 47 132 46 104 Z" fill="#3b2419"/>
    <!-- shoulders: a blouse in Valencian-tile blue -->
    <path d="M30 200 C34 172 62 160 100 160 C138 160 166 172 170 200 Z" fill="#1f6f8b"/>
    <path d="M82 162 L100 182 L118 162 Z" fill="#e9b48f"/>
    <rect x="88" y="146" width="24" height="24" rx="8" fill="#e3a983"/>
    <!-- ears and earrings -->
    <ellipse cx="59" cy="108" rx="7" ry="11" fill="#e9b48f"/>
    <ellipse cx="141" cy="108" rx="7" ry="11" fill="#e9b48f"/>
    <circle cx="58" cy="123" r="3.2" fill="#f3c04d"/>
    <circle cx="142" cy="123" r="3.2" fill="#f3c04d"/>
    <!-- face -->
    <ellipse cx="100" cy="106" rx="41" ry="49" fill="url(#av-skin)"/>
    <!-- hair, front -->
    <path d="M58 98 C56 62 80 46 104 48 C126 50 144 64 143 96 C134 78 118 68 100 66 C86 70 72 80 58 98 Z" fill="#3b2419"/>
    <circle cx="128" cy="40" r="15" fill="#3b2419"/>
    <path d="M120 44 C126 36 134 36 138 42" stroke="#c2573a" stroke-width="3" fill="none" stroke-linecap="round"/>
    <!-- brows -->
    <path class="av-brow" d="M73 88 Q82 83 91 87" stroke="#3b2419" stroke-width="2.6" fill="none" stroke-linecap="round"/>
    <path class="av-brow" d="M109 87 Q118 83 127 88" stroke="#3b2419" stroke-width="2.6" fill="none" stroke-linecap="round"/>
    <!-- eyes -->
    <g class="av-eye" data-cx="82" data-cy="100">
      <ellipse cx="82" cy="100" rx="7.5" ry="5.5" fill="#fff"/>
      <circle cx="82.5" cy="100.3" r="4" fill="#5b3a24"/>
      <circle cx="82.5" cy="100.3" r="2" fill="#1d120c"/>
      <circle cx="84" cy="98.8" r="1.1" fill="#fff"/>
    </g>
    <g class="av-eye" data-cx="118" data-cy="100">
      <ellipse cx="118" cy="100" rx="7.5" ry="5.5" fill="#fff"/>
      <circle cx="117.5" cy="100.3" r="4" fill="#5b3a24"/>
      <circle cx="117.5" cy="100.3" r="2" fill="#1d120c"/>
      <circle cx="119" cy="98.8" r="1.1" fill="#fff"/>
    </g>
    <path d="M74.5 97.5 Q82 92.5 89.5 97.5" stroke="#3b2419" stroke-width="1.6" fill="none" stroke-linecap="round"/>
    <path d="M110.5 97.5 Q118 92.5 125.5 97.5" stroke="#3b2419" stroke-width="1.6" fill="none" stroke-linecap="round"/>
    <!-- nose and cheeks -->
    <path d="M99 106 Q96 119 100.5 121 Q103 121.5 104.5 120" stroke="#c98b68" stroke-width="1.8" fill="none" stroke-linecap="round"/>
    <ellipse cx="74" cy="121" rx="8" ry="5" fill="#f08f7a" opacity=".35"/>
    <ellipse cx="126" cy="121" rx="8" ry="5" fill="#f08f7a" opacity=".35"/>
    <!-- mouth -->
    <g class="av-mouth">
      <path class="av-lips" fill="#c4544a"/>
      <path class="av-inner" fill="#5a1f1f"/>
      <g clip-path="url(#av-mouth-clip)">
        <rect class="av-teeth" x="70" width="60" height="6" fill="#fffaf3"/>
        <ellipse class="av-tongue" cx="100" rx="10" ry="6" fill="#d9706a"/>
      </g>
      <path class="av-line" fill="none" stroke="#9e3b35" stroke-width="1.6" stroke-linecap="round"/>
    </g>
  </g>
</svg>`;

export function createAvatar(container, { now = () => performance.now(), random = Math.random } = {}) {
  container.innerHTML = FACE_SVG;
  const svg = container.querySelector("svg");
  const mouth = svg.querySelector(".av-mouth");
  const lips = svg.querySelector(".av-lips");
  const inner = svg.querySelector(".av-inner");
  const innerClip = svg.querySelector(".av-inner-clip");
  const teeth = svg.querySelector(".av-teeth");
  const tongue = svg.querySelector(".av-tongue");
  const line = svg.querySelector(".av-line");
  const eyes = [...svg.querySelectorAll(".av-eye")];
  // Ids must be unique in the document: give this face its own.
  const uid = `av${Math.floor(random() * 1e9)}`;
  for (const el of svg.querySelectorAll("[id]")) {
    const old = el.id;
    el.id = `${uid}-${old}`;
    for (const user of svg.querySelectorAll(`[fill="url(#${old})"], [clip-path="url(#${old})"]`)) {
      for (const attr of ["fill", "clip-path"]) {
        if (user.getAttribute(attr) === `url(#${old})`) user.setAttribute(attr, `url(#${uid}-${old})`);
      }
    }
  }

  const timeline = new VisemeTimeline();
  let shape = { ...CLOSED };
  let visemeId = 0;
  let speaking = false;
  let last = now();
  let nextBlink = last + 1500 + random() * 2500;
  let blinkStart = -Infinity;
  let frame = 0;
  let blinks = 0;

  function drawMouth(s) {
    const { cx, cy } = MOUTH;
    const halfW = 13 + 9 * s.wide - 5 * s.round;
    const openH = 1 + 20 * s.open;
    const smile = 2.2 * (1 - Math.min(1, s.open * 2)) * (1 - s.round);
    const lx = cx - halfW;
    const rx = cx + halfW;
    const yc = cy - smile; // corners lift a little when the mouth is nearly closed
    const topOuter = cy - 3.2 - openH * 0.25 - s.round * 2;
    const botOuter = cy + 3.5 + openH * 1.05 + s.round * 2;
    lips.setAttribute("d", `M${lx} ${yc} Q${cx - halfW * 0.5} ${topOuter - 1.5} ${cx} ${topOuter + 1} Q${cx + halfW * 0.5} ${topOuter - 1.5} ${rx} ${yc} Q${cx} ${botOuter + 2} ${lx} ${yc} Z`);
    const innerW = halfW * (0.86 - 0.1 * s.round);
    const topInner = cy - openH * 0.2;
    const botInner = cy + openH * 0.8;
    const innerPath = `M${cx - innerW} ${yc} Q${cx} ${topInner - 1} ${cx + innerW} ${yc} Q${cx} ${botInner + 1} ${cx - innerW} ${yc} Z`;
    inner.setAttribute("d", innerPath);
    innerClip.setAttribute("d", innerPath);
    inner.style.opacity = s.open > 0.04 ? "1" : "0";
    teeth.setAttribute("y", String(topInner - 2.5));
    teeth.style.opacity = s.open > 0.18 ? "1" : "0";
    tongue.setAttribute("cy", String(botInner + 1));
    line.setAttribute("d", `M${lx + 1} ${yc} Q${cx} ${cy + 1 + openH * 0.3} ${rx - 1} ${yc}`);
    line.style.opacity = s.open > 0.04 ? "0" : "1";
  }

  function drawEyes(t) {
    let k = 1;
    const since = t - blinkStart;
    if (since < BLINK_MS) k = Math.max(0.05, Math.abs(1 - (2 * since) / BLINK_MS));
    for (const eye of eyes) {
      const cx = eye.dataset.cx;
      const cy = eye.dataset.cy;
      eye.setAttribute("transform", k === 1 ? "" : `translate(${cx} ${cy}) scale(1 ${k.toFixed(3)}) translate(${-cx} ${-cy})`);
    }
  }

  function tick() {
    const t = now();
    const dt = Math.min(100, Math.max(0, t - last));
    last = t;
    const target = timeline.shapeAt(t);
    const k = 1 - Math.exp(-dt / SMOOTH_MS);
    shape = { open: lerp(shape.open, target.open, k), wide: lerp(shape.wide, target.wide, k), round: lerp(shape.round, target.round, k) };
    visemeId = target.id;
    timeline.prune(t);
    drawMouth(shape);
    const active = timeline.isActive(t);
    if (!active && !speaking && t >= nextBlink) {
      blinkStart = t;
      blinks += 1;
      nextBlink = t + 2500 + random() * 3000;
    }
    drawEyes(t);
    mouth.dataset.viseme = NAMES[visemeId];
    mouth.dataset.open = shape.open.toFixed(2);
    svg.dataset.animating = String(active || shape.open > 0.02);
    frame = requestAnimationFrame(tick);
  }

  /** Close the mouth at once and ignore the rest of this turn's visemes. */
  function shut(turnId) {
    timeline.clear({ endTurn: true, turnId: turnId ?? timeline.turnId });
    shape = { ...CLOSED };
    visemeId = 0;
    drawMouth(shape);
    mouth.dataset.viseme = NAMES[0];
    mouth.dataset.open = "0.00";
  }

  const api = {
    element: svg,
    timeline,
    /** Feed one `viseme` server message. */
    addVisemes(message, { receivedAt = now(), delayMs = 0 } = {}) {
      timeline.add(message, { receivedAt, delayMs });
    },
    shut,
    mouthOpenness: () => shape.open,
    mouthShape: () => ({ ...shape }),
    currentViseme: () => NAMES[visemeId],
    isAnimating: () => timeline.isActive(now()) || shape.open > 0.02,
    get blinks() {
      return blinks;
    },
    /** Follow a SandraRealtime: its visemes, barge-ins and hang-ups. Returns an unbind function. */
    bind(sandra) {
      const offs = [
        sandra.on("viseme", (msg, meta) => {
          timeline.add(msg, { receivedAt: meta?.receivedAt ?? now(), delayMs: sandra.playoutDelayMs() });
        }),
        sandra.on("barge-in", (msg) => (msg?.tentative ? timeline.pause() : shut(msg?.turn_id))),
        sandra.on("resume", (msg, meta) => {
          timeline.resume({ receivedAt: meta?.receivedAt ?? now(), playheadMs: msg?.playhead_ms, delayMs: sandra.playoutDelayMs() });
        }),
        sandra.on("barge-in:local", () => shut()),
        sandra.on("response:done", (msg) => {
          if (msg?.interrupted) shut(msg.turn_id);
        }),
        sandra.on("state", (msg) => {
          speaking = msg?.state === "speaking";
          svg.dataset.state = msg?.state ?? "";
        }),
        sandra.on("call:ended", () => {
          speaking = false;
          shut();
        }),
      ];
      sandra.avatar = api;
      return () => {
        offs.forEach((off) => off());
        if (sandra.avatar === api) sandra.avatar = null;
      };
    },
    destroy() {
      cancelAnimationFrame(frame);
    },
  };
  drawMouth(shape);
  frame = requestAnimationFrame(tick);
  return api;
}
