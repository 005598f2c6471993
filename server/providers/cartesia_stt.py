"""Cartesia ink-whisper over its streaming WebSocket: one connection per utterance.

``open`` returns at once; the stream connects in the background (the audio fed meanwhile
is queued) to ``/stt/websocket?model=ink-whisper&language=..&encoding=pcm_s16le&
sample_rate=16000`` and sends the caller's audio as binary frames while they speak.
Partial transcripts go to ``on_partial`` (the final text so far plus the partial).
``finish`` sends ``finalize`` and returns once ``flush_done`` arrives, the final texts
(deltas) joined. A dropped socket, an ``error`` message or no answer within
``[stt] timeout_s`` raise :class:`ProviderError` from ``finish``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import Callable
from typing import Any
from urllib.parse import urlencode

import aiohttp

from ..config import Config
from ..errors import ProviderError
from .base import STT, STT_RATE, STTStream, Transcript
from .cartesia_tts import websocket_url

log = logging.getLogger(__name__)

CONNECT_TIMEOUT_S = 5.0
CLOSE_TIMEOUT_S = 2.0
_FINALIZE = object()  # marks the end of the audio in the send queue


def join_deltas(parts: list[str]) -> str:
    """Final texts as received, a space put between two that would otherwise touch."""
    out = ""
    for part in parts:
        if out and part and not out[-1].isspace() and not part[0].isspace():
            out += " "
        out += part
    return " ".join(out.split())


class CartesiaSTT(STT):
    name = "cartesia"

    def __init__(self, config: Config) -> None:
        self._config = config.stt
        self._api_key = config.secrets.cartesia_api_key
        self._version = config.tts.cartesia_version
        self._url = websocket_url(config.secrets.cartesia_base_url, "/stt/websocket")
        self._session: aiohttp.ClientSession | None = None

    async def open(self, language: str, on_partial: Callable[[str], None] | None = None) -> STTStream:
        if not self._api_key:
            raise ProviderError("cartesia", "CARTESIA_API_KEY is not set")
        if self._session is None:
            self._session = aiohttp.ClientSession()
        return CartesiaSTTStream(self, language, on_partial)

    async def aclose(self) -> None:
        session, self._session = self._session, None
        if session is not None:
            await session.close()

    async def connect(self, language: str) -> aiohttp.ClientWebSocketResponse:
        assert self._session is not None
        query = urlencode({"model": self._config.cartesia_model, "language": language,
                           "encoding": "pcm_s16le", "sample_rate": STT_RATE})
        headers = {"X-API-Key": self._api_key or "", "Cartesia-Version": self._version}
        try:
            async with asyncio.timeout(CONNECT_TIMEOUT_S):
                return await self._session.ws_connect(
                    f"{self._url}?{query}", headers=headers, timeout=aiohttp.ClientWSTimeout(ws_close=CLOSE_TIMEOUT_S)
                )
        except aiohttp.WSServerHandshakeError as exc:
            if exc.status in (401, 403):
                raise ProviderError("cartesia", f"Cartesia rejected CARTESIA_API_KEY (HTTP {exc.status})") from None
            raise ProviderError("cartesia", f"STT handshake failed (HTTP {exc.status})",
                                retryable=exc.status == 429 or exc.status >= 500) from None
        except (aiohttp.ClientError, OSError, TimeoutError) as exc:
            reason = f"cannot connect to {self._url}: {type(exc).__name__}"
            raise ProviderError("cartesia", reason, retryable=True) from None


class CartesiaSTTStream(STTStream):
    def __init__(self, stt: CartesiaSTT, language: str, on_partial: Callable[[str], None] | None) -> None:
        self._stt = stt
        self._language = language
        self._on_partial = on_partial
        self._audio: asyncio.Queue[bytes | object] = asyncio.Queue()
        self._finals: list[str] = []
        self._result: asyncio.Future[str] = asyncio.get_running_loop().create_future()
        self._finishing = False
        self._task = asyncio.create_task(self._run(), name="cartesia-stt")

    async def feed(self, pcm: bytes) -> None:
        if pcm and not self._finishing:
            self._audio.put_nowait(pcm)

    async def finish(self) -> Transcript:
        if not self._finishing:
            self._finishing = True
            self._audio.put_nowait(_FINALIZE)
        timeout = self._stt._config.timeout_s
        try:
            async with asyncio.timeout(timeout):
                text = await asyncio.shield(self._result)
        except TimeoutError:
            raise ProviderError("cartesia", f"no transcript within {timeout:g} s", retryable=True) from None
        return Transcript(text, language=self._language)

    async def aclose(self) -> None:
        if self._result.done() and not self._task.done():
            # Finished: let the socket close cleanly in the background task, briefly.
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(CLOSE_TIMEOUT_S):
                    await asyncio.shield(self._task)
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task
        if self._result.done() and not self._result.cancelled():
            self._result.exception()  # an error nobody asked for (the turn was abandoned)
        else:
            self._result.cancel()

    # --- the background connection ----------------------------------------------------------

    def _fail(self, error: ProviderError) -> None:
        if not self._result.done():
            self._result.set_exception(error)

    async def _run(self) -> None:
        try:
            ws = await self._stt.connect(self._language)
        except ProviderError as exc:
            self._fail(exc)
            return
        sender = asyncio.create_task(self._send(ws), name="cartesia-stt-send")
        try:
            await self._read(ws)
        except (aiohttp.ClientError, ConnectionResetError) as exc:
            self._fail(ProviderError("cartesia", f"the STT socket failed ({type(exc).__name__})", retryable=True))
        finally:
            sender.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await sender
            await ws.close()

    async def _send(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        try:
            while True:
                pcm = await self._audio.get()
                if pcm is _FINALIZE:
                    await ws.send_str("finalize")
                    return
                assert isinstance(pcm, bytes)
                await ws.send_bytes(pcm)
        except (aiohttp.ClientError, ConnectionResetError):
            return  # the socket went: the reader sees it close and reports it

    async def _read(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        async for msg in ws:
            if msg.type != aiohttp.WSMsgType.TEXT:
                continue
            try:
                data: dict[str, Any] = json.loads(msg.data)
            except json.JSONDecodeError:
                continue
            kind = data.get("type")
            if kind == "transcript":
                text = str(data.get("text") or "")
                if data.get("is_final"):
                    self._finals.append(text)
                    shown = join_deltas(self._finals)
                else:
                    shown = join_deltas([*self._finals, text])
                if self._on_partial is not None and shown:
                    self._on_partial(shown)
            elif kind == "flush_done":
                if not self._result.done():
                    self._result.set_result(join_deltas(self._finals))
                return
            elif kind == "error":
                status = data.get("status_code") or 0
                detail = str(data.get("message") or data.get("title") or data.get("error") or "")[:200]
                self._fail(ProviderError("cartesia", f"STT error {data.get('error_code') or status}: {detail}",
                                         retryable=status == 429 or status >= 500))
                return
            elif kind == "done":
                break
        if not self._result.done():
            code = ws.close_code
            self._fail(ProviderError("cartesia", f"the STT socket closed before the transcript (code {code})",
                                     retryable=True))
