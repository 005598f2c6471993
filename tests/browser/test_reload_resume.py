"""A page reload keeps the conversation: the next Call in the tab resumes the same session,
Sandra does not greet again, and the history goes on."""

from __future__ import annotations

from typing import Any

from .conftest import SandraServer, close_page, events, open_page, record_events, wait_event


def test_a_reload_resumes_the_conversation(quiet_browser: Any, scripted_server: SandraServer) -> None:
    page, errors = open_page(quiet_browser, scripted_server.url)
    try:
        page.click("#call")
        first = wait_event(page, "call:started")
        assert first["resume_token"]
        wait_event(page, "response:done", timeout=15_000)  # the greeting
        page.fill("#text", "Is there parking?")
        page.press("#text", "Enter")
        answer = wait_event(page, "response:done", "m.turn_id > 1", timeout=15_000)
        session = page.evaluate("window.sandra.sessionId")

        page.reload()
        page.wait_for_selector("body[data-ready=true]")
        record_events(page)
        page.click("#call")
        again = wait_event(page, "call:started")
        assert again["resumed"] is True
        assert page.evaluate("window.sandra.sessionId") == session
        page.fill("#text", "Thanks")
        page.press("#text", "Enter")
        ack = wait_event(page, "message:ack")
        assert ack["turn_id"] > answer["turn_id"]  # the turn numbering goes on
        wait_event(page, "response:done", f"m.turn_id === {ack['turn_id']}", timeout=15_000)
        greetings = [e for e in events(page, "response:done") if e["turn_id"] == 1]
        assert greetings == []  # not greeted again after the reload
    finally:
        close_page(page, errors)
