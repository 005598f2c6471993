"""Barge-in in two steps over real aiortc peers: a noise pauses Sandra and she resumes; real
words confirm the interruption and are answered."""

from __future__ import annotations

from server.providers.scripted import TTS_RATE, synthetic_voice
from tests.support.audio import resample, silence, speech

LONG = "Check-in is from three in the afternoon, and the key box is by the door on the left. Anything else?"
# Held speech reaches STT with its 300 ms pre-roll and the silence that ended it: a 220 ms
# burst is about 0.6 s of audio, a spoken question well over a second.
SCRIPTED = {"reply": LONG, "short_ms": 750, "short_transcript": ""}


def burst(ms: int = 220) -> bytes:
    """A voiced burst (a cough, a door): the scripted voice, ``ms`` long, at 48 kHz."""
    return resample(synthetic_voice("x" * (ms // 55)).tobytes(), TTS_RATE)


async def _speaking(peer) -> tuple[int, dict]:
    peer.send({"type": "message", "text": "Tell me about check-in", "id": "q"})
    ack = await peer.wait_for("message:ack")
    speaking = await peer.wait_for("state", lambda e: e["state"] == "speaking" and e["turn_id"] == ack["turn_id"])
    await peer.wait_until(lambda: peer.loud_frames(since=speaking["_at"]) > 25, what="reply audio")
    return ack["turn_id"], speaking


async def test_a_noise_over_sandra_pauses_her_and_she_resumes_the_whole_reply(server_factory, peer_factory):
    async with server_factory(scripted=SCRIPTED) as srv:
        peer = await peer_factory(srv, fast_receive=True)
        turn, _ = await _speaking(peer)
        mark = len(peer.events)
        peer.mic.play(burst() + silence(200))
        barge = await peer.wait_for("barge-in", after=mark)
        assert barge == {**barge, "turn_id": turn, "source": "voice", "tentative": True}
        quiet = await peer.wait_until(lambda: peer.quiet_since(barge["_at"] - 0.5), what="silence")
        assert quiet - barge["_at"] < 0.08  # paused at once
        resumed = await peer.wait_for("resume", after=mark)
        assert resumed["turn_id"] == turn and resumed["playhead_ms"] > 0
        assert resumed["_at"] - barge["_at"] < 1.5  # the burst, the 100 ms that end it, at most resume_ms
        await peer.wait_until(lambda: peer.loud_frames(since=resumed["_at"]) > 10, what="her voice again")
        done = await peer.wait_for("response:done", lambda e: e["turn_id"] == turn, after=mark, timeout=30)
        assert done["interrupted"] is False and done["text"] == LONG  # remembered whole
        assert not [e for e in peer.events[mark:] if e["type"] == "barge-in" and not e["tentative"]]
        call = srv.sessions.calls[peer.session_id]
        assert call.history[-1].text == LONG and not call.history[-1].interrupted


async def test_a_backchannel_over_sandra_does_not_stop_her(server_factory, peer_factory):
    async with server_factory(scripted={**SCRIPTED, "short_transcript": "Uh-huh."}) as srv:
        peer = await peer_factory(srv, fast_receive=True)
        turn, _ = await _speaking(peer)
        mark = len(peer.events)
        peer.mic.play(burst() + silence(200))
        await peer.wait_for("resume", after=mark)
        done = await peer.wait_for("response:done", lambda e: e["turn_id"] == turn, after=mark, timeout=30)
        assert done["interrupted"] is False


async def test_real_words_over_sandra_confirm_the_interruption_and_are_answered(server_factory, peer_factory):
    async with server_factory(scripted=SCRIPTED) as srv:
        peer = await peer_factory(srv, fast_receive=True)
        turn, _ = await _speaking(peer)
        mark = len(peer.events)
        peer.mic.play(speech("Is there parking near the flat?") + silence(100))
        first = await peer.wait_for("barge-in", after=mark)
        assert first["tentative"] is True
        confirmed = await peer.wait_for("barge-in", lambda e: e["tentative"] is False, after=mark)
        assert confirmed == {**confirmed, "turn_id": turn, "source": "voice"}
        cut = await peer.wait_for("response:done", lambda e: e["turn_id"] == turn, after=mark)
        assert cut["interrupted"] is True and LONG.startswith(cut["text"]) and len(cut["text"]) < len(LONG)
        assert "resume" not in peer.types()[mark:]
        answer = await peer.wait_for("response:done", lambda e: e["turn_id"] > turn, after=mark, timeout=30)
        assert answer["interrupted"] is False
        text = await (await _get(srv.url + "/metrics")).text()
        assert "sandra_tentative_barge_ins_total 1.0" in text and 'sandra_barge_ins_total{source="voice"} 1.0' in text


async def _get(url: str):
    import aiohttp

    session = aiohttp.ClientSession()
    response = await session.get(url)
    await response.read()
    await session.close()
    return response
