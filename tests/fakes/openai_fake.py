"""A fake OpenAI-compatible transcription endpoint: ``POST /v1/audio/transcriptions``.

Multipart ``file`` (a WAV it opens with the ``wave`` module and checks: mono, 16-bit,
16 kHz, non-empty), ``model`` (required), optional ``language``, ``prompt``,
``response_format`` (json | text | verbose_json). Bearer auth when ``api_key`` is set.
Errors come back in OpenAI's shape: ``{"error": {"message", "type", "param", "code"}}``.
"""

from __future__ import annotations

import asyncio
import io
import wave
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from .common import Changes

API_KEY = "sk-fake-openai-0123456789"


@dataclass
class TranscriptionRequest:
    headers: dict[str, str]
    fields: dict[str, str] = field(default_factory=dict)
    channels: int = 0
    sample_width: int = 0
    frame_rate: int = 0
    frames: int = 0
    filename: str | None = None
    status: int = 200


def error(status: int, message: str, kind: str = "invalid_request_error", param: str | None = None,
          code: str | None = None) -> web.Response:
    return web.json_response({"error": {"message": message, "type": kind, "param": param, "code": code}}, status=status)


class OpenAIFake:
    def __init__(self, changes: Changes) -> None:
        self._changes = changes
        self.api_key: str | None = API_KEY
        self.transcript = "What time is check-in?"
        self.delay = 0.0
        self.fail_status: int | None = None  # answer the next request with this status
        self.requests: list[TranscriptionRequest] = []

    def routes(self) -> list[web.RouteDef]:
        return [web.post("/v1/audio/transcriptions", self._transcriptions)]

    async def _transcriptions(self, request: web.Request) -> web.Response:
        rec = TranscriptionRequest(headers=dict(request.headers))
        self.requests.append(rec)
        self._changes.changed()
        response = await self._answer(request, rec)
        rec.status = response.status
        self._changes.changed()
        return response

    async def _answer(self, request: web.Request, rec: TranscriptionRequest) -> web.Response:
        if self.api_key is not None and request.headers.get("Authorization") != f"Bearer {self.api_key}":
            return error(401, "Incorrect API key provided.", code="invalid_api_key")
        if self.fail_status is not None:
            status, self.fail_status = self.fail_status, None
            kinds = {429: ("Rate limit reached.", "requests", "rate_limit_exceeded"),
                     503: ("The server is overloaded.", "server_error", None)}
            message, kind, code = kinds.get(status, ("The server had an error.", "server_error", None))
            return error(status, message, kind, code=code)
        if not request.content_type.startswith("multipart/form-data"):
            return error(400, "Expected multipart/form-data.")
        audio: bytes | None = None
        reader = await request.multipart()
        async for part in reader:
            if part.name == "file":
                rec.filename = part.filename
                audio = bytes(await part.read())
            elif part.name:
                rec.fields[part.name] = await part.text()
        if audio is None:
            return error(400, "Missing required parameter: 'file'.", param="file")
        if not rec.fields.get("model"):
            return error(400, "Missing required parameter: 'model'.", param="model")
        if rec.fields.get("response_format", "json") not in ("json", "text", "verbose_json"):
            return error(400, "Invalid response_format.", param="response_format")
        try:
            with wave.open(io.BytesIO(audio)) as w:
                rec.channels, rec.sample_width = w.getnchannels(), w.getsampwidth()
                rec.frame_rate, rec.frames = w.getframerate(), w.getnframes()
                data = w.readframes(rec.frames)
        except (wave.Error, EOFError):
            return error(400, "Invalid file format. Supported formats: ['flac', 'mp3', 'wav', ...]", param="file")
        if (rec.channels, rec.sample_width, rec.frame_rate) != (1, 2, 16000) or not rec.frames:
            return error(400, "Expected non-empty 16 kHz mono 16-bit audio.", param="file")
        if len(data) != rec.frames * 2:
            return error(400, "The WAV header does not match its data.", param="file")
        if self.delay:
            await asyncio.sleep(self.delay)
        fmt = rec.fields.get("response_format", "json")
        if fmt == "text":
            return web.Response(text=self.transcript)
        body: dict[str, Any] = {"text": self.transcript}
        if fmt == "verbose_json":
            body.update(language=rec.fields.get("language", "en"), duration=rec.frames / rec.frame_rate,
                        segments=[{"id": 0, "text": self.transcript, "no_speech_prob": 0.01}])
        return web.json_response(body)
