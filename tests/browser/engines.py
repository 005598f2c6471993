"""The browser engines the browser tests drive: Chromium, and Firefox ESR (issue 14).

Chromium plays a WAV file as its microphone (``--use-file-for-fake-audio-capture``).
Firefox has no such switch, so it gets a real capture device instead: a private PulseAudio
daemon (started and stopped here, user mode, its own runtime directory) with a null sink
``vmic`` whose monitor is remapped as the default source ``mic``; ``paplay --device=vmic``
then speaks into Firefox's microphone. Firefox's own output goes to a second null sink
``speakers``, so Sandra never hears herself. Playwright drives Debian's ``firefox-esr``
over WebDriver BiDi (channel ``moz-firefox``), nothing downloaded.

Firefox must make no connection beyond 127.0.0.1: the prefs below turn off its
background services, and every HTTP(S) request it would still make goes to a proxy
(``OutsideTrap``) on 127.0.0.1 that answers nothing and records the host asked for.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import threading
import time
from pathlib import Path
from typing import Any

from playwright.sync_api import Error as PlaywrightError

ENGINES = ("chromium", "firefox")

CHROMIUM = os.environ.get("SANDRA_CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"
FIREFOX = os.environ.get("SANDRA_FIREFOX") or shutil.which("firefox-esr") or "/usr/bin/firefox-esr"

CHROMIUM_ARGS = [
    "--use-fake-ui-for-media-stream",
    "--use-fake-device-for-media-stream",
    "--allow-loopback-in-peer-connection",
    "--disable-features=WebRtcHideLocalIpsWithMdns",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--autoplay-policy=no-user-gesture-required",
]

# Why each pref is set. Firefox's autoplay policy is left at its default (audible media
# blocked until the user interacts): the call page must unlock audio inside the tap.
FIREFOX_MEDIA_PREFS: dict[str, Any] = {
    # getUserMedia without the permission prompt (Chromium: --use-fake-ui-for-media-stream).
    "media.navigator.permission.disabled": True,
    # The real capture device, i.e. PulseAudio's default source (our virtual microphone).
    # Firefox's fake stream would do without PulseAudio, but with it ICE never gathers
    # loopback candidates.
    "media.navigator.streams.fake": False,
    # Gather 127.0.0.1 candidates (Chromium: --allow-loopback-in-peer-connection) ...
    "media.peerconnection.ice.loopback": True,
    # ... as addresses, not mDNS .local names (Chromium: --disable-features=WebRtcHideLocalIpsWithMdns).
    "media.peerconnection.ice.obfuscate_host_addresses": False,
    # UDP candidates only, like aiortc's.
    "media.peerconnection.ice.tcp": False,
}

FIREFOX_QUIET_PREFS: dict[str, Any] = {
    # No Remote Settings sync (firefox.settings.services.mozilla.com, retried every few
    # seconds otherwise); the dummy server of Firefox's own test profiles.
    "services.settings.server": "data:,#remote-settings-dummy/v1",
    # No captive-portal or connectivity probes (detectportal.firefox.com).
    "network.captive-portal-service.enabled": False,
    "network.connectivity-service.enabled": False,
    # No speculative connections, link prefetch or DNS prefetch.
    "network.prefetch-next": False,
    "network.dns.disablePrefetch": True,
    "network.predictor.enabled": False,
    "network.http.speculative-parallel-limit": 0,
    # No DNS over HTTPS.
    "network.trr.mode": 5,
    # No updates of the browser, add-ons, search engines or media plugins (OpenH264).
    "app.update.auto": False,
    "app.update.disabledForTesting": True,
    "extensions.update.enabled": False,
    "extensions.getAddons.cache.enabled": False,
    "extensions.blocklist.enabled": False,
    "browser.search.update": False,
    "media.gmp-manager.updateEnabled": False,
    "media.gmp-gmpopenh264.enabled": False,
    "media.gmp-gmpopenh264.autoupdate": False,
    # No telemetry, health report, studies or remote experiments.
    "toolkit.telemetry.enabled": False,
    "toolkit.telemetry.unified": False,
    "toolkit.telemetry.server": "",
    "datareporting.healthreport.uploadEnabled": False,
    "datareporting.policy.dataSubmissionEnabled": False,
    "app.normandy.enabled": False,
    "app.shield.optoutstudies.enabled": False,
    # No Safe Browsing list downloads.
    "browser.safebrowsing.malware.enabled": False,
    "browser.safebrowsing.phishing.enabled": False,
    "browser.safebrowsing.downloads.enabled": False,
    "browser.safebrowsing.blockedURIs.enabled": False,
    "browser.safebrowsing.update.enabled": False,
}


def firefox_prefs(trap_port: int) -> dict[str, Any]:
    """All prefs: media, quiet, and a manual proxy at the trap for anything still going out.

    Loopback is never proxied (``network.proxy.allow_hijacking_localhost`` stays false), so
    the pages on 127.0.0.1 load directly.
    """
    return {
        **FIREFOX_MEDIA_PREFS,
        **FIREFOX_QUIET_PREFS,
        "network.proxy.type": 1,
        "network.proxy.http": "127.0.0.1",
        "network.proxy.http_port": trap_port,
        "network.proxy.ssl": "127.0.0.1",
        "network.proxy.ssl_port": trap_port,
        "network.proxy.share_proxy_settings": True,
        "network.proxy.socks_remote_dns": True,
    }


class OutsideTrap:
    """A proxy on 127.0.0.1 that forwards nothing: it records the first line of each
    request (``CONNECT host:443 HTTP/1.1``) and closes the connection."""

    def __init__(self) -> None:
        self._listener = socket.create_server(("127.0.0.1", 0))
        self._listener.settimeout(0.2)
        self.port: int = self._listener.getsockname()[1]
        self.requests: list[str] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, name="outside-trap", daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self._listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            with conn:
                conn.settimeout(1.0)
                try:
                    first = conn.recv(1024).split(b"\r\n", 1)[0].decode("latin-1")
                except OSError:
                    first = "(nothing read)"
                with self._lock:
                    self.requests.append(first)

    def taken(self) -> list[str]:
        with self._lock:
            found, self.requests = self.requests, []
        return found

    def close(self) -> None:
        self._stop.set()
        self._listener.close()
        self._thread.join(timeout=2)


# --- PulseAudio -------------------------------------------------------------------------

PULSE_SCRIPT = """\
load-module module-native-protocol-unix auth-anonymous=1 socket={socket}
load-module module-null-sink sink_name=speakers rate=48000 channels=2
load-module module-null-sink sink_name=vmic rate=48000 channels=1
load-module module-remap-source master=vmic.monitor source_name=mic rate=48000 channels=1
set-default-sink speakers
set-default-source mic
"""


class PulseAudio:
    """A private PulseAudio daemon with a virtual microphone. ``close()`` stops it.

    Runs in user mode in the foreground, as a child we own (as root too: PulseAudio warns
    that it "is not intended to be run as root" and works, tried here; ``--system`` was
    not tried: it is the system-wide daemon, with the ``pulse`` user and a system socket,
    which a test has no business starting).
    ``-n`` loads no default.pa: no hardware, no D-Bus, no X11, no network modules.
    """

    def __init__(self, runtime: Path, *, startup_s: float = 15) -> None:
        for tool in ("pulseaudio", "pactl", "paplay", "parec", "pacat"):
            if not shutil.which(tool):
                raise RuntimeError(f"{tool} is not installed: run `make test` (it installs pulseaudio and pulseaudio-utils)")
        runtime.mkdir(parents=True, exist_ok=True)
        self.runtime = runtime
        self.socket = runtime / "native"
        self.log = runtime / "pulseaudio.log"
        script = runtime / "sandra.pa"
        script.write_text(PULSE_SCRIPT.format(socket=self.socket))
        self.env = {"PULSE_SERVER": f"unix:{self.socket}"}
        self._env = {
            **os.environ,
            "HOME": str(runtime),
            "XDG_RUNTIME_DIR": str(runtime),
            "XDG_CONFIG_HOME": str(runtime / "config"),
            "PULSE_RUNTIME_PATH": str(runtime / "run"),
            "PULSE_STATE_PATH": str(runtime / "state"),
            **self.env,
        }
        self._env.pop("DISPLAY", None)
        self._env.pop("DBUS_SESSION_BUS_ADDRESS", None)
        self.process = subprocess.Popen(
            [
                "pulseaudio", "-n", "--daemonize=no", "--exit-idle-time=-1", "--use-pid-file=no",
                "--disable-shm=yes", "--log-level=notice", f"--log-target=file:{self.log}", "-F", str(script),
            ],
            env=self._env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        self._noise: subprocess.Popen[bytes] | None = None
        self._noise_thread: threading.Thread | None = None
        deadline = time.monotonic() + startup_s
        while not self._ready():
            if self.process.poll() is not None:
                raise RuntimeError(f"pulseaudio exited with {self.process.returncode}:\n{self._log_tail()}")
            if time.monotonic() > deadline:
                self.close()
                raise RuntimeError(f"pulseaudio did not answer in {startup_s} s:\n{self._log_tail()}")
            time.sleep(0.1)  # waiting for a subprocess to listen: nothing to await
        self._start_room_noise()

    def _start_room_noise(self, rms: float = 60.0) -> None:
        """A faint hiss (about -55 dBFS) under everything the microphone hears, as a real
        microphone has: digital silence makes Firefox's gain control and noise suppression
        (the call page asks for both) misjudge the first words that follow it."""
        import numpy as np

        second = np.random.default_rng(14).normal(0, rms, 48000).astype(np.int16).tobytes()
        self._noise = subprocess.Popen(
            ["pacat", "--playback", "--device=vmic", "--raw", "--format=s16le", "--rate=48000", "--channels=1",
             "--latency-msec=100", "--client-name=room-noise"],
            env=self._env, stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        pipe = self._noise.stdin
        assert pipe is not None

        def feed() -> None:  # pacat reads at the sink's pace, so this writes in real time
            try:
                while True:
                    pipe.write(second)
            except (BrokenPipeError, ValueError, OSError):
                return

        self._noise_thread = threading.Thread(target=feed, name="room-noise", daemon=True)
        self._noise_thread.start()

    def _log_tail(self) -> str:
        return self.log.read_text(errors="replace")[-2000:] if self.log.exists() else "(no log)"

    def _ready(self) -> bool:
        if not self.socket.exists():
            return False
        done = subprocess.run(["pactl", "get-default-source"], env=self._env, capture_output=True, text=True, timeout=5)
        return done.returncode == 0 and done.stdout.strip() == "mic"

    def speak(self, wav: Path, volume: int = 65536) -> subprocess.Popen[bytes]:
        """Start playing ``wav`` into the virtual microphone; returns the paplay process.

        ``volume`` is PulseAudio's (65536: as recorded; the scale is cubic, 16384 is -36 dB,
        quiet enough that Firefox's gain control pumps the noise and Whisper mishears)."""
        return subprocess.Popen(
            ["paplay", "--device=vmic", f"--volume={volume}", str(wav)],
            env=self._env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )

    def record(self, sink: str, raw_file: Path) -> subprocess.Popen[bytes]:
        """Record what is played into ``sink`` as 16 kHz mono s16le into ``raw_file`` until
        the returned parec process is terminated."""
        with raw_file.open("wb") as out:
            return subprocess.Popen(
                ["parec", f"--device={sink}.monitor", "--raw", "--format=s16le", "--rate=16000", "--channels=1"],
                env=self._env,
                stdout=out,
                stderr=subprocess.DEVNULL,
            )

    def close(self) -> None:
        """Stop the daemon and remove its runtime directory. Safe to call twice."""
        if self._noise is not None and self._noise.poll() is None:
            self._noise.kill()
            self._noise.wait()
        if self._noise_thread is not None:
            self._noise_thread.join(timeout=2)
        if self._noise is not None and self._noise.stdin is not None:
            try:
                self._noise.stdin.close()
            except BrokenPipeError:
                pass
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        shutil.rmtree(self.runtime, ignore_errors=True)


