"""espeak-ng through its C library: audio, visemes, voices, cancellation."""

from __future__ import annotations

import asyncio
import ctypes

import numpy as np
import pytest

from server import config as config_module
from server.errors import ConfigError, ProviderError
from server.providers import create
from server.providers.base import TTSChunk, Viseme
from server.providers.espeak_tts import CHUNK_MS, EspeakTTS, VisemeTrack, _Event, load_library

SENTENCE = "What time is check-in? Check-in is from three in the afternoon."
LONG = " ".join(f"Sentence {i} of a long story about a flat in Valencia, which goes on and on." for i in range(40))


@pytest.fixture
def tts() -> EspeakTTS:
    return EspeakTTS(config_module.load())


async def speak(tts: EspeakTTS, text: str, language: str = "en") -> list[TTSChunk]:
    return [chunk async for chunk in tts.synthesize(text, language)]


def audio_of(chunks: list[TTSChunk]) -> np.ndarray:
    return np.frombuffer(b"".join(c.pcm for c in chunks), dtype="<i2")


def check_visemes(vs: list[Viseme], duration_ms: float) -> None:
    times = [v.t_ms for v in vs]
    assert times == sorted(times)
    assert all(0 <= v.t_ms < duration_ms and v.dur_ms > 0 and 0 <= v.id <= 14 for v in vs)
    assert all(v.t_ms + v.dur_ms <= duration_ms + 1 for v in vs)
    assert len({v.id for v in vs} - {0}) >= 6  # a real mix of mouth shapes, not just silence


