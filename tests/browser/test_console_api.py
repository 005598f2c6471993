"""The original deployment guide's DevTools sequence, typed on the call page as written."""

from __future__ import annotations

import json
import urllib.request
from typing import Any

from tests.browser.conftest import SandraServer, wait_event


def _connections(server: SandraServer) -> int:
    with urllib.request.urlopen(f"{server.url}/api/health", timeout=5) as response:
        return json.load(response)["webrtc"]["connections"]


def test_the_guides_console_sequence_shares_the_page_call(call_page: Any, scripted_server: SandraServer) -> None:
    before = _connections(scripted_server)
    status = call_page.evaluate(
        """async () => {
          await SandraRealtime.initialize(); SandraRealtime.startCall(); SandraRealtime.sendMessage('Hola Sandra');
          return SandraRealtime.getStatus();
        }"""
    )
    assert status["systemReady"] is True
    same = call_page.evaluate(
        """async () => (await import("/sandra.js")).SandraRealtime === window.SandraRealtime
                       && SandraRealtime.instance === window.sandra"""
    )
    assert same is True
    wait_event(call_page, "call:started")
    done = wait_event(call_page, "response:done", "m.interrupted === false && m.turn_id > 1", timeout=30_000)
    assert "three in the afternoon" in done["text"]  # the scripted reply to the typed 'Hola Sandra'
    assert _connections(scripted_server) == before + 1  # the page's one call, not a second
    assert call_page.evaluate("SandraRealtime.getStatus().callActive") is True
    assert call_page.get_attribute("body", "data-phase") == "in-call"  # the page shows the call
    ack = call_page.evaluate("SandraRealtime.bargeIn()")
    assert ack["type"] == "barge-in:ack"
    metrics = call_page.evaluate("SandraRealtime.getMetrics()")
    assert metrics["messagesSent"] >= 3 and metrics["messagesReceived"] > 5
    call_page.evaluate("SandraRealtime.endCall()")
    assert call_page.evaluate("SandraRealtime.getStatus().callActive") is False