# --- launching --------------------------------------------------------------------------


def launch_chromium(playwright: Any, microphone_wav: Path) -> Any:
    if not Path(CHROMIUM).exists():
        raise RuntimeError(f"no Chromium at {CHROMIUM}: run `make test` (it installs it) or apt-get install chromium")
    return playwright.chromium.launch(
        executable_path=CHROMIUM,
        args=[*CHROMIUM_ARGS, f"--use-file-for-fake-audio-capture={microphone_wav}"],
    )


def launch_firefox(playwright: Any, pulse: PulseAudio, trap: OutsideTrap) -> Any:
    if not Path(FIREFOX).exists():
        raise RuntimeError(f"no Firefox at {FIREFOX}: run `make test` (it installs firefox-esr)")
    env = {k: v for k, v in os.environ.items() if k not in ("DISPLAY", "WAYLAND_DISPLAY")}
    # Lets services.settings.server (FIREFOX_QUIET_PREFS) take effect in a release build.
    env["MOZ_REMOTE_SETTINGS_DEVTOOLS"] = "1"
    return playwright.firefox.launch(
        channel="moz-firefox",
        executable_path=FIREFOX,
        headless=True,
        firefox_user_prefs=firefox_prefs(trap.port),
        env={**env, **pulse.env},
    )


