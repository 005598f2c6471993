"""OpenAI-compatible transcription (``POST /v1/audio/transcriptions``): whole utterances.

Works with OpenAI (``whisper-1``, ``gpt-4o-mini-transcribe``) and the many local Whisper
servers that copy the API. The endpoint is ``STT_BASE_URL`` if set, else ``[stt]
base_url``; a base that already ends in ``/v1`` is not given a second one. The utterance
goes up as a 16 kHz mono 16-bit WAV; ``STT_API_KEY`` (or ``OPENAI_API_KEY``), when set, as
a bearer token. Errors become :class:`ProviderError` (429, 5xx, timeouts: retryable).
"""

from __future__ import annotations

import io
import logging
import wave

import httpx

from ..config import Config
from ..errors import ProviderError
from .base import STT_RATE, BatchSTT, Transcript

log = logging.getLogger(__name__)


def wav_bytes(pcm: bytes, rate: int = STT_RATE) -> bytes:
    """``pcm`` (s16le mono) in a WAV container."""
    out = io.BytesIO()
    with wave.open(out, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(pcm[: len(pcm) // 2 * 2])
    return out.getvalue()


def transcriptions_url(base_url: str) -> str:
    base = base_url.rstrip("/")
    if not base.endswith("/v1"):
        base += "/v1"
    return base + "/audio/transcriptions"


class OpenAISTT(BatchSTT):
    name = "openai"

    def __init__(self, config: Config) -> None:
        self._config = config.stt
        self._api_key = config.secrets.stt_api_key
        self._url = transcriptions_url(config.secrets.stt_base_url or config.stt.base_url)
        self._client: httpx.AsyncClient | None = None

    async def aclose(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            await client.aclose()

    async def transcribe(self, pcm: bytes, language: str) -> Transcript:
        if len(pcm) < 2:
            return Transcript("", no_speech_prob=1.0, language=language)
        if self._client is None:
            self._client = httpx.AsyncClient(timeout=self._config.timeout_s)
        headers = {"Authorization": f"Bearer {self._api_key}"} if self._api_key else {}
        data = {"model": self._config.api_model, "language": language, "response_format": "json"}
        files = {"file": ("utterance.wav", wav_bytes(pcm), "audio/wav")}
        try:
            response = await self._client.post(self._url, headers=headers, data=data, files=files)
        except httpx.TimeoutException:
            raise ProviderError("stt", f"no transcript within {self._config.timeout_s:g} s", retryable=True) from None
        except httpx.HTTPError as exc:
            raise ProviderError("stt", f"cannot reach {self._url}: {type(exc).__name__}", retryable=True) from None
        if response.status_code in (401, 403):
            raise ProviderError("stt", f"{self._url} rejected STT_API_KEY (HTTP {response.status_code})")
        if response.status_code != 200:
            raise ProviderError(
                "stt",
                f"HTTP {response.status_code}: {self._detail(response)}",
                retryable=response.status_code in (408, 409, 429) or response.status_code >= 500,
            )
        try:
            text = response.json()["text"]
        except (ValueError, KeyError, TypeError):
            raise ProviderError("stt", "the answer has no JSON 'text' field") from None
        return Transcript(str(text).strip(), language=language)

    def _detail(self, response: httpx.Response) -> str:
        try:
            message = str(response.json()["error"]["message"])
        except (ValueError, KeyError, TypeError):
            message = response.text
        if self._api_key:
            message = message.replace(self._api_key, "***")
        return message[:200]
