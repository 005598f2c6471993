"""The datachannel debug console: every flow by hand, and the server's error handling.

The whole call runs in Chromium and in Firefox (``@both_engines``); the request-id check
in Chromium only, for the suite's time (it passed in Firefox when it ran there); the
raw-message test copies to the clipboard with Chromium's clipboard permissions (not
tried in Firefox), so it runs in Chromium only."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from .conftest import SandraServer, both_engines, close_page, open_page, screenshot, wait_event


@pytest.fixture
def console(browser: Any, browser_engine: str, scripted_server: SandraServer) -> Iterator[Any]:
    clipboard = {"permissions": ["clipboard-read", "clipboard-write"]} if browser_engine == "chromium" else {}
    page, errors = open_page(browser, f"{scripted_server.url}/debug", viewport={"width": 1366, "height": 900}, **clipboard)
    yield page
    close_page(page, errors)


def log_types(page: Any, direction: str) -> list[str]:
    return page.eval_on_selector_all(f"#log .entry[data-direction={direction}]", "els => els.map(e => e.dataset.type)")


def wait_log(page: Any, direction: str, kind: str, text: str = "") -> Any:
    entry = page.locator(f"#log .entry[data-direction={direction}][data-type='{kind}']", has_text=text).last
    entry.wait_for(state="attached", timeout=15_000)
    return entry


@both_engines
def test_console_drives_a_whole_call(console: Any) -> None:
    console.click("#connect")
    wait_log(console, "out", "auth")
    wait_log(console, "in", "auth:ok")
    console.wait_for_selector("#conn[data-state=connected]")

    console.click("#start")
    wait_log(console, "in", "call:started")
    greeting = wait_event(console, "response:done")
    console.wait_for_selector("#conn[data-state=in-call]")

    console.fill("#msg", "Is there a supermarket nearby?")
    console.press("#msg", "Enter")
    wait_log(console, "out", "message", "supermarket")
    wait_event(console, "state", f"m.state === 'speaking' && m.turn_id !== {greeting['turn_id']}")
    console.click("#barge")
    wait_log(console, "out", "barge-in")
    wait_log(console, "in", "barge-in:ack")
    assert "true" in wait_log(console, "in", "response:done", "interrupted").inner_text()

    # Per-turn latency from the server's metrics; client metrics and ping from getMetrics.
    console.wait_for_selector("#turns tbody tr")
    console.wait_for_function("() => document.querySelector('#ping').textContent.endsWith('ms')")
    metrics = dict(
        console.eval_on_selector_all("#client-metrics tr", "rows => rows.map(r => [r.cells[0]?.textContent ?? r.querySelector('th').textContent, r.querySelector('td').textContent])")
    )
    assert set(metrics) == {"messagesSent", "messagesReceived", "audioChunksSent", "audioChunksReceived", "latency"}
    assert int(metrics["messagesReceived"]) > int(metrics["messagesSent"]) > 3

    # Ping/pong are logged but hidden until asked for.
    assert console.locator("#log .entry[data-type=pong]").count() > 0
    assert console.locator("#log .entry[data-type=pong]:visible").count() == 0
    console.uncheck("#hide-noise")
    assert console.locator("#log .entry[data-type=pong]:visible").count() > 0
    console.check("#hide-noise")
    screenshot(console, "debug-console")  # -firefox in Firefox

    console.click("#end")
    wait_log(console, "out", "call:end")
    wait_log(console, "in", "call:ended")
    sent = [kind for kind in log_types(console, "out") if kind != "ping"]
    assert sent == ["auth", "call:start", "message", "barge-in", "call:end"]


def test_raw_messages_exercise_the_servers_error_handling(console: Any) -> None:
    console.click("#connect")
    wait_log(console, "in", "auth:ok")

    console.fill("#raw", '{"type": "message", "text": ')  # not JSON
    console.click("#send-raw")
    error = wait_log(console, "in", "error", "bad_json")
    assert "JSON" in error.inner_text()

    console.fill("#raw", '{"type": "teleport"}')
    console.click("#send-raw")
    wait_log(console, "in", "error", "unknown_type")

    console.fill("#raw", '{"type": "message", "text": "   "}')
    console.click("#send-raw")
    wait_log(console, "in", "error", "bad_field")

    # The session survives bad input: a good request still gets its answer.
    console.fill("#raw", '{"type": "ping", "t": 1, "id": 7}')
    console.click("#send-raw")
    console.uncheck("#hide-noise")
    wait_log(console, "in", "pong", '"id":7')

    # Filter by type, then copy what is shown.
    console.fill("#filter", "error")
    visible = console.eval_on_selector_all("#log .entry:not([hidden])", "els => els.map(e => e.dataset.type)")
    assert set(visible) == {"error"} and len(visible) == 3
    console.click("#copy")
    wait_log(console, "local", "client", "copied")
    copied = console.evaluate("navigator.clipboard.readText()")
    assert copied.count("\n") == 2 and all('"error"' in line for line in copied.splitlines())


def test_an_error_answer_echoes_the_request_id(console: Any) -> None:
    console.click("#connect")
    wait_log(console, "in", "auth:ok")
    failure = console.evaluate(
        """() => window.sandra.send("call:start", { language: "fr" }, { request: true, timeout: 3000 })
                 .then(() => "accepted", (err) => err.code)"""
    )
    assert failure == "bad_field"  # not "timeout": the error came back with our id
