"""A guest link opened in Chromium on a server in token mode: the token leaves the address
bar, Sandra greets the guest by name in the link's language; an expired link says so on
the page, in the guest's language. The page runs under the server's CSP with no violation."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import jwt
import pytest

from .conftest import SCRIPTED, SandraServer, close_page, open_page, sandra_server, screenshot, wait_event

SECRET = "a-browser-test-secret-long-enough-0123"


def link(server: SandraServer, **claims: Any) -> str:
    body = {"aud": "sandra", "sub": "flat-3b", "exp": int(time.time() + 3600), **claims}
    return f"{server.url}/?t={jwt.encode(body, SECRET, algorithm='HS256')}"


@pytest.fixture(scope="module")
def token_server() -> Iterator[SandraServer]:
    with sandra_server({**SCRIPTED, "SANDRA_AUTH_MODE": "token", "SANDRA_JWT_SECRET": SECRET}, "guest-link") as server:
        yield server


def csp_violations(page: Any) -> list[str]:
    found: list[str] = []
    page.on("console", lambda m: found.append(m.text) if "Content Security Policy" in m.text else None)
    return found


def test_guest_link_greets_the_guest_by_name_in_the_links_language(quiet_browser: Any, token_server: SandraServer) -> None:
    page, errors = open_page(quiet_browser, link(token_server, name="Ana", lang="es"))
    violations = csp_violations(page)
    assert "t=" not in page.url  # the token left the address bar...
    assert page.evaluate("sessionStorage.getItem('sandra.token')").count(".") == 2  # ...and stays for the tab
    assert page.evaluate("document.documentElement.lang") == "es"
    page.click("#call")
    started = wait_event(page, "call:started")
    assert started["language"] == "es"
    greeting = wait_event(page, "response:done", timeout=20_000)
    assert greeting["text"].startswith("¡Te damos la bienvenida, Ana!")
    screenshot(page, "guest-link-greeting")
    close_page(page, errors)
    assert violations == []


def test_expired_link_shows_a_friendly_message_in_the_guests_language(quiet_browser: Any, token_server: SandraServer) -> None:
    expires = 1_796_515_200  # 2026-12-06 00:00 UTC
    if time.time() < expires:
        expires = int(time.time()) - 3600
    page, errors = open_page(quiet_browser, link(token_server, exp=expires, nbf=expires - 86400 * 4))
    page.wait_for_selector("#error:not([hidden])")
    message = page.inner_text("#error")
    assert page.get_attribute("#error", "data-code") == "token_expired"
    assert message.startswith("This guest link expired on ") and "ask your host for a new one" in message
    page.click("#call")  # trying anyway: the same sentence, no call
    page.wait_for_function("() => !window.sandra.callActive && document.querySelector('#state').dataset.state === 'idle'")
    assert page.inner_text("#error") == message
    screenshot(page, "guest-link-expired")
    page.context.close()
    assert errors == []

    page, errors = open_page(quiet_browser, link(token_server, exp=int(time.time()) - 60, lang="es"))
    page.wait_for_selector("#error:not([hidden])")
    assert page.inner_text("#error").startswith("Este enlace de huésped caducó el ")
    page.context.close()
    page, errors = open_page(quiet_browser, f"{token_server.url}/?t=not-a-token")
    page.wait_for_selector("#error:not([hidden])")
    assert "not valid" in page.inner_text("#error")
    page.context.close()
    assert errors == []


def test_the_debug_page_runs_under_the_csp(quiet_browser: Any, token_server: SandraServer) -> None:
    context = quiet_browser.new_context()
    page = context.new_page()
    violations = csp_violations(page)
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    response = page.goto(f"{token_server.url}/debug")
    assert response is not None and "script-src 'self'" in response.headers["content-security-policy"]
    page.wait_for_selector("body[data-ready=true]")
    context.close()
    assert violations == [] and errors == []
