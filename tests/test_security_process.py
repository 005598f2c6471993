"""``python -m server`` as a real process: the guest-link command, the startup error
without a JWT secret, and the drain on SIGTERM with a call in progress (``--workers 2``)."""

from __future__ import annotations

import datetime as dt
import os
import signal
import subprocess
import sys
import time

import aiohttp
import jwt

from server import config as configuration
from server.security import links
from tests.browser.conftest import ROOT, SCRIPTED, _free_port, _health
from tests.support.peer import ClientPeer

SECRET = "a-test-secret-that-is-long-enough-0123"


def run(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("SANDRA_")}
    return subprocess.run([sys.executable, "-m", "server", *args], cwd=ROOT, env={**clean, **env}, capture_output=True,
                          text=True, timeout=60)


def test_guest_link_command_prints_the_link_a_qr_code_and_writes_a_png(tmp_path):
    today = dt.datetime.now(dt.UTC).date()
    png = tmp_path / "flat-3b.png"
    done = run(["guest-link", "--name", "Ana", "--from", str(today), "--to", str(today + dt.timedelta(days=4)),
                "--lang", "es", "--max-calls", "2", "--base-url", "https://sandra.example/", "--png", str(png)],
               {"SANDRA_JWT_SECRET": SECRET})
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0].startswith("https://sandra.example/?t=")
    claims = jwt.decode(lines[0].split("?t=", 1)[1], SECRET, algorithms=["HS256"], audience="sandra")
    assert (claims["name"], claims["lang"], claims["max_calls"]) == ("Ana", "es", 2)
    assert claims["exp"] == int(dt.datetime.combine(today + dt.timedelta(days=5), dt.time(), dt.UTC).timestamp())
    assert sum("█" in line for line in lines) > 20  # the QR code in the terminal
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 500

    refused = run(["--port", "1"], {"SANDRA_AUTH_MODE": "token", "SANDRA_JWT_SECRET": "too-short"})
    assert refused.returncode == 2 and "SANDRA_JWT_SECRET" in refused.stderr and "too-short" not in refused.stderr


def test_guest_link_without_a_secret_says_which_variable_to_set(capsys):
    today = str(dt.datetime.now(dt.UTC).date())
    assert links.main(configuration.load(None, {}), ["--from", today, "--to", today], now=time.time()) == 2
    assert "SANDRA_JWT_SECRET" in capsys.readouterr().err


async def test_sigterm_drains_a_call_in_progress_then_exits_0(tmp_path):
    """``--workers 2``: the parent forwards SIGTERM to both workers and waits; the worker with
    the call refuses new offers (503 draining), lets Sandra finish, ends the call with
    ``server_restarting``; everything exits 0."""
    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    clean = {k: v for k, v in os.environ.items() if not k.startswith("SANDRA_")}
    env = {**clean, **SCRIPTED, "SANDRA_WEBRTC_HOST_ADDRESSES": "127.0.0.1", "SANDRA_SERVER_DRAIN_TIMEOUT_S": "15"}
    log = tmp_path / "workers.log"
    with log.open("wb") as out:
        proc = subprocess.Popen([sys.executable, "-m", "server", "--port", str(port), "--workers", "2"], cwd=ROOT,
                                env=env, stdout=out, stderr=subprocess.STDOUT)
        peer = ClientPeer(url)
        try:
            deadline = time.monotonic() + 60
            while _health(url) is None:
                assert proc.poll() is None and time.monotonic() < deadline, log.read_text()
                time.sleep(0.1)  # waiting for a subprocess to listen: nothing to await
            await peer.connect()
            peer.send({"type": "call:start", "language": "en"})
            await peer.wait_for("state", lambda e: e["state"] == "speaking", timeout=20)
            proc.send_signal(signal.SIGTERM)
            status, body, retry_after = 0, {}, None
            deadline = time.monotonic() + 5
            async with aiohttp.ClientSession() as http:
                while status != 503 and time.monotonic() < deadline:  # until the signal is handled
                    try:
                        async with http.post(f"{url}/api/offer", data="{bad") as r:
                            status, body, retry_after = r.status, await r.json(), r.headers.get("Retry-After")
                    except aiohttp.ClientConnectionError:
                        continue  # the idle worker has drained and closed its socket: the kernel moves on
            assert (status, body["error"]["code"]) == (503, "draining") and int(retry_after or 0) >= 1
            ended = await peer.wait_for("call:ended", timeout=20)
            assert ended["reason"] == "server_restarting"
            done = [e for e in peer.events if e["type"] == "response:done"]
            assert done and done[0]["interrupted"] is False  # Sandra finished the sentence she was saying
            greeting = "Hi, I'm Sandra, your concierge. How can I help?"
            assert done[0]["text"] and greeting.startswith(done[0]["text"])
            assert peer.types().index("response:done") < peer.types().index("call:ended")
            assert proc.wait(timeout=30) == 0
        finally:
            await peer.close()
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    text = log.read_text()
    assert text.count("sandra.app: draining") == 2 and text.count("sandra.app: stopped") == 2, text[-2000:]
    assert "draining: 1 call(s) in progress" in text
