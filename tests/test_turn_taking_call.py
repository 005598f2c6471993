"""Turn-taking end to end (issue 10): a real aiortc call through the embedded default
pipeline (local Whisper, the concierge, espeak-ng) with ``[turn] detector = "smart"``,
the caller speaking Piper's joe voice (a neural voice; deterministic: the same audio on
every run). The rules themselves are tested in tests/test_turns.py."""

from __future__ import annotations

import asyncio
import functools

from tests.support.audio import resample, silence

SMART = {"turn": {"detector": "smart"}, "stt": {"provider": "local"}, "llm": {"provider": "concierge"},
         "tts": {"provider": "espeak"}}
WIFI = "naranjas 2026"  # the knowledge base's wifi entry


@functools.cache
def piper(text: str) -> bytes:
    """``text`` spoken by Piper's joe, 48 kHz mono s16 (what a browser sends)."""
    from bench.eot import piper_speech

    return resample(piper_speech(text, deterministic=True), 16000)


async def _connected(srv, peer_factory):
    peer = await peer_factory(srv, fast_receive=True)
    await asyncio.sleep(0.3)  # no greeting: Sandra listens from the start
    return peer


async def _reply(peer, after: int, predicate=lambda turn: True, *, containing: str) -> tuple[int, str]:
    """The first reply (after ``after``) whose text so far holds ``containing``: (turn, text).
    Its audio need not play to the end: the text is in the ``response:delta`` events."""

    def text(turn: int) -> str:
        return "".join(e["text"] for e in peer.events[after:] if e["type"] == "response:delta" and e["turn_id"] == turn)

    def found():
        turns = sorted({e["turn_id"] for e in peer.events[after:] if e["type"] == "response:delta"})
        return next(((t, text(t)) for t in turns if predicate(t) and containing in text(t)), None)

    return await peer.wait_until(found, timeout=40, what=f"a reply with {containing!r}", audio=False)


def _finals(peer, after: int) -> list[dict]:
    return [e for e in peer.events[after:] if e["type"] == "transcript" and e["final"]]


async def test_a_hesitant_utterance_is_one_turn(server_factory, peer_factory):
    async with server_factory(**SMART) as srv:
        peer = await _connected(srv, peer_factory)
        mark = len(peer.events)
        # The detector's cue: an utterance ending in "the" is not finished.
        peer.mic.play(piper("I need to know the") + silence(1000) + piper("door code.") + silence(300))
        turn, _ = await _reply(peer, mark, containing="4 7 1 9")
        finals = _finals(peer, mark)
        assert len(finals) == 1, [e["text"] for e in finals]  # not cut at the pause
        assert "code" in finals[0]["text"].lower() and finals[0]["turn_id"] == turn
        peer.send({"type": "barge-in"})  # enough heard: the turn's metrics come with the cut
        metrics = await peer.wait_for("metrics", lambda e: e["turn_id"] == turn and "eos_ms" in e, after=mark)
        # At the pause the detector judged the utterance unfinished and kept listening.
        assert metrics["eot_verdicts"][0] == "incomplete", metrics
        answered = {e["turn_id"] for e in peer.events[mark:] if e["type"] == "response:delta"}
        assert answered == {turn}  # the first half was never answered


async def test_a_complete_question_ends_its_turn_on_the_detectors_verdict(server_factory, peer_factory):
    async with server_factory(**SMART) as srv:
        peer = await _connected(srv, peer_factory)
        mark = len(peer.events)
        peer.mic.play(piper("What is the wifi password?") + silence(2500))
        turn, _ = await _reply(peer, mark, containing=WIFI)
        peer.send({"type": "barge-in"})  # enough heard: the turn's metrics come with the cut
        metrics = await peer.wait_for("metrics", lambda e: e["turn_id"] == turn and "eos_ms" in e, after=mark)
        assert metrics["eot_verdicts"] == ["complete"], metrics  # ended by the verdict, not max_silence_ms
        # min_silence_ms (200) + the speculative transcript; generous for a loaded machine
        assert metrics["eos_ms"] < 1500, metrics


async def test_a_real_interruption_over_sandra_is_confirmed_and_answered(server_factory, peer_factory):
    # Default resume_ms: if the words come after she resumed, they still confirm the interruption.
    async with server_factory(**SMART) as srv:
        peer = await _connected(srv, peer_factory)
        peer.send({"type": "message", "text": "Where is the nearest supermarket?"})
        ack = await peer.wait_for("message:ack")
        turn = ack["turn_id"]
        speaking = await peer.wait_for("state", lambda e: e["state"] == "speaking" and e["turn_id"] == turn,
                                       timeout=30)
        await peer.wait_until(lambda: peer.loud_frames(since=speaking["_at"]) > 40, what="her reply", timeout=20)
        mark = len(peer.events)
        peer.mic.play(piper("Wait, is there parking?") + silence(300))
        first = await peer.wait_for("barge-in", after=mark)
        assert first == {**first, "turn_id": turn, "source": "voice", "tentative": True}
        confirmed = await peer.wait_for("barge-in", lambda e: e["tentative"] is False, after=mark, timeout=20)
        assert confirmed["turn_id"] == turn
        # She may have resumed while Whisper was still at it (resume_ms); the words cut her then.
        types = peer.types()[mark:]
        assert "resume" not in types or types.index("resume") < types.index("barge-in", types.index("barge-in") + 1)
        cut = await peer.wait_for("response:done", lambda e: e["turn_id"] == turn, after=mark)
        assert cut["interrupted"] is True
        answer, _ = await _reply(peer, mark, lambda t: t > turn, containing="no parking space")
        assert [e["turn_id"] for e in _finals(peer, mark)] == [answer]
        assert "parking" in _finals(peer, mark)[0]["text"].lower()
