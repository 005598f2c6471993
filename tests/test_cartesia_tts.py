"""CartesiaTTS against the fake Cartesia WebSocket; the espeak fallback is the real one."""

from __future__ import annotations

import asyncio
import logging

import pytest

from server.providers.base import TTSChunk
from server.providers.cartesia_tts import TAIL_MS, CartesiaTTS, Timeline, websocket_url
from server.providers.scripted import MS_PER_CHAR
from tests.fakes.cartesia_fake import API_KEY, VOICE_ID

ONE = "Check-in is from three in the afternoon."
TWO = "Anything else I can help with?"
WRONG_KEY = "sk_car_wrong_secret_value_987654"


@pytest.fixture
def make_tts(provider_factory):
    def make(env: dict[str, str] | None = None, **tts: object) -> CartesiaTTS:
        return provider_factory(CartesiaTTS, env, tts=tts)

    return make


@pytest.fixture
def tts(make_tts):
    return make_tts()


async def speak(tts: CartesiaTTS, *sentences: str, language: str = "en") -> list[TTSChunk]:
    stream = tts.open(language)
    try:
        for sentence in sentences:
            await stream.send(sentence)
        await stream.end()
        return [chunk async for chunk in stream]
    finally:
        await stream.aclose()


def audio_ms(chunks: list[TTSChunk]) -> float:
    assert all(c.pcm and len(c.pcm) % 2 == 0 for c in chunks), "every chunk carries audio"
    return sum(len(c.pcm) / 2 / c.sample_rate * 1000 for c in chunks)


def check_cartesia_audio(chunks: list[TTSChunk], *sentences: str) -> None:
    """As long as the fake synthesises for ``sentences``, plus perhaps the tail that
    carries the visemes and text arriving after the last audio."""
    spoken = sum(len(s) for s in sentences) * MS_PER_CHAR
    assert spoken - 1 <= audio_ms(chunks) <= spoken + TAIL_MS + 1


def check_visemes_inside_audio(chunks: list[TTSChunk]) -> None:
    total = audio_ms(chunks)
    visemes = [v for c in chunks for v in c.visemes]
    assert visemes, "no visemes"
    assert all(0 <= v.t_ms <= total and v.t_ms + v.dur_ms <= total + 1 for v in visemes)
    assert [v.t_ms for v in visemes] == sorted(v.t_ms for v in visemes)
    assert all(0 <= v.id <= 14 for v in visemes)


# --- the pure timeline ----------------------------------------------------------------------


def test_timeline_releases_a_sentence_once_its_last_word_is_heard():
    t = Timeline()
    t.sentence("Hello there.")
    t.sentence("Bye now.")
    assert t.words(["Hello", "there."], [0.0, 0.3], [0.3, 0.7]) != []
    assert t.finished(500) == ""
    assert t.finished(700) == "Hello there."
    assert t.unfinished() == ["Bye now."]
    assert t.phonemes(["b", "aɪ"], [0.8, 0.9], [0.9, 1.0])[0].t_ms == 800
    assert t.words(["Bye", "now."], [0.8, 1.0], [1.0, 1.2]) == []  # phonemes win from now on
    assert t.rest() == "Bye now." and t.unfinished() == []


def test_websocket_url():
    assert websocket_url("https://api.cartesia.ai/", "/tts/websocket") == "wss://api.cartesia.ai/tts/websocket"
    assert websocket_url("http://127.0.0.1:8123", "/stt/websocket") == "ws://127.0.0.1:8123/stt/websocket"


# --- streaming -----------------------------------------------------------------------------


async def test_audio_visemes_and_texts_of_a_reply(fake, tts):
    chunks = await speak(tts, ONE, TWO)
    assert {c.sample_rate for c in chunks} == {24000}
    assert sum(1 for c in chunks if c.pcm) > 2
    check_cartesia_audio(chunks, ONE, " " + TWO)
    check_visemes_inside_audio(chunks)
    assert [c.text for c in chunks if c.text] == [ONE, TWO]

    (ctx,) = fake.tts.contexts.values()
    assert ctx.done and not ctx.cancelled and not ctx.errored
    first, second, last = ctx.requests
    # Cartesia joins transcripts verbatim: the second sentence brings its space.
    assert first["transcript"] == ONE and first["continue"] is True and second["transcript"] == " " + TWO
    assert ctx.transcript == f"{ONE} {TWO}"
    assert last["transcript"] == "" and last["continue"] is False
    assert first["model_id"] == "sonic-3.5" and first["voice"] == {"mode": "id", "id": VOICE_ID}
    assert first["output_format"] == {"container": "raw", "encoding": "pcm_s16le", "sample_rate": 24000}
    assert first["language"] == "en" and first["add_phoneme_timestamps"] and first["add_timestamps"]
    (conn,) = fake.tts.connections
    assert conn.headers["X-API-Key"] == API_KEY and conn.headers["Cartesia-Version"] == "2026-03-01"


async def test_word_timestamps_give_visemes_when_there_are_no_phonemes(fake, make_tts):
    fake.tts.phonemes = False
    fake.tts.timestamps_first = True
    chunks = await speak(make_tts(sample_rate=16000), ONE, language="es")
    assert {c.sample_rate for c in chunks} == {16000}
    check_visemes_inside_audio(chunks)
    assert "".join(c.text for c in chunks) == ONE


