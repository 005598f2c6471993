"""The fakes reject what the real services reject, in the vendors' own error shapes."""

from __future__ import annotations

import io
import json
import wave

import aiohttp
import pytest

from tests.fakes import FakeVendors
from tests.fakes.anthropic_fake import API_KEY as ANTHROPIC_KEY
from tests.fakes.cartesia_fake import API_KEY as CARTESIA_KEY
from tests.fakes.cartesia_fake import VOICE_ID
from tests.fakes.openai_fake import API_KEY as OPENAI_KEY


@pytest.fixture
async def fake():
    async with FakeVendors() as f:
        yield f


@pytest.fixture
async def http():
    async with aiohttp.ClientSession() as session:
        yield session


def body(messages, **extra):
    return {"model": "claude-haiku-5-5", "max_tokens": 50, "stream": True, "messages": messages, **extra}


@pytest.mark.parametrize(
    ("messages", "extra", "problem"),
    [
        ([{"role": "assistant", "content": "hi"}, {"role": "user", "content": "x"}], {}, "first message"),
        ([{"role": "user", "content": "a"}, {"role": "user", "content": "b"}], {}, "alternate"),
        ([{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}], {}, "prefill"),
        ([{"role": "user", "content": ""}], {}, "non-empty"),
        ([{"role": "user", "content": "a"}], {"temperature": 0.5}, "temperature"),
        ([{"role": "user", "content": [{"type": "tool_result", "tool_use_id": "toolu_x", "content": "r"}]}],
         {"tools": [{"name": "t", "input_schema": {"type": "object"}}]}, "tool_use_id"),
        ([{"role": "user", "content": "a"},
          {"role": "assistant", "content": [{"type": "tool_use", "id": "toolu_1", "name": "t", "input": {}}]},
          {"role": "user", "content": "no result"}],
         {"tools": [{"name": "t", "input_schema": {"type": "object"}}]}, "without `tool_result`"),
        ([{"role": "user", "content": "a"},
          {"role": "assistant", "content": [{"type": "tool_use", "id": "toolu_1", "name": "t", "input": {}}]},
          {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "toolu_1", "content": "r"}]}],
         {}, "must define tools"),
    ],
)
async def test_anthropic_rejects_invalid_requests(fake, http, messages, extra, problem):
    headers = {"x-api-key": ANTHROPIC_KEY, "anthropic-version": "2023-06-01"}
    async with http.post(f"{fake.anthropic_url}/v1/messages", json=body(messages, **extra), headers=headers) as r:
        assert r.status == 400
        answer = await r.json()
    assert answer["type"] == "error" and answer["error"]["type"] == "invalid_request_error"
    assert problem in answer["error"]["message"]


async def test_anthropic_checks_the_key_and_streams_sse(fake, http):
    request = body([{"role": "user", "content": "hi"}])
    async with http.post(f"{fake.anthropic_url}/v1/messages", json=request,
                         headers={"x-api-key": "nope", "anthropic-version": "2023-06-01"}) as r:
        assert r.status == 401 and (await r.json())["error"]["type"] == "authentication_error"
    async with http.post(f"{fake.anthropic_url}/v1/messages", json=request,
                         headers={"x-api-key": ANTHROPIC_KEY, "anthropic-version": "2023-06-01"}) as r:
        assert r.headers["Content-Type"].startswith("text/event-stream")
        text = await r.text()
    events = [line.removeprefix("event: ") for line in text.splitlines() if line.startswith("event: ")]
    assert events[:3] == ["message_start", "ping", "content_block_start"]
    assert events[-3:] == ["content_block_stop", "message_delta", "message_stop"]


async def test_cartesia_tts_handshake_and_validation(fake, http):
    url = f"{fake.cartesia_url}/tts/websocket"
    with pytest.raises(aiohttp.WSServerHandshakeError) as info:
        await http.ws_connect(url, headers={"X-API-Key": "nope", "Cartesia-Version": "2026-03-01"})
    assert info.value.status == 401
    with pytest.raises(aiohttp.WSServerHandshakeError) as info:
        await http.ws_connect(url, headers={"X-API-Key": CARTESIA_KEY})
    assert info.value.status == 400
    async with http.ws_connect(f"{url}?cartesia_version=2026-03-01", headers={"X-API-Key": CARTESIA_KEY}) as ws:
        request = {"model_id": "sonic-english", "transcript": "Hi.", "voice": {"mode": "id", "id": VOICE_ID},
                   "context_id": "c1", "output_format": {"container": "raw", "encoding": "pcm_s16le",
                                                         "sample_rate": 24000}}
        await ws.send_str(json.dumps(request))
        error = json.loads((await ws.receive()).data)
        assert error["type"] == "error" and error["error_code"] == "model_sunsetted" and error["context_id"] == "c1"
        await ws.send_str(json.dumps({**request, "model_id": "sonic-3.5", "output_format": {
            "container": "raw", "encoding": "pcm_s16le", "sample_rate": 12345}}))
        assert json.loads((await ws.receive()).data)["error_code"] == "invalid_output_format"


async def test_cartesia_stt_requires_its_query(fake, http):
    headers = {"X-API-Key": CARTESIA_KEY, "Cartesia-Version": "2026-03-01"}
    with pytest.raises(aiohttp.WSServerHandshakeError) as info:
        await http.ws_connect(f"{fake.cartesia_url}/stt/websocket?language=en", headers=headers)
    assert info.value.status == 400


async def test_openai_validates_the_wav(fake, http):
    def form(audio: bytes) -> aiohttp.FormData:
        data = aiohttp.FormData()
        data.add_field("file", audio, filename="a.wav", content_type="audio/wav")
        data.add_field("model", "whisper-1")
        return data

    url = f"{fake.openai_url}/v1/audio/transcriptions"
    auth = {"Authorization": f"Bearer {OPENAI_KEY}"}
    async with http.post(url, data=form(b"not a wav"), headers=auth) as r:
        assert r.status == 400 and (await r.json())["error"]["param"] == "file"
    out = io.BytesIO()
    with wave.open(out, "wb") as w:
        w.setnchannels(2)
        w.setsampwidth(2)
        w.setframerate(44100)
        w.writeframes(b"\0" * 400)
    async with http.post(url, data=form(out.getvalue()), headers=auth) as r:
        assert r.status == 400
    async with http.post(url, data=form(out.getvalue())) as r:
        assert r.status == 401 and (await r.json())["error"]["code"] == "invalid_api_key"
