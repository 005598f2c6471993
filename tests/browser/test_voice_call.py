"""A whole voice call through the call page, the guest's voice coming from a fake microphone.

The server runs the real offline pipeline (local Whisper, knowledge-base concierge,
espeak). The guest's question is really spoken into the browser's microphone (Chromium's
fake capture file; Firefox's PulseAudio virtual microphone), really sent over WebRTC, and
Sandra's answer really arrives as audio: its energy is measured with a WebAudio
AnalyserNode on the remote stream, the page's <audio> element must be playing it, and the
avatar's mouth must move with the answer's visemes. In Firefox the answer is also
recorded from the PulseAudio sink the browser plays into: it really came out.
"""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from .conftest import (
    OFFLINE,
    STATUS_SHAPE,
    SandraServer,
    assert_shape,
    both_engines,
    close_page,
    events,
    open_page,
    sandra_server,
    screenshot,
    wait_event,
)
from .engines import Browsers

ENERGY_PROBE = """() => {
  window.__energy = [];
  window.__mouth = [];
  const probe = (stream) => {
    // Made once the caller has tapped Call: Firefox keeps an AudioContext made before any
    // user gesture suspended.
    const ctx = new AudioContext();
    ctx.resume();
    const analyser = ctx.createAnalyser();
    analyser.fftSize = 2048;
    ctx.createMediaStreamSource(stream).connect(analyser);
    const buf = new Float32Array(analyser.fftSize);
    setInterval(() => {
      analyser.getFloatTimeDomainData(buf);
      let sum = 0;
      for (const x of buf) sum += x * x;
      window.__energy.push({ at: performance.now(), rms: Math.sqrt(sum / buf.length) });
    }, 40);
  };
  window.sandra.on("remote-stream", ({ stream }) => probe(stream));
  const mouth = () => {
    window.__mouth.push({ at: performance.now(), open: window.sandraAvatar.mouthOpenness(), viseme: window.sandraAvatar.currentViseme() });
    requestAnimationFrame(mouth);
  };
  requestAnimationFrame(mouth);
}"""



@pytest.fixture(scope="module")
def voice_server() -> Iterator[SandraServer]:
    """The offline pipeline, Sandra's default: local Whisper, the concierge, espeak."""
    with sandra_server(OFFLINE, "offline", startup_s=90) as server:
        assert server.providers == {"stt": "local", "llm": "concierge", "tts": "espeak"}
        yield server


QUIET_FOR_600_MS = """() => {
  const since = performance.now() - 600;
  const recent = window.__energy.filter((s) => s.at > since);
  return recent.length >= 10 && recent.every((s) => s.rms < 0.002);
}"""


