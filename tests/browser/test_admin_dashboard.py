"""The host's dashboard in Chromium: the token gate, a call live then recorded, its audio,
the latency chart, the inbox and the guest-link form. Screenshots: desktop and phone."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest

from tests.browser.conftest import SCRIPTED, SandraServer, open_page, sandra_server, screenshot, wait_event

TOKEN = "dashboard-test-token"
PHONE = {"viewport": {"width": 390, "height": 844}, "device_scale_factor": 2, "is_mobile": True, "has_touch": True}


@pytest.fixture(scope="module")
def host_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SandraServer]:
    tmp = tmp_path_factory.mktemp("host")
    inbox = tmp / "inbox.jsonl"
    inbox.write_text(
        json.dumps({"time": "2026-12-01T09:12:00+00:00", "urgency": "high", "message": "The shower has no hot water.",
                    "language": "en"}) + "\n"
        + json.dumps({"time": "2026-12-01T10:40:00+00:00", "urgency": "normal",
                      "message": "Question from the guest: can we check out at 2 pm?", "language": "en"}) + "\n")
    env = {**SCRIPTED, "SANDRA_SCRIPTED_REPLY": "Check-in is from three in the afternoon.", "SANDRA_RECORDING_ENABLED": "true", "SANDRA_RECORDING_DIR": str(tmp / "recordings"),
           "SANDRA_ADMIN_TOKEN": TOKEN, "SANDRA_LLM_HOST_INBOX": str(inbox),
           "SANDRA_JWT_SECRET": "a-test-secret-of-at-least-32-bytes-for-guest-links"}
    with sandra_server(env, "host") as server:
        yield server


def _dashboard(browser: Any, url: str, **options: Any) -> tuple[Any, list[str]]:
    context = browser.new_context(**options)
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.goto(f"{url}/admin")
    page.wait_for_selector("body[data-ready=true]")
    return page, errors


def _sign_in(page: Any, token: str) -> None:
    page.fill("#token", token)
    page.click("#gate-form button[type=submit]")


def test_the_dashboard_asks_for_the_token(quiet_browser: Any, host_server: SandraServer) -> None:
    page, errors = _dashboard(quiet_browser, host_server.url, viewport={"width": 1280, "height": 800})
    assert page.is_visible("#gate") and not page.is_visible("#dashboard")
    _sign_in(page, "not-the-token")
    page.wait_for_selector("#gate-error:not([hidden])")
    assert "not accepted" in page.inner_text("#gate-error") and not page.is_visible("#dashboard")
    _sign_in(page, TOKEN)
    page.wait_for_selector("#dashboard:not([hidden])")
    assert page.evaluate("sessionStorage.getItem('sandra.adminToken')") == TOKEN
    page.reload()  # kept for the tab
    page.wait_for_selector("#dashboard:not([hidden])")
    page.click("#logout")
    page.wait_for_selector("#gate:not([hidden])")
    assert page.evaluate("sessionStorage.getItem('sandra.adminToken')") is None
    page.context.close()
    assert errors == []


def test_a_call_live_then_recorded_played_and_charted(quiet_browser: Any, host_server: SandraServer) -> None:
    admin, errors = _dashboard(quiet_browser, host_server.url, viewport={"width": 1366, "height": 900})
    audio_requests: list[dict[str, str]] = []
    admin.on("request", lambda r: audio_requests.append(r.headers) if "/audio" in r.url else None)
    _sign_in(admin, TOKEN)
    admin.wait_for_selector("#dashboard:not([hidden])")
    assert admin.locator("#inbox .msg").count() == 2

    call, call_errors = open_page(quiet_browser, f"{host_server.url}/", viewport={"width": 1280, "height": 800})
    call.click("#call")
    greeting = wait_event(call, "response:done", timeout=30_000)
    assert "this call is recorded" in greeting["text"]
    session = call.evaluate("window.sandra.sessionId")
    live = admin.locator(f"#live .live-call[data-session='{session}']")
    live.wait_for(timeout=10_000)
    assert "EN" in live.inner_text().upper()
    call.fill("#text", "Where can I park?")
    call.click("#send")
    wait_event(call, "response:done", "m.turn_id > 1 && m.interrupted === false", timeout=30_000)
    wait_event(call, "metrics", "m.turn_id > 1 && m.kind === 'text'")
    admin.wait_for_function(
        f"() => /last reply/.test(document.querySelector(\"#live [data-session='{session}']\")?.textContent || '')",
        timeout=10_000)
    call.evaluate("window.sandra.endCall()")
    call.context.close()
    assert call_errors == []

    item = admin.locator(f"#calls .call-item[data-session='{session}']")
    item.wait_for(timeout=15_000)
    admin.wait_for_selector(f"#live .live-call[data-session='{session}']", state="detached", timeout=5_000)
    assert "audio" in item.inner_text()
    item.click()
    admin.wait_for_selector("#lines .line.sandra")
    lines = admin.locator("#lines .line")
    texts = lines.all_inner_texts()
    assert any("Where can I park?" in t for t in texts) and any("three in the afternoon" in t for t in texts)
    admin.wait_for_function("() => document.querySelector('#player').readyState >= 1 && document.querySelector('#player').duration > 5")
    reply_line = admin.locator("#lines .line.sandra").nth(1)
    start_s = float(reply_line.get_attribute("data-start")) / 1000
    reply_line.click()
    admin.wait_for_function(
        f"() => {{ const p = document.querySelector('#player'); return !p.paused && p.currentTime > {start_s - 0.3}; }}",
        timeout=10_000)
    admin.wait_for_selector("#lines .line.playing")
    assert any("range" in h for h in audio_requests), audio_requests  # the element streams with ranges
    assert not any(TOKEN in str(h) for h in audio_requests)  # the signed URL, not the admin token

    # The latency chart: p50/p95 bars for the stages this (typed) call had: typed-to-voice, LLM, TTS.
    admin.wait_for_selector("#chart rect.p50[data-stage=text_to_voice_ms]")
    assert admin.locator("#chart rect[data-stage=voice_to_voice_ms]").count() == 0  # no voice turn: no bar
    assert admin.locator("#chart rect.p50").count() >= 3 and admin.locator("#chart rect.p95").count() >= 3

    # The inbox: mark one handled.
    admin.locator("#inbox .msg").first.locator("button").click()
    admin.wait_for_selector("#inbox .msg.handled")
    assert admin.inner_text("#inbox-count") == "1"

    # The guest link form: POST /api/guest-links, the link and its QR code drawn in the page.
    admin.fill("[name=name]", "Ana García")
    admin.click("#link-form button[type=submit]")
    admin.wait_for_selector("#link-result:not([hidden]), #link-error:not([hidden])")
    assert admin.is_visible("#link-result"), admin.inner_text("#link-error")
    assert "?t=" in admin.input_value("#link-url")
    assert int(admin.get_attribute("#qr", "data-modules")) >= 21
    admin.locator("#player").evaluate("p => p.pause()")
    admin.evaluate("window.scrollTo(0, 0)")
    screenshot(admin, "admin-desktop")

    phone, phone_errors = _dashboard(quiet_browser, host_server.url, **PHONE)
    _sign_in(phone, TOKEN)
    phone.wait_for_selector(f"#calls .call-item[data-session='{session}']")
    phone.click(f"#calls .call-item[data-session='{session}']")
    phone.wait_for_selector("#lines .line.sandra")
    phone.evaluate("window.scrollTo(0, 0)")
    width = phone.evaluate("document.documentElement.scrollWidth")
    assert width <= 390, f"the dashboard scrolls sideways on a phone ({width} px)"
    screenshot(phone, "admin-phone")
    phone.context.close()
    admin.context.close()
    assert errors == [] and phone_errors == []

