"""A whole call through real aiortc peers, with the scripted providers."""

from __future__ import annotations

import asyncio
import time

from tests.support.audio import silence, speech


async def test_voice_turn(server, peer_factory):
    peer = await peer_factory(server)
    peer.send({"type": "call:start", "language": "en", "id": 1})
    started = await peer.wait_for("call:started")
    assert started["id"] == 1
    greeting = await peer.wait_for("response:done")
    assert greeting["interrupted"] is False and greeting["text"]

    mark = len(peer.events)
    peer.mic.play(speech("What time is check-in?") + silence(100))
    transcript = await peer.wait_for("transcript", lambda e: e["final"], after=mark)
    assert transcript["text"] == "What time is check-in?"
    done = await peer.wait_for("response:done", after=mark, timeout=20)
    assert "three in the afternoon" in done["text"]
    assert done["interrupted"] is False
    metrics = await peer.wait_for("metrics", lambda e: e["turn_id"] == done["turn_id"], after=mark)
    for key in ("eos_ms", "stt_ms", "llm_ttft_ms", "tts_ttfb_ms", "voice_to_voice_ms"):
        assert key in metrics, key
    visemes = [v for e in peer.events[mark:] if e["type"] == "viseme" for v in e["visemes"]]
    assert visemes and any(v["id"] != 0 for v in visemes)
    assert peer.loud_frames(since=transcript["_at"]) > 50  # seconds of reply audio arrived
    assert peer.states()[-4:] == ["user_speaking", "thinking", "speaking", "listening"]