async def test_replies_share_one_socket_and_reconnect_after_an_idle_close(fake, tts):
    await speak(tts, ONE)
    await speak(tts, TWO)
    assert len(fake.tts.connections) == 1
    fake.tts.idle_timeout_s = 0.1  # applies from the socket's next wait
    await speak(tts, ONE)
    await fake.until(lambda: fake.tts.connections[0].closed_idle, what="the idle close")
    chunks = await speak(tts, TWO)
    assert [c.text for c in chunks if c.text] == [TWO]
    assert len(fake.tts.connections) == 2 and tts.connections == 2


async def test_concurrent_replies_are_routed_by_context(fake, tts):
    a, b = await asyncio.gather(speak(tts, ONE), speak(tts, TWO))
    assert "".join(c.text for c in a) == ONE and "".join(c.text for c in b) == TWO
    check_cartesia_audio(a, ONE)
    check_cartesia_audio(b, TWO)


async def test_closing_a_reply_midway_cancels_its_context(fake, tts):
    fake.tts.chunk_delay = 0.05
    stream = tts.open("en")
    await stream.send(ONE * 3)
    got = []
    async for chunk in stream:
        got.append(chunk)
        if len(got) == 2:
            break
    await stream.aclose()
    await stream.aclose()  # twice is fine
    (ctx,) = fake.tts.contexts.values()
    await fake.until(lambda: ctx.cancelled, what="the cancel message")
    assert {"context_id": ctx.context_id, "cancel": True} in fake.tts.connections[0].messages
    assert not ctx.done


async def test_an_empty_reply_says_nothing(fake, tts):
    assert await speak(tts) == []
    assert fake.tts.connections == []


# --- failures fall back to espeak -------------------------------------------------------------


async def test_error_message_falls_back_to_espeak(fake, tts, caplog):
    fake.tts.fail()  # model_sunsetted
    chunks = await speak(tts, ONE, TWO)
    assert {c.sample_rate for c in chunks} == {22050}
    assert audio_ms(chunks) > 1000
    assert [c.text for c in chunks if c.text] == [ONE, TWO]
    check_visemes_inside_audio(chunks)
    assert "model_sunsetted" in caplog.text
    # The next reply tries Cartesia again.
    assert {c.sample_rate for c in await speak(tts, TWO)} == {24000}


async def test_bad_key_at_the_handshake_falls_back_without_leaking_it(fake, make_tts, caplog):
    caplog.set_level(logging.DEBUG)
    tts = make_tts(env={"CARTESIA_API_KEY": WRONG_KEY})
    chunks = await speak(tts, ONE)
    assert {c.sample_rate for c in chunks} == {22050} and audio_ms(chunks) > 500
    assert "".join(c.text for c in chunks) == ONE
    assert "CARTESIA_API_KEY" in caplog.text and "401" in caplog.text
    assert WRONG_KEY not in caplog.text


async def test_failure_mid_reply_speaks_the_unfinished_sentences(fake, tts):
    fake.tts.fail_after_chunks = 1 + int(len(ONE) * MS_PER_CHAR / 100)  # ONE is spoken, TWO fails
    chunks = await speak(tts, ONE, TWO)
    cartesia = [c for c in chunks if c.sample_rate == 24000]
    espeak = [c for c in chunks if c.sample_rate == 22050]
    assert cartesia and espeak and chunks.index(espeak[0]) > chunks.index(cartesia[-1])
    assert [c.text for c in chunks if c.text] == [ONE, TWO]
    spoken_ms = audio_ms(cartesia)
    assert all(v.t_ms >= spoken_ms for c in espeak for v in c.visemes)
    check_visemes_inside_audio(chunks)


async def test_silence_from_cartesia_falls_back(fake, tts):
    fake.tts.first_byte_delay = 5
    tts.stall_timeout_s = 0.3
    chunks = await speak(tts, ONE)
    assert {c.sample_rate for c in chunks} == {22050}
    assert "".join(c.text for c in chunks) == ONE
    (ctx,) = fake.tts.contexts.values()
    await fake.until(lambda: ctx.cancelled, what="the stalled context to be cancelled")


async def test_timestamps_already_received_ride_on_the_next_audio_chunk(fake, tts):
    stream = tts.open("en")
    try:
        await stream.send(ONE)
        await stream.end()
        await fake.until(lambda: fake.tts.contexts and all(c.done for c in fake.tts.contexts.values()),
                         what="Cartesia to finish the context")
        # One socket delivers in order: once a later reply is done, all of this one has arrived.
        await speak(tts, TWO)
        chunks = [chunk async for chunk in stream]
    finally:
        await stream.aclose()
    first = chunks[0]
    # A slow consumer (paced playback) gets every viseme of the sentence with its first audio.
    assert first.visemes and max(v.t_ms for v in first.visemes) > audio_ms([first])
    assert all(not c.visemes for c in chunks[1:])
    assert [c.text for c in chunks if c.text] == [ONE]