class Guest:
    """A browser whose microphone will ask the question, and how to make it ask."""

    def __init__(self, browsers: Browsers, engine: str, mics: dict[str, Path]) -> None:
        self.engine = engine
        self._browsers = browsers
        self._question = mics["question"]
        self._playing: list[subprocess.Popen[bytes]] = []
        self._recording: subprocess.Popen[bytes] | None = None
        # Chromium loops a file that asks after LEAD_SILENCE_S: nothing to do later.
        self.browser = browsers.get("chromium", mics["speech"]) if engine == "chromium" else browsers.get("firefox")

    def ask(self) -> None:
        """Firefox: play the question into the virtual microphone now."""
        if self.engine == "firefox":
            assert self._browsers.pulse is not None
            self._playing.append(self._browsers.pulse.speak(self._question))

    def record_speakers(self) -> None:
        """Firefox: record what the browser plays (the null sink ``speakers``)."""
        if self.engine == "firefox":
            assert self._browsers.pulse is not None
            self._recorded = self._browsers.pulse.runtime / "speakers.raw"
            self._recording = self._browsers.pulse.record("speakers", self._recorded)

    def loudest_heard(self) -> float | None:
        """RMS (0..1) of the loudest 100 ms of what Firefox played, or None in Chromium."""
        if self._recording is None:
            return None
        import numpy as np

        self._recording.terminate()
        self._recording.wait(timeout=10)
        self._recording = None
        raw = self._recorded.read_bytes()
        pcm = np.frombuffer(raw[: len(raw) // 2 * 2], np.int16).astype(np.float32) / 32768
        blocks = pcm[: len(pcm) // 1600 * 1600].reshape(-1, 1600)
        return float(np.sqrt((blocks**2).mean(axis=1)).max()) if len(blocks) else 0.0

    def close(self) -> None:
        for player in self._playing:
            player.wait(timeout=10)
        if self._recording is not None:
            self._recording.kill()
            self._recording.wait()


@pytest.fixture
def guest(browsers: Browsers, browser_engine: str, fake_mics: dict[str, Path]) -> Iterator[Guest]:
    who = Guest(browsers, browser_engine, fake_mics)
    yield who
    who.close()
    stray = browsers.outside_requests()
    assert stray == [], f"{browser_engine} tried to reach beyond 127.0.0.1: {stray}"


def window(samples: list[dict[str, Any]], start: float, end: float) -> list[dict[str, Any]]:
    return [s for s in samples if start <= s["at"] <= end]


@both_engines
def test_a_spoken_question_is_transcribed_and_answered_out_loud(guest: Guest, voice_server: SandraServer) -> None:
    page, errors = open_page(guest.browser, f"{voice_server.url}/", viewport={"width": 1280, "height": 800})
    page.evaluate(ENERGY_PROBE)
    guest.record_speakers()
    page.click("#call")

    started = wait_event(page, "call:started")
    assert started["language"] == "en"
    greeting = wait_event(page, "response:done", timeout=20_000)
    assert greeting["interrupted"] is False and greeting["text"]
    # The remote audio plays: in Firefox too, whose autoplay policy blocks audible media
    # that no user gesture started (the Call tap unlocks it).
    playing = page.evaluate("(() => { const a = document.querySelector('#remote-audio'); return [a.paused, a.currentTime]; })()")
    assert playing[0] is False and playing[1] > 1, playing
    # Ask once the greeting has been heard to its end (the page plays a little after the
    # server's response:done), as a guest would: Firefox's echo canceller swallows words
    # spoken over Sandra.
    page.wait_for_function(QUIET_FOR_600_MS, timeout=5000)
    guest.ask()

    # The question, spoken into the fake microphone, comes back as the caller's words.
    heard = wait_event(page, "transcript", "m.final", timeout=40_000)
    assert "check" in heard["text"].lower(), heard
    turn = heard["turn_id"]
    page.wait_for_selector("#transcript .msg-user:not(.partial)")
    assert "check" in page.inner_text("#transcript .msg-user").lower()

    wait_event(page, "state", f"m.state === 'speaking' && m.turn_id === {turn}", timeout=30_000)
    page.wait_for_function("() => window.sandraAvatar.mouthOpenness() > 0.3", timeout=5000)
    screenshot(page, "call-desktop")  # -firefox in Firefox
    # Listen to the first seconds of the answer, then cut it short with the Interrupt button.
    speaking_at = next(e["at"] for e in events(page, "state") if e.get("turn_id") == turn and e["state"] == "speaking")
    page.wait_for_function(f"() => window.__energy.at(-1).at > {speaking_at} + 2500", timeout=10_000)
    page.click("#interrupt")
    done = wait_event(page, "response:done", f"m.turn_id === {turn}")
    assert done["interrupted"] is True and done["text"]
    page.locator("#transcript .msg-sandra.interrupted .badge").wait_for()

    # Sandra's answer was heard: audio energy on the remote track while she spoke...
    done_at = next(e["at"] for e in events(page, "response:done") if e["turn_id"] == turn)
    energy = window(page.evaluate("window.__energy"), speaking_at, done_at)
    assert energy and max(s["rms"] for s in energy) > 0.01, energy[-10:]
    # ... and not while she was listening between the greeting and the answer (the probe discriminates).
    greeting_done_at = next(e["at"] for e in events(page, "response:done") if e["turn_id"] == greeting["turn_id"])
    quiet = window(page.evaluate("window.__energy"), greeting_done_at + 800, speaking_at - 100)
    assert quiet and min(s["rms"] for s in quiet) < 0.002, quiet[:10]
    visemes = [v for e in events(page, "viseme") if e["turn_id"] == turn for v in e["visemes"]]
    assert len(visemes) > 5
    # ... and the mouth moved with it, through several shapes, and closed at the interruption.
    mouth = window(page.evaluate("window.__mouth"), speaking_at, done_at)
    assert max(s["open"] for s in mouth) > 0.3
    assert len({s["viseme"] for s in mouth}) >= 4
    page.wait_for_function("() => window.sandraAvatar.mouthOpenness() < 0.02", timeout=1000)
    # The mouth starts moving when the caller starts hearing the answer, not when it was sent.
    heard_at = next(s["at"] for s in energy if s["rms"] > 0.01)
    moved_at = next(s["at"] for s in mouth if s["open"] > 0.1)
    # At most 200 ms ahead of the sound (what the avatar's playout-delay timing is for), and
    # behind it by at most 200 ms in Chromium, 300 ms in Firefox (a full-suite run once saw
    # 208 ms there).
    lag_limit = 200 if guest.engine == "chromium" else 300
    assert -200 < moved_at - heard_at < lag_limit, (heard_at - speaking_at, moved_at - speaking_at)

    metrics = wait_event(page, "metrics", f"m.turn_id === {turn}")
    assert metrics.get("voice_to_voice_ms", 0) > 0
    status = page.evaluate("window.sandra.getStatus()")
    assert_shape(status, STATUS_SHAPE)
    assert status["callActive"] and status["webrtc"]["connected"] and status["audio"]["streamingEnabled"]
    assert status["socket"]["latency"] is not None and status["socket"]["latency"] < 1000
    client = page.evaluate("window.sandra.refreshStats()")
    assert client["audioChunksSent"] > 100 and client["audioChunksReceived"] > 100
    assert client["messagesSent"] > 3 and client["messagesReceived"] > client["messagesSent"]
    close_page(page, errors)
    loudest = guest.loudest_heard()
    assert loudest is None or loudest > 0.02, f"Firefox played nothing audible: loudest 100 ms at RMS {loudest}"


def test_a_question_passed_on_to_the_host_shows_on_the_page(quiet_browser: Any, voice_server: SandraServer) -> None:
    page, errors = open_page(quiet_browser, f"{voice_server.url}/", viewport={"width": 1280, "height": 800})
    page.click("#call")
    wait_event(page, "state", "m.state === 'speaking'", timeout=20_000)
    page.click("#interrupt")  # cut the greeting short
    wait_event(page, "barge-in:ack")
    page.fill("#text", "Can I bring my pet iguana to the rooftop party?")
    page.press("#text", "Enter")
    # The offer must be heard to the end: a "yes" only counts after the whole question.
    wait_event(page, "response:done", "m.text.includes('pass your question on')", timeout=15_000)
    page.fill("#text", "Yes please")
    page.press("#text", "Enter")
    tool = wait_event(page, "tool", "m.name === 'notify_host'")
    assert "iguana" in tool["input"]["message"]
    page.wait_for_selector("#transcript .note")
    assert "host" in page.inner_text("#transcript .note")
    close_page(page, errors)


def test_a_message_typed_while_sandra_speaks_is_answered(quiet_browser: Any, voice_server: SandraServer) -> None:
    page, errors = open_page(quiet_browser, f"{voice_server.url}/", viewport={"width": 1280, "height": 800})
    page.click("#call")
    wait_event(page, "state", "m.state === 'speaking'", timeout=20_000)  # greeting under way
    page.fill("#text", "What time is check-in?")
    page.press("#text", "Enter")
    greeting = wait_event(page, "response:done")
    answer = wait_event(page, "response:done", f"m.turn_id !== {greeting['turn_id']}", timeout=15_000)
    close_page(page, errors)
    assert greeting["interrupted"] is True
    assert "3 pm" in answer["text"], answer["text"]
