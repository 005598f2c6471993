"""The embedded default, end to end: real speech -> local Whisper -> concierge -> espeak,
through a real aiortc call. No keys, no network."""

from __future__ import annotations

from tests.support.audio import silence, speech

OFFLINE = {"stt": {"provider": "local"}, "llm": {"provider": "concierge"}, "tts": {"provider": "espeak"}}


async def test_a_guest_asks_for_check_in_out_loud(server_factory, peer_factory):
    async with server_factory(**OFFLINE) as srv:
        peer = await peer_factory(srv)
        peer.send({"type": "call:start", "language": "en"})
        await peer.wait_for("state", lambda e: e["state"] == "speaking", timeout=20)
        peer.send({"type": "barge-in"})  # the rest of the greeting is not what this test is about
        greeting = await peer.wait_for("response:done", timeout=20)
        assert "Sandra" in "".join(e["text"] for e in peer.events if e["type"] == "response:delta"
                                   and e["turn_id"] == greeting["turn_id"])
        await peer.wait_for("state", lambda e: e["state"] == "listening", timeout=10)

        mark = len(peer.events)
        peer.mic.play(speech("What time is check-in?") + silence(200))
        transcript = await peer.wait_for("transcript", lambda e: e["final"], after=mark, timeout=20)
        assert "check" in transcript["text"].lower()
        speaking = await peer.wait_for("state", lambda e: e["state"] == "speaking", after=mark, timeout=20)
        done = await peer.wait_for("response:done", lambda e: e["turn_id"] == transcript["turn_id"], after=mark,
                                   timeout=30)
        assert "3 pm" in done["text"] and done["interrupted"] is False

        # Sandra's answer was heard: several seconds of audio with energy.
        assert peer.loud_frames(since=speaking["_at"]) > 100
        # Visemes for it arrived, with mouth shapes, inside the reply's audio.
        visemes = [v for e in peer.events[mark:] if e["type"] == "viseme" and e["turn_id"] == done["turn_id"]
                   for v in e["visemes"]]
        assert len(visemes) > 30 and len({v["id"] for v in visemes}) > 5
        reply_ms = (done["_at"] - speaking["_at"]) * 1000
        assert all(0 <= v["t_ms"] <= reply_ms + 200 for v in visemes)
        assert max(v["t_ms"] for v in visemes) > reply_ms * 0.6  # they span the reply, not just its start
        metrics = await peer.wait_for("metrics", lambda e: e["turn_id"] == done["turn_id"], after=mark)
        assert metrics["stt_ms"] > 0 and metrics["voice_to_voice_ms"] > metrics["eos_ms"]
