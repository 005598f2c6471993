"""Real-browser fixtures: a Sandra server subprocess, the system Chromium and Firefox ESR,
fake microphones.

Chromium's fake capture device plays a WAV file in a loop as the microphone. The speech
file is synthesised here with espeak-ng: a few seconds of silence (Sandra greets first),
the guest's question once, then silence long enough that a test never hears it twice.
Firefox hears a PulseAudio virtual microphone instead, into which a test plays the
question when it wants (engines.py). Tests marked ``@both_engines`` run in each engine
(the ``browser_engine`` fixture); the others in Chromium. One browser per engine (and
microphone) serves the whole package. Every browser, daemon and server started here is
stopped by its fixture; all traffic is on 127.0.0.1 with no STUN/TURN server.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from .engines import ENGINES, Browsers

ROOT = Path(__file__).resolve().parents[2]
OUTPUT = ROOT / "test-output"
SCREENSHOTS = OUTPUT / "screenshots"
QUESTION = "What time is check-in?"
LEAD_SILENCE_S = 9.0  # the greeting (about 6.5 s with espeak) plays while the microphone is silent
TAIL_SILENCE_S = 14.0  # the file loops: the question comes back only after this

SCRIPTED = {"SANDRA_STT_PROVIDER": "scripted", "SANDRA_LLM_PROVIDER": "scripted", "SANDRA_TTS_PROVIDER": "scripted"}
OFFLINE = {"SANDRA_STT_PROVIDER": "local", "SANDRA_LLM_PROVIDER": "concierge", "SANDRA_TTS_PROVIDER": "espeak"}



# --- audio files ------------------------------------------------------------------------


def _write_pcm_wav(path: Path, samples: Any, rate: int = 48000) -> None:
    import wave

    with wave.open(str(path), "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(rate)
        out.writeframes(samples.tobytes())


def _speech_pcm(text: str, rate: int, tmp: Path) -> Any:
    """``text`` spoken by espeak-ng, resampled to ``rate`` Hz mono int16 with PyAV."""
    import av
    import numpy as np

    raw = tmp / "espeak.wav"
    subprocess.run(["espeak-ng", "-v", "en-us", "-s", "150", "-w", str(raw), text], check=True, capture_output=True)
    resampler = av.AudioResampler(format="s16", layout="mono", rate=rate)
    chunks = []
    with av.open(str(raw)) as container:
        for frame in container.decode(audio=0):
            chunks.extend(f.to_ndarray().reshape(-1) for f in resampler.resample(frame))
        chunks.extend(f.to_ndarray().reshape(-1) for f in resampler.resample(None))
    return np.concatenate(chunks).astype(np.int16)


@pytest.fixture(scope="session")
def fake_mics(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """48 kHz WAVs: "speech", the question between silences (Chromium's looping microphone);
    "question", the question alone (played into Firefox's virtual microphone); "silence"."""
    import numpy as np

    if not shutil.which("espeak-ng"):
        pytest.fail("espeak-ng is not installed: run `make test` (it installs it) or apt-get install espeak-ng")
    tmp = tmp_path_factory.mktemp("mic")
    rate = 48000
    speech = _speech_pcm(QUESTION, rate, tmp)
    lead = np.zeros(int(LEAD_SILENCE_S * rate), np.int16)
    tail = np.zeros(int(TAIL_SILENCE_S * rate), np.int16)
    files = {"speech": tmp / "speech.wav", "question": tmp / "question.wav", "silence": tmp / "silence.wav"}
    _write_pcm_wav(files["speech"], np.concatenate([lead, speech, tail]), rate)
    _write_pcm_wav(files["question"], np.concatenate([speech, np.zeros(rate // 2, np.int16)]), rate)
    _write_pcm_wav(files["silence"], np.zeros(rate * 10, np.int16), rate)
    return files


# --- server -----------------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _health(url: str) -> dict[str, Any] | None:
    try:
        with urllib.request.urlopen(f"{url}/api/health", timeout=2) as response:
            return json.load(response)
    except (urllib.error.URLError, ConnectionError, TimeoutError):
        return None


class SandraServer:
    def __init__(self, url: str, health: dict[str, Any], log: Path, process: subprocess.Popen[bytes]) -> None:
        self.url = url
        self.health = health
        self.log = log
        self.process = process

    @property
    def providers(self) -> dict[str, str]:
        return self.health.get("providers", {})

    def log_text(self) -> str:
        return self.log.read_text(errors="replace")


@contextmanager
def sandra_server(env: dict[str, str], name: str, *, port: int = 0, startup_s: float = 60) -> Iterator[SandraServer]:
    """``python -m server`` on loopback (``port`` 0: a free one) with ``env`` added; stopped on exit."""
    OUTPUT.mkdir(exist_ok=True)
    port = port or _free_port()
    url = f"http://127.0.0.1:{port}"
    log = OUTPUT / f"browser-server-{name}.log"
    full_env = {
        **os.environ,
        "SANDRA_WEBRTC_HOST_ADDRESSES": "127.0.0.1",
        "SANDRA_LLM_HOST_INBOX": str(OUTPUT / f"host-inbox-{name}.jsonl"),  # not the real inbox
        **env,
    }
    with log.open("wb") as log_file:
        proc = subprocess.Popen(
            [sys.executable, "-m", "server", "--host", "127.0.0.1", "--port", str(port)],
            cwd=ROOT,
            env=full_env,
            stdout=log_file,
            stderr=subprocess.STDOUT,
        )
        try:
            deadline = time.monotonic() + startup_s
            health = None
            while health is None:
                if proc.poll() is not None:
                    raise RuntimeError(f"the server exited with {proc.returncode}:\n{log.read_text(errors='replace')[-3000:]}")
                if time.monotonic() > deadline:
                    raise RuntimeError(f"the server did not become healthy in {startup_s} s")
                health = _health(url)
                if health is None:
                    time.sleep(0.1)  # waiting for a subprocess to listen: nothing to await
            yield SandraServer(url, health, log, proc)
        finally:
            proc.terminate()
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


@pytest.fixture(scope="session")
def scripted_server() -> Iterator[SandraServer]:
    """A server with the scripted providers: any speech is "What time is check-in?"."""
    with sandra_server(SCRIPTED, "scripted") as server:
        yield server


# --- browser ----------------------------------------------------------------------------


@pytest.fixture(scope="package")
def playwright_driver() -> Iterator[Any]:
    from playwright import sync_api

    with sync_api.sync_playwright() as p:
        yield p


@pytest.fixture(scope="package")
def browsers(playwright_driver: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Browsers]:
    """The browsers of the whole package (and Firefox's PulseAudio daemon), closed at its end."""
    pool = Browsers(playwright_driver, tmp_path_factory.mktemp("engines"))
    yield pool
    pool.close()


@pytest.fixture(scope="package")
def quiet_browser(browsers: Browsers, fake_mics: dict[str, Path]) -> Any:
    """Chromium whose microphone hears silence: typed turns only, no voice turns."""
    return browsers.get("chromium", fake_mics["silence"])


@pytest.fixture
def browser_engine(request: pytest.FixtureRequest) -> str:
    """The engine: "chromium", or each engine in turn for a test marked ``@both_engines``."""
    return getattr(request, "param", "chromium")


both_engines = pytest.mark.parametrize("browser_engine", ENGINES, indirect=True)


@pytest.fixture
def browser(browsers: Browsers, browser_engine: str, fake_mics: dict[str, Path]) -> Iterator[Any]:
    """A browser of ``browser_engine`` whose microphone is silent (Firefox's until a test speaks)."""
    yield browsers.get(browser_engine, fake_mics["silence"])
    stray = browsers.outside_requests()
    assert stray == [], f"{browser_engine} tried to reach beyond 127.0.0.1: {stray}"


# --- page helpers -----------------------------------------------------------------------

RECORDER = """() => {
  window.__events = [];
  window.sandra.on("*", (type, message) => {
    if (type === "traffic" || type === "latency" || type === "remote-stream") return;
    window.__events.push({ type, message, at: performance.now() });
  });
}"""


def record_events(page: Any) -> None:
    """Keep every SandraRealtime event in ``window.__events`` (traffic excluded)."""
    page.evaluate(RECORDER)


def events(page: Any, kind: str | None = None) -> list[dict[str, Any]]:
    found = page.evaluate("window.__events.map(e => ({type: e.type, at: e.at, ...(e.message || {})}))")
    return [e for e in found if kind is None or e["type"] == kind]


def now(page: Any) -> float:
    return page.evaluate("performance.now()")


def wait_event(page: Any, kind: str, where: str = "true", timeout: float = 15_000, since: float = 0) -> dict[str, Any]:
    """Wait for an event of ``kind``, recorded after ``since`` (page time), whose message ``m``
    satisfies the JS expression ``where``."""
    handle = page.wait_for_function(
        f"() => window.__events.find(e => e.type === {json.dumps(kind)} && e.at > {since}"
        f" && ((m) => {where})(e.message || {{}}))",
        timeout=timeout,
    )
    return handle.json_value()["message"]


# Playwright's screenshot in Firefox evaluates a <style> of its own into the page, which the
# pages' CSP (style-src 'self') refuses; Firefox reports that refusal as a page error (seen
# with a securitypolicyviolation listener: sourceFile ".../debug line 370 > eval", Playwright's
# injected script). Our own pages' CSP is checked in Chromium (tests/browser/test_guest_link.py).
_TOOLING_CSP = "blocked an inline style (style-src-elem)"


def page_errors(page: Any) -> list[str]:
    errors: list[str] = []
    firefox = page.context.browser.browser_type.name == "firefox"
    page.on("pageerror", lambda exc: None if firefox and _TOOLING_CSP in str(exc) else errors.append(str(exc)))
    return errors


def engine_of(page: Any) -> str:
    return page.context.browser.browser_type.name


def screenshot(page: Any, name: str) -> Path:
    """test-output/screenshots/<name>.png (Chromium) or <name>-<engine>.png (another engine)."""
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    engine = engine_of(page)
    path = SCREENSHOTS / (f"{name}.png" if engine == "chromium" else f"{name}-{engine}.png")
    # No animations="disabled" (nor the default caret="hide"): Playwright does them with an injected <style>, which the pages'
    # CSP (style-src 'self') rightly refuses, and Firefox reports that as a page error.
    page.screenshot(path=str(path), caret="initial")  # caret="hide" injects a <style> too
    return path


def open_page(browser: Any, url: str, *, init_script: str | None = None, **context_options: Any
              ) -> tuple[Any, list[str]]:
    """A fresh context and page at ``url``, ready, recording events (``init_script``: run in
    the page before its own scripts). Returns (page, JS errors)."""
    context = browser.new_context(**context_options)
    if init_script is not None:
        context.add_init_script(init_script)
    page = context.new_page()
    errors = page_errors(page)
    page.goto(url)
    page.wait_for_selector("body[data-ready=true]")
    record_events(page)
    return page, errors


def close_page(page: Any, errors: list[str]) -> None:
    """Hang up, close the context, and fail if the page threw an uncaught error."""
    page.evaluate("window.sandra.endCall()")
    page.context.close()
    assert errors == [], f"uncaught errors in the page: {errors}"


@pytest.fixture
def call_page(browser: Any, scripted_server: SandraServer) -> Iterator[Any]:
    """The call page, desktop-sized, on the scripted server, with events recorded."""
    page, errors = open_page(browser, f"{scripted_server.url}/", viewport={"width": 1280, "height": 800})
    yield page
    close_page(page, errors)


STATUS_SHAPE = {
    "systemReady": bool,
    "callActive": bool,
    "socket": {"connected": bool, "authenticated": bool, "latency": (int, float, type(None))},
    "webrtc": {"enabled": bool, "connected": bool},
    "vad": {"enabled": bool, "analyzing": bool},
    "avatar": {"enabled": bool, "animating": bool},
    "audio": {"streamingEnabled": bool},
}

METRICS_KEYS = {"messagesSent", "messagesReceived", "audioChunksSent", "audioChunksReceived", "latency"}


def assert_shape(value: Any, shape: Any, where: str = "getStatus()") -> None:
    """``value`` has exactly the keys of ``shape`` with values of the given types."""
    if isinstance(shape, dict):
        assert isinstance(value, dict) and set(value) == set(shape), f"{where}: {value!r}"
        for key, sub in shape.items():
            assert_shape(value[key], sub, f"{where}.{key}")
    else:
        assert isinstance(value, shape), f"{where} is {value!r}"
