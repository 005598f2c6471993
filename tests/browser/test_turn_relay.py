"""A real coturn on 127.0.0.1 with ``use-auth-secret``: a voice turn from Chromium forced to
relay (``iceTransportPolicy: "relay"``) with the short-lived credentials from /api/ice (the
server's own aiortc peer gets fresh ones too); wrong or expired credentials are refused by
coturn and the page says so."""

from __future__ import annotations

import os
import random
import shutil
import socket
import struct
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from .conftest import OUTPUT, SCRIPTED, SandraServer, close_page, open_page, sandra_server, wait_event
from .engines import launch_chromium

TURN_SECRET = "coturn-static-auth-secret-for-tests"

# Emulates a network where only the relay works: every peer connection is relay-only.
FORCE_RELAY = """(() => {
  const Native = window.RTCPeerConnection;
  window.__pcs = [];
  window.RTCPeerConnection = function (config = {}, ...rest) {
    const pc = new Native({ ...config, iceTransportPolicy: "relay" }, ...rest);
    window.__pcs.push(pc);
    return pc;
  };
  window.RTCPeerConnection.prototype = Native.prototype;
})()"""

SELECTED_PAIR = """async () => {
  const stats = await window.__pcs.at(-1).getStats();
  let pair = null;
  stats.forEach((s) => { if (s.type === "transport" && s.selectedCandidatePairId) pair = stats.get(s.selectedCandidatePairId); });
  if (!pair) stats.forEach((s) => { if (s.type === "candidate-pair" && s.nominated && s.state === "succeeded") pair = s; });
  const local = pair && stats.get(pair.localCandidateId);
  return local ? { type: local.candidateType, address: local.address, protocol: local.protocol } : null;
}"""


def _udp_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def _free_ports() -> tuple[int, int]:
    """A listening port (UDP and TCP free) and the start of 20 free UDP relay ports."""
    rng = random.Random()
    while True:
        listen, relay = rng.randrange(20000, 30000), rng.randrange(40000, 60000)
        with socket.socket() as tcp:
            try:
                tcp.bind(("127.0.0.1", listen))
            except OSError:
                continue
        if _udp_free(listen) and all(_udp_free(p) for p in range(relay, relay + 20)):
            return listen, relay


def _answers_stun(port: int) -> bool:
    """A STUN Binding request (RFC 5389) answered within 200 ms."""
    txid = os.urandom(12)
    request = struct.pack("!HHI", 0x0001, 0, 0x2112A442) + txid
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.settimeout(0.2)
        s.sendto(request, ("127.0.0.1", port))
        try:
            data = s.recv(2048)
        except (TimeoutError, ConnectionRefusedError):
            return False
    return len(data) >= 20 and struct.unpack("!H", data[:2])[0] == 0x0101 and data[8:20] == txid


@pytest.fixture(scope="module")
def coturn(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """coturn on 127.0.0.1 only; yields its turn: URL."""
    binary = shutil.which("turnserver")
    if binary is None:
        pytest.fail("coturn is not installed: run `make test` (it installs it) or apt-get install coturn")
    tmp = tmp_path_factory.mktemp("coturn")
    port, relay = _free_ports()
    log = OUTPUT / "coturn.log"
    OUTPUT.mkdir(exist_ok=True)
    args = [
        binary, "-n", "--listening-ip=127.0.0.1", "--relay-ip=127.0.0.1", f"--listening-port={port}",
        f"--min-port={relay}", f"--max-port={relay + 19}", "--use-auth-secret", f"--static-auth-secret={TURN_SECRET}",
        "--realm=sandra.test", "--allow-loopback-peers", "--no-cli", "--no-tls", "--no-dtls", "--fingerprint",
        "--no-multicast-peers", f"--userdb={tmp / 'turndb'}", f"--pidfile={tmp / 'turnserver.pid'}",
        "--log-file=stdout", "--simple-log", "--no-software-attribute",
    ]
    with log.open("wb") as out:
        proc = subprocess.Popen(args, stdout=out, stderr=subprocess.STDOUT)
        try:
            deadline = time.monotonic() + 15
            while not _answers_stun(port):
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"coturn did not start:\n{log.read_text(errors='replace')[-3000:]}")
            yield f"turn:127.0.0.1:{port}?transport=udp"
        finally:
            proc.terminate()
            try:
                proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def turn_env(url: str, secret: str = TURN_SECRET, ttl_s: int = 600) -> dict[str, str]:
    return {**SCRIPTED, "SANDRA_WEBRTC_TURN_URLS": url, "SANDRA_TURN_SECRET": secret, "SANDRA_WEBRTC_TURN_TTL_S": str(ttl_s)}


@pytest.fixture(scope="module")
def relay_server(coturn: str) -> Iterator[SandraServer]:
    with sandra_server(turn_env(coturn), "turn-relay") as server:
        yield server


@pytest.fixture(scope="module")
def speaking_browser(playwright_driver: Any, fake_mics: dict[str, Path]) -> Iterator[Any]:
    browser = launch_chromium(playwright_driver, fake_mics["speech"])
    yield browser
    browser.close()


def open_relay_page(browser: Any, url: str) -> tuple[Any, list[str]]:
    return open_page(browser, url, init_script=FORCE_RELAY)


def test_a_voice_turn_through_coturn_with_chromium_forced_to_relay(speaking_browser: Any, relay_server: SandraServer) -> None:
    page, errors = open_relay_page(speaking_browser, f"{relay_server.url}/")
    page.click("#call")
    wait_event(page, "call:started", timeout=20_000)
    pair = page.evaluate(SELECTED_PAIR)
    assert pair is not None and pair["type"] == "relay" and pair["address"] == "127.0.0.1", pair
    heard = wait_event(page, "transcript", "m.final", timeout=40_000)  # the question, through the relay
    answer = wait_event(page, "response:done", f"m.turn_id === {heard['turn_id']}", timeout=30_000)
    assert answer["interrupted"] is False and answer["text"]
    metrics = wait_event(page, "metrics", f"m.turn_id === {heard['turn_id']}")
    assert metrics.get("voice_to_voice_ms", 0) > 0
    close_page(page, errors)


@pytest.mark.parametrize("case", ["wrong_secret", "expired"])
def test_wrong_or_expired_turn_credentials_fail_with_a_clear_error(case: str, quiet_browser: Any, coturn: str) -> None:
    env = turn_env(coturn, secret="not-the-coturn-secret") if case == "wrong_secret" else turn_env(coturn, ttl_s=-60)
    with sandra_server(env, f"turn-{case}") as server:
        page, errors = open_relay_page(quiet_browser, f"{server.url}/")
        page.click("#call")
        page.wait_for_selector("#error:not([hidden])", timeout=20_000)
        message = page.inner_text("#error")
        assert "relay server (TURN) refused" in message and "credentials are wrong or expired" in message, message
        assert page.evaluate("window.sandra.callActive") is False
        page.context.close()
        assert errors == []
