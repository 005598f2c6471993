"""Offline Spanish on human speech: Whisper base detects and transcribes a recorded Spanish
guest, and in a real aiortc call Sandra answers her in Spanish from the knowledge base."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from faster_whisper import WhisperModel

from server import config as config_module
from server import knowledge
from server.providers.local_stt import LocalWhisperSTT, load_model
from tests.speech import find
from tests.support.audio import silence

CONFIG = config_module.load(stt={"provider": "local"})
KB = knowledge.load(config_module.ROOT / "knowledge.toml")
OFFLINE = {"stt": {"provider": "local"}, "llm": {"provider": "concierge"}, "tts": {"provider": "espeak"}}


@pytest.fixture(scope="module")
def base() -> WhisperModel:
    return load_model(CONFIG, "es")


@pytest.fixture
async def stt(base: WhisperModel) -> AsyncIterator[LocalWhisperSTT]:
    stt = LocalWhisperSTT(CONFIG, models={"en": base, "es": base})
    yield stt
    await stt.aclose()


async def test_a_recorded_spanish_prompt_is_detected_as_spanish(stt: LocalWhisperSTT) -> None:
    prompt = find("human-es-agent-newlocation")  # "Por favor ingrese una nueva extension seguida por ..."
    transcript = await stt.transcribe(prompt.pcm16k(), None)
    assert transcript.language == "es"
    assert "extensi" in transcript.text.lower() and "favor" in transcript.text.lower()


async def test_an_english_recording_is_detected_as_english(stt: LocalWhisperSTT) -> None:
    transcript = await stt.transcribe(find("human-en-tt-monkeysintro").pcm16k(), "auto")
    assert transcript.language == "en" and "monkeys" in transcript.text.lower()


async def test_the_joined_spanish_question_finds_check_in(stt: LocalWhisperSTT) -> None:
    question = find("human-es-check-in")
    transcript = await stt.transcribe(question.pcm16k(), "es")
    assert KB.search(transcript.text, "es", k=1)[0][0].id == question.entry == "check_in"


async def test_a_spanish_guest_is_answered_in_spanish_in_a_real_call(server_factory, peer_factory) -> None:
    """No language at call:start: the first utterance's language (detected) is the call's."""
    question = find("human-es-check-in")  # "¿A qué hora es la entrada?", joined from recorded words
    async with server_factory(**OFFLINE) as srv:
        peer = await peer_factory(srv)
        peer.send({"type": "call:start"})
        started = await peer.wait_for("call:started", timeout=20)
        assert started["language"] == "en"  # until the guest speaks
        await peer.wait_for("state", lambda e: e["state"] == "speaking", timeout=20)
        peer.send({"type": "barge-in"})  # skip the rest of the greeting
        await peer.wait_for("state", lambda e: e["state"] == "listening", timeout=10)

        mark = len(peer.events)
        peer.mic.play(question.pcm48k() + silence(300))
        transcript = await peer.wait_for("transcript", lambda e: e["final"], after=mark, timeout=60)
        assert "entrada" in transcript["text"].lower()
        answer = KB.get("check_in").answer_in("es")
        said, after = "", mark
        while said.strip() != answer and answer.startswith(said.strip()):
            delta = await peer.wait_for("response:delta", lambda e: e["turn_id"] == transcript["turn_id"],
                                        after=after, timeout=20)
            after = next(i for i, e in enumerate(peer.events) if e is delta) + 1
            said += delta["text"]
        assert said.strip() == answer, (transcript["text"], said)
        # and she says it: visemes of the reply's audio arrive
        await peer.wait_for("viseme", lambda e: e["turn_id"] == transcript["turn_id"], after=mark, timeout=20)