async def test_english_sentence(tts: EspeakTTS) -> None:
    await tts.start()
    chunks = await speak(tts, SENTENCE)
    assert {c.sample_rate for c in chunks} == {22050}
    pcm = audio_of(chunks)
    duration_s = len(pcm) / 22050
    # 11 words at 165 wpm is 4 s; espeak adds the sentence pauses.
    assert 2.5 < duration_s < 7
    assert np.sqrt(np.mean(pcm.astype(np.float64) ** 2)) > 500  # clearly not silence
    assert [c.text for c in chunks] == [""] * (len(chunks) - 1) + [SENTENCE]
    assert len(chunks) >= 10 and all(0 < len(c.pcm) <= 22050 * CHUNK_MS // 1000 * 2 for c in chunks)
    vs = [v for c in chunks for v in c.visemes]
    check_visemes(vs, duration_s * 1000)
    assert vs[0].t_ms < 150  # speech starts at once
    assert vs[-1].id == 0  # and ends with the mouth closed
    assert tts.synthesized_ms == pytest.approx(duration_s * 1000)


async def test_spanish_voice(tts: EspeakTTS) -> None:
    es = await speak(tts, "La entrada es a partir de las tres de la tarde.", "es")
    pcm = audio_of(es)
    assert np.abs(pcm).max() > 5000
    vs = [v for c in es for v in c.visemes]
    check_visemes(vs, len(pcm) / 22050 * 1000)
    assert 9 in {v.id for v in vs}  # the Spanish tap r of "tres", "tarde"
    hola_en, hola_es = audio_of(await speak(tts, "hola", "en")), audio_of(await speak(tts, "hola", "es"))
    assert hola_en.shape != hola_es.shape or not np.array_equal(hola_en, hola_es)


async def test_a_clearly_spanish_sentence_gets_the_spanish_voice_on_an_english_stream(tts: EspeakTTS) -> None:
    sentence = "La entrada es a partir de las tres de la tarde."
    on_en, on_es = await speak(tts, sentence, "en"), await speak(tts, sentence, "es")
    assert len(audio_of(on_en)) == pytest.approx(len(audio_of(on_es)), rel=0.05)
    assert [v.id for c in on_en for v in c.visemes] == [v.id for c in on_es for v in c.visemes]
    english = "Check-in is from three in the afternoon."
    ids_on = {lang: [v.id for c in await speak(tts, english, lang) for v in c.visemes] for lang in ("en", "es")}
    assert ids_on["es"] == ids_on["en"]


async def test_reply_stream_puts_sentences_on_one_timeline(tts: EspeakTTS) -> None:
    stream = tts.open("en")
    await stream.send("Hello there.")
    await stream.send("The wifi password is on the fridge.")
    await stream.end()
    chunks = [c async for c in stream]
    texts = [c.text for c in chunks if c.text]
    assert texts == ["Hello there.", "The wifi password is on the fridge."]
    end_of_first = next(i for i, c in enumerate(chunks) if c.text)
    first_sentence_ms = len(audio_of(chunks[: end_of_first + 1])) / 22.05
    vs = [v for c in chunks for v in c.visemes]
    check_visemes(vs, len(audio_of(chunks)) / 22.05)
    assert any(v.t_ms > first_sentence_ms for v in vs)


async def test_stopping_early_stops_synthesis(tts: EspeakTTS) -> None:
    full = EspeakTTS(config_module.load())
    await speak(full, LONG)
    short = EspeakTTS(config_module.load())
    await speak(short, "Short.")

    stream = tts.synthesize(LONG, "en")
    first = await anext(stream)
    assert first.pcm and not first.text
    await stream.aclose()
    await speak(tts, "Short.")  # queued behind the cancelled text on the espeak thread
    cancelled_ms = tts.synthesized_ms - short.synthesized_ms
    assert full.synthesized_ms > 100_000  # minutes of speech
    assert cancelled_ms < full.synthesized_ms / 10


async def test_concurrent_sentences_are_serialised_not_mixed(tts: EspeakTTS) -> None:
    a, b = "The beach is five minutes away.", "El código de la puerta es cuatro siete uno nueve."
    alone = {a: len(audio_of(await speak(tts, a))), b: len(audio_of(await speak(tts, b, "es")))}
    texts = [a, b, a]
    together = await asyncio.gather(*(speak(tts, t, "es" if t == b else "en") for t in texts))
    for text, chunks in zip(texts, together):
        assert chunks[-1].text == text
        # espeak-ng's output varies by a few ms from run to run; a mix-up would double it.
        assert len(audio_of(chunks)) == pytest.approx(alone[text], rel=0.05)
        check_visemes([v for c in chunks for v in c.visemes], len(audio_of(chunks)) / 22.05)


async def test_unknown_voice_is_a_config_error_and_the_engine_recovers() -> None:
    bad = EspeakTTS(config_module.load(tts={"voice_es": "no-such-voice"}))
    with pytest.raises(ConfigError, match=r"\[tts\] voice_es = 'no-such-voice'"):
        await bad.start()
    with pytest.raises(ConfigError, match="voice_es"):
        await speak(bad, "hola", "es")
    assert len(audio_of(await speak(bad, "hello", "en"))) > 0


def test_missing_library_says_what_to_install() -> None:
    with pytest.raises(ProviderError, match="apt-get install espeak-ng"):
        load_library("libespeak-ng-missing.so.9")


def test_event_struct_matches_speak_lib_h() -> None:
    # gcc on speak_lib.h (1.51, x86-64): sizeof 40, audio_position at 16, user_data at 24, id at 32.
    pointer = ctypes.sizeof(ctypes.c_void_p)
    assert _Event.audio_position.offset == 16
    assert _Event.user_data.offset == 24
    assert _Event.id.offset == 24 + pointer
    assert ctypes.sizeof(_Event) == 24 + 2 * pointer


def test_viseme_track() -> None:
    track = VisemeTrack(min_pause_ms=60)
    track.add(0, "h")
    track.add(50, "ə")
    assert track.take() == [Viseme(5, 0, 50)]
    track.add(120, "l")
    track.add(160, "")  # a word join: too short for a closed mouth
    track.add(180, "oʊ")
    track.add(300, "")  # the final pause
    assert track.close(500) == [
        Viseme(11, 50, 70), Viseme(8, 120, 40), Viseme(13, 180, 60), Viseme(14, 240, 60), Viseme(0, 300, 200)
    ]
    assert track.close(600) == []


def test_registered_under_espeak() -> None:
    providers = create(config_module.load(stt={"provider": "scripted"}, llm={"provider": "scripted"},
                                          tts={"provider": "espeak"}))
    assert isinstance(providers.tts, EspeakTTS)
