"""The viseme timeline (client/viseme-timeline.js), a pure class, run in the real browser.

Times are handed in, so these checks are synchronous and exact: no audio, no waiting.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from .conftest import SandraServer
from .engines import ENGINES, Browsers


@pytest.fixture(scope="module", params=ENGINES)
def js(request: pytest.FixtureRequest, browsers: Browsers, fake_mics: dict[str, Path], scripted_server: SandraServer) -> Iterator[Any]:
    """Evaluate ``body`` (an async function body) with the module imported as ``m``, in each engine."""
    context = browsers.get(request.param, fake_mics["silence"]).new_context()
    page = context.new_page()
    page.goto(f"{scripted_server.url}/debug")

    def run(body: str) -> Any:
        return page.evaluate(f"async () => {{ const m = await import('/viseme-timeline.js'); {body} }}")

    yield run
    context.close()


def test_visemes_play_at_the_time_the_caller_hears_them(js: Any) -> None:
    # Received at t=1000 while audio position 200 was leaving the server, 80 ms of playout
    # delay: position p is heard at 1000 + (p - 200) + 80.
    result = js(
        """
        const tl = new m.VisemeTimeline();
        tl.add({turn_id: 3, playhead_ms: 200, visemes: [{id: 10, t_ms: 300, dur_ms: 100}, {id: 14, t_ms: 400, dur_ms: 100}]},
               {receivedAt: 1000, delayMs: 80});
        return [1179, 1180, 1200, 1280, 1290, 1379, 1381, 2000].map((now) => tl.visemeAt(now));
        """
    )
    assert result == [0, 10, 10, 14, 14, 14, 0, 0]


def test_the_mouth_blends_into_the_next_shape_near_the_end_of_a_viseme(js: Any) -> None:
    opens = js(
        """
        const tl = new m.VisemeTimeline();
        tl.add({turn_id: 1, playhead_ms: 0, visemes: [{id: 10, t_ms: 0, dur_ms: 100}, {id: 1, t_ms: 100, dur_ms: 100}]},
               {receivedAt: 0, delayMs: 0});
        return [10, 50, 70, 90, 99].map((now) => tl.shapeAt(now).open);
        """
    )
    wide_open = opens[0]
    assert wide_open == opens[1] > 0.8  # "aa" held...
    assert wide_open > opens[2] > opens[3] > opens[4] >= 0  # ...then closing smoothly towards "PP"


def test_a_barge_in_closes_the_mouth_and_late_visemes_of_that_turn_are_ignored(js: Any) -> None:
    result = js(
        """
        const tl = new m.VisemeTimeline();
        const msg = (turn, t) => ({turn_id: turn, playhead_ms: 0, visemes: [{id: 10, t_ms: t, dur_ms: 100}]});
        tl.add(msg(5, 0), {receivedAt: 0});
        const before = tl.isActive(50);
        tl.clear({endTurn: true});
        const after = [tl.isActive(50), tl.visemeAt(50)];
        tl.add(msg(5, 100), {receivedAt: 60});  // already in flight when the barge-in happened
        const late = [tl.isActive(150), tl.visemeAt(150)];
        tl.add(msg(6, 0), {receivedAt: 1000});  // the next reply animates again
        return {before, after, late, next: tl.visemeAt(1050)};
        """
    )
    assert result == {"before": True, "after": [False, 0], "late": [False, 0], "next": 10}


def test_malformed_visemes_are_skipped(js: Any) -> None:
    size = js(
        """
        const tl = new m.VisemeTimeline();
        tl.add({turn_id: 1, playhead_ms: 0, visemes: [{id: 99, t_ms: 0}, {id: 2}, null, {id: 3, t_ms: 5, dur_ms: 10}]},
               {receivedAt: 0});
        tl.add({turn_id: 1, visemes: "nope"}, {receivedAt: 0});
        return tl.size;
        """
    )
    assert size == 1
