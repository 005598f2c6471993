"""A server crash mid-call: the page replaces the dead peer connection and the call goes on."""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

from .conftest import SCRIPTED, close_page, events, now, open_page, sandra_server, wait_event


def test_the_call_survives_a_server_restart(quiet_browser: Any) -> None:
    with sandra_server(SCRIPTED, "reconnect-1") as first:
        page, errors = open_page(quiet_browser, f"{first.url}/", viewport={"width": 1280, "height": 800})
        # Notice the dead peer quickly, and keep trying long enough for a restart.
        page.evaluate("Object.assign(window.sandra.options, {deadAfterMs: 1500, reconnectAttempts: 6})")
        page.click("#call")
        wait_event(page, "response:done")
        old_session = page.evaluate("window.sandra.sessionId")
        first.process.kill()  # a crash: no goodbye on the datachannel
        first.process.wait()
        wait_event(page, "reconnecting", timeout=10_000)
        assert page.get_attribute("#state", "data-state") == "reconnecting"

    with sandra_server(SCRIPTED, "reconnect-2", port=urlsplit(first.url).port):
        reconnected = wait_event(page, "reconnected", timeout=30_000)
        reconnected_at = next(e["at"] for e in events(page, "reconnected"))
        assert reconnected["session_id"] != old_session
        page.wait_for_selector("#state[data-state=listening], #state[data-state=speaking], #state[data-state=thinking]")
        status = page.evaluate("window.sandra.getStatus()")
        assert status["callActive"] and status["socket"]["authenticated"] and status["webrtc"]["connected"]

        wait_event(page, "response:delta", since=reconnected_at)  # greeted again on the new session
        asked_at = now(page)
        page.fill("#text", "Are you still there?")
        page.press("#text", "Enter")
        wait_event(page, "state", "m.state === 'speaking'", since=asked_at)
        assert wait_event(page, "response:delta", "m.text", since=asked_at)
        assert events(page, "call:ended") == []
        close_page(page, errors)
