"""OpenAISTT against the fake OpenAI-compatible transcription endpoint."""

from __future__ import annotations

import pytest

from server.errors import ProviderError
from server.providers.openai_stt import OpenAISTT, transcriptions_url
from tests.support.audio import tone16k as speech
from tests.fakes.openai_fake import API_KEY

WRONG_KEY = "sk-wrong-secret-value-31337"


@pytest.fixture
def make_stt(provider_factory):
    def make(env: dict[str, str] | None = None, **stt: object) -> OpenAISTT:
        return provider_factory(OpenAISTT, env, stt=stt)

    return make


def test_url():
    assert transcriptions_url("https://api.openai.com") == "https://api.openai.com/v1/audio/transcriptions"
    assert transcriptions_url("http://127.0.0.1:8000/v1/") == "http://127.0.0.1:8000/v1/audio/transcriptions"


async def test_round_trip_through_the_stream_interface(fake, make_stt):
    stt = make_stt(api_model="gpt-4o-mini-transcribe")
    audio = speech(1.25)
    stream = await stt.open("es")
    for k in range(0, len(audio), 640):
        await stream.feed(audio[k : k + 640])
    transcript = await stream.finish()
    assert transcript.text == "What time is check-in?" and transcript.language == "es"
    (req,) = fake.openai.requests
    assert req.status == 200
    assert (req.channels, req.sample_width, req.frame_rate, req.frames) == (1, 2, 16000, len(audio) // 2)
    assert req.fields == {"model": "gpt-4o-mini-transcribe", "language": "es", "response_format": "json"}
    assert req.headers["Authorization"] == f"Bearer {API_KEY}"


async def test_without_a_key_no_authorization_header(fake, make_stt):
    fake.openai.api_key = None  # a local Whisper server
    stt = make_stt(env={"STT_API_KEY": ""})
    assert (await stt.transcribe(speech(0.5), "en")).text == "What time is check-in?"
    assert "Authorization" not in fake.openai.requests[0].headers


async def test_bad_key_names_the_variable_not_the_value(fake, make_stt):
    stt = make_stt(env={"STT_API_KEY": WRONG_KEY})
    with pytest.raises(ProviderError) as info:
        await stt.transcribe(speech(0.5), "en")
    assert "STT_API_KEY" in str(info.value) and WRONG_KEY not in str(info.value)
    assert not info.value.retryable


@pytest.mark.parametrize(("status", "retryable"), [(429, True), (503, True), (400, False)])
async def test_http_errors(fake, make_stt, status, retryable):
    fake.openai.fail_status = status
    with pytest.raises(ProviderError, match=f"HTTP {status}") as info:
        await make_stt().transcribe(speech(0.5), "en")
    assert info.value.retryable is retryable


async def test_timeout_is_retryable(fake, make_stt):
    fake.openai.delay = 5
    with pytest.raises(ProviderError, match="no transcript within") as info:
        await make_stt(timeout_s=0.3).transcribe(speech(0.5), "en")
    assert info.value.retryable


async def test_empty_utterance_is_not_sent(fake, make_stt):
    assert (await make_stt().transcribe(b"", "en")).text == ""
    assert fake.openai.requests == []
