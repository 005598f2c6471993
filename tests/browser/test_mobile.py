"""The call page on an iPhone-sized touch screen (375 x 812)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from .conftest import SandraServer, close_page, open_page, screenshot, wait_event

IPHONE = {
    "viewport": {"width": 375, "height": 812},
    "device_scale_factor": 2,
    "is_mobile": True,
    "has_touch": True,
    "user_agent": "Mozilla/5.0 (iPhone; CPU iPhone OS 17_0 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.0 Mobile/15E148 Safari/604.1",
}


@pytest.fixture
def phone(quiet_browser: Any, scripted_server: SandraServer) -> Iterator[Any]:
    page, errors = open_page(quiet_browser, f"{scripted_server.url}/", **IPHONE)
    yield page
    close_page(page, errors)


def box(page: Any, selector: str) -> dict[str, float]:
    found = page.locator(selector).bounding_box()
    assert found is not None, f"{selector} is not laid out"
    return found


def assert_fits_the_screen(page: Any) -> None:
    width = page.evaluate("document.documentElement.scrollWidth")
    assert width <= 375, f"the page scrolls sideways: {width}px wide"


def test_a_call_on_a_phone_by_touch(phone: Any) -> None:
    assert_fits_the_screen(phone)
    call = box(phone, "#call")
    assert call["height"] >= 44 and call["width"] >= 200  # a thumb-sized target
    assert call["y"] + call["height"] <= 812, "the Call button is below the fold"
    screenshot(phone, "call-mobile-idle")

    phone.tap("#call")
    greeting = wait_event(phone, "response:done")
    for control in ("#mute", "#interrupt", "#hangup"):
        target = box(phone, control)
        assert target["width"] >= 44 and target["height"] >= 44, control

    phone.tap(".chip >> nth=0")  # "Check-in time"
    turn = wait_event(phone, "state", f"m.state === 'speaking' && m.turn_id !== {greeting['turn_id']}")["turn_id"]
    phone.wait_for_function("() => window.sandraAvatar.mouthOpenness() > 0.3", timeout=5000)
    screenshot(phone, "call-mobile")
    done = wait_event(phone, "response:done", f"m.turn_id === {turn}", timeout=15_000)
    assert not done["interrupted"]
    assert "check-in" in phone.locator("#transcript .msg-user").last.inner_text().lower()
    assert_fits_the_screen(phone)

    phone.tap("#mute")
    assert phone.get_attribute("#mute", "aria-pressed") == "true"
    assert phone.evaluate("window.sandra.getStatus().vad.analyzing") is False
    phone.tap("#mute")
    assert phone.evaluate("window.sandra.getStatus().vad.analyzing") is True

    phone.tap("#text")
    phone.keyboard.type("Gracias")
    phone.tap("#send")
    wait_event(phone, "response:delta", f"m.turn_id > {turn}")
    phone.tap("#hangup")
    wait_event(phone, "call:ended")
    phone.wait_for_selector("#call:visible")
    assert phone.evaluate("window.sandraAvatar.blinks") > 0  # she blinks while not talking