class Browsers:
    """One browser per engine and microphone, launched on first use, closed together.

    ``get("chromium", wav)``: Chromium whose microphone plays ``wav`` in a loop.
    ``get("firefox")``: Firefox whose microphone is the PulseAudio virtual microphone
    (silent until ``pulse.speak(wav)``).
    """

    def __init__(self, playwright: Any, runtime: Path) -> None:
        self.playwright = playwright
        self.runtime = runtime
        self.pulse: PulseAudio | None = None
        self.trap: OutsideTrap | None = None
        self._open: dict[tuple[str, str], Any] = {}

    def get(self, engine: str, microphone_wav: Path | None = None) -> Any:
        key = (engine, str(microphone_wav) if engine == "chromium" else "")
        if key not in self._open:
            if engine == "chromium":
                assert microphone_wav is not None, "Chromium needs a microphone file"
                self._open[key] = launch_chromium(self.playwright, microphone_wav)
            elif engine == "firefox":
                self.trap = self.trap or OutsideTrap()
                self.pulse = self.pulse or PulseAudio(self.runtime / "pulse")
                self._open[key] = launch_firefox(self.playwright, self.pulse, self.trap)
            else:
                raise ValueError(f"unknown engine {engine!r}; known: {ENGINES}")
        return self._open[key]

    def outside_requests(self) -> list[str]:
        """Requests Firefox tried to send beyond 127.0.0.1 since the last call."""
        return self.trap.taken() if self.trap else []

    def close(self) -> None:
        for browser in self._open.values():
            try:
                browser.close()
            except PlaywrightError:  # one that already died must not keep the others open
                pass
        self._open.clear()
        if self.pulse:
            self.pulse.close()
        if self.trap:
            self.trap.close()
