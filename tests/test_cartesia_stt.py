"""CartesiaSTT against the fake Cartesia STT WebSocket."""

from __future__ import annotations

import asyncio
import logging

import pytest

from server.errors import ProviderError
from server.providers.cartesia_stt import CartesiaSTT, join_deltas
from tests.support.audio import tone16k as speech
from tests.fakes.cartesia_fake import API_KEY

WRONG_KEY = "sk_car_wrong_secret_value_555"
FRAME = 640  # 20 ms of 16 kHz s16le


@pytest.fixture
def make_stt(provider_factory):
    def make(env: dict[str, str] | None = None, **stt: object) -> CartesiaSTT:
        return provider_factory(CartesiaSTT, env, stt=stt)

    return make


@pytest.fixture
def stt(make_stt):
    return make_stt()


async def feed_all(stream, audio: bytes) -> None:
    for k in range(0, len(audio), FRAME):
        await stream.feed(audio[k : k + FRAME])


def test_join_deltas():
    assert join_deltas(["What time", " is check-in?"]) == "What time is check-in?"
    assert join_deltas(["Hola,", "¿qué tal?"]) == "Hola, ¿qué tal?"
    assert join_deltas([]) == ""


async def test_streams_audio_reports_partials_and_returns_the_final_text(fake, stt):
    partials: list[str] = []
    got_partial = asyncio.Event()

    def on_partial(text: str) -> None:
        partials.append(text)
        got_partial.set()

    audio = speech(1.0)
    stream = await stt.open("es", on_partial)
    try:
        await feed_all(stream, audio)
        await fake.until(lambda: fake.stt.connections and len(fake.stt.connections[0].audio) == len(audio),
                         what="the audio to be streamed before the end of the turn")
        await asyncio.wait_for(got_partial.wait(), 5)
        transcript = await stream.finish()
    finally:
        await stream.aclose()
    assert transcript.text == "What time is check-in?" and transcript.language == "es"
    assert partials[0] == "What"
    assert partials[-1] == "What time is check-in?"
    (conn,) = fake.stt.connections
    assert bytes(conn.audio) == audio and conn.texts == ["finalize"]
    assert conn.query == {"model": "ink-whisper", "language": "es", "encoding": "pcm_s16le", "sample_rate": "16000"}
    assert conn.headers["X-API-Key"] == API_KEY and conn.headers["Cartesia-Version"]
    await fake.until(lambda: conn.closed, what="the socket to be closed")


async def test_final_deltas_are_joined(fake, stt):
    fake.stt.final_parts = ["Hola,", "¿a qué hora", " es la entrada?"]
    stream = await stt.open("es")
    try:
        await feed_all(stream, speech(0.3))
        assert (await stream.finish()).text == "Hola, ¿a qué hora es la entrada?"
    finally:
        await stream.aclose()


async def test_each_utterance_gets_its_own_connection(fake, stt):
    for _ in range(2):
        stream = await stt.open("en")
        try:
            await feed_all(stream, speech(0.2))
            assert (await stream.finish()).text == "What time is check-in?"
        finally:
            await stream.aclose()
    assert len(fake.stt.connections) == 2


@pytest.mark.parametrize("where", ["mid_utterance", "on_finalize"])
async def test_socket_drop_is_a_retryable_error(fake, stt, where):
    if where == "mid_utterance":
        fake.stt.drop_after_bytes = 3200
    else:
        fake.stt.drop_on_finalize = True
    stream = await stt.open("en")
    try:
        await feed_all(stream, speech(0.5))
        with pytest.raises(ProviderError) as info:
            await stream.finish()
    finally:
        await stream.aclose()
    assert info.value.retryable and "socket" in str(info.value)


async def test_bad_key_names_the_variable_not_the_value(fake, make_stt, caplog):
    caplog.set_level(logging.DEBUG)
    stt = make_stt(env={"CARTESIA_API_KEY": WRONG_KEY})
    stream = await stt.open("en")
    try:
        await feed_all(stream, speech(0.2))
        with pytest.raises(ProviderError) as info:
            await stream.finish()
    finally:
        await stream.aclose()
    assert "CARTESIA_API_KEY" in str(info.value) and not info.value.retryable
    assert WRONG_KEY not in str(info.value) and WRONG_KEY not in caplog.text


async def test_error_message_is_a_provider_error(fake, stt):
    fake.stt.error_on_finalize = {"title": "Server error", "message": "Something broke", "status": 500}
    stream = await stt.open("en")
    try:
        await feed_all(stream, speech(0.2))
        with pytest.raises(ProviderError, match="Something broke") as info:
            await stream.finish()
    finally:
        await stream.aclose()
    assert info.value.retryable


async def test_no_answer_times_out(fake, make_stt):
    fake.stt.delay = 10
    stt = make_stt(timeout_s=0.3)
    stream = await stt.open("en")
    try:
        await feed_all(stream, speech(0.2))
        with pytest.raises(ProviderError, match="no transcript within") as info:
            await stream.finish()
    finally:
        await stream.aclose()
    assert info.value.retryable


async def test_an_abandoned_utterance_closes_its_socket(fake, stt):
    stream = await stt.open("en")
    await feed_all(stream, speech(0.2))
    await fake.until(lambda: fake.stt.connections and fake.stt.connections[0].audio, what="audio")
    await stream.aclose()
    await fake.until(lambda: fake.stt.connections[0].closed, what="the socket to be closed")
    assert fake.stt.connections[0].finalized == 0
