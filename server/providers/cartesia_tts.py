"""Cartesia Sonic over its WebSocket: streamed audio with phoneme-timed visemes.

The provider keeps one WebSocket per process (:class:`_Socket`), shared by the replies in
flight: every message carries a ``context_id`` and the socket's reader routes each one to
its reply. Cartesia closes a socket after 5 idle minutes; the next reply reconnects.

A reply (:class:`CartesiaStream`) is one context: each sentence goes out with
``"continue": true`` as the LLM writes it, ``end`` sends the empty ``"continue": false``
message, and ``aclose`` before ``done`` sends ``{"context_id", "cancel": true}``
(barge-in). Audio comes back as ``chunk`` messages; ``phoneme_timestamps`` (else word
``timestamps``) become visemes, and word timestamps tell which sentence a chunk finishes.
Cartesia's times are seconds from the start of the context's audio, which is the reply's
timeline, so they need no shifting. Every chunk yielded has audio: visemes ride on the
next audio chunk (all timestamps already received go out with it, ahead of the audio they
describe), and what arrives after the last audio rides on ``TAIL_MS`` of silence.

When Cartesia fails (the handshake rejects the key, an ``error`` message such as
``model_sunsetted``, the socket drops, no audio for ``stall_timeout_s``), the failure is
logged and the rest of that reply is spoken by the offline espeak voice, so the caller
still hears an answer. The next reply tries Cartesia again.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import logging
import uuid
from collections.abc import AsyncIterator
from typing import Any

import aiohttp

from .. import visemes
from ..config import Config
from ..errors import ProviderError
from .base import TTS, TTSChunk, TTSStream, Viseme

log = logging.getLogger(__name__)

CONNECT_TIMEOUT_S = 5.0
STALL_TIMEOUT_S = 5.0
TAIL_MS = 10  # silence that carries the visemes and text arriving after the last audio


def websocket_url(base_url: str, path: str) -> str:
    base = base_url.rstrip("/")
    if base.startswith("https://"):
        base = "wss://" + base.removeprefix("https://")
    elif base.startswith("http://"):
        base = "ws://" + base.removeprefix("http://")
    return base + path


# --- the pure part: what one context's timestamps mean --------------------------------------


class Timeline:
    """Visemes and finished sentences of one context, from Cartesia's timestamp messages.

    ``prefer_phonemes``: phoneme timestamps are expected, so word timestamps give no
    visemes (they would double them). Either way, the first phoneme message switches
    word visemes off for the rest of the context.
    """

    def __init__(self, prefer_phonemes: bool = False) -> None:
        self._phonemes = prefer_phonemes
        self._sentence_words: list[int] = []  # cumulative word count at the end of each sentence
        self._word_ends_ms: list[float] = []
        self._sentences: list[str] = []
        self.released = 0  # sentences whose text has gone out on a chunk
        self.saw_phonemes = False

    def sentence(self, text: str) -> None:
        self._sentences.append(text)
        before = self._sentence_words[-1] if self._sentence_words else 0
        self._sentence_words.append(before + len(text.split()))

    def words(self, words: list[str], starts_s: list[float], ends_s: list[float]) -> list[Viseme]:
        self._word_ends_ms.extend(e * 1000 for e in ends_s)
        return [] if self._phonemes else visemes.from_words(words, starts_s, ends_s)

    def phonemes(self, phonemes: list[str], starts_s: list[float], ends_s: list[float]) -> list[Viseme]:
        self._phonemes = self.saw_phonemes = True
        return visemes.from_phonemes(phonemes, starts_s, ends_s)

    def finished(self, audio_ms: float) -> str:
        """Text of the sentences whose last word has been heard once ``audio_ms`` are played."""
        out = []
        while self.released < len(self._sentences):
            n = self._sentence_words[self.released]
            if n and (n > len(self._word_ends_ms) or self._word_ends_ms[n - 1] > audio_ms + 1):
                break
            out.append(self._sentences[self.released])
            self.released += 1
        return " ".join(out)

    def rest(self) -> str:
        """Every sentence not yet released (the context is done)."""
        out = " ".join(self._sentences[self.released :])
        self.released = len(self._sentences)
        return out

    @property
    def sentences(self) -> int:
        return len(self._sentences)

    def unfinished(self) -> list[str]:
        return self._sentences[self.released :]


# --- the shared socket ------------------------------------------------------------------------


_CLOSED = {"type": "_socket_closed"}  # routed to every context when the socket goes


class _Socket:
    """One Cartesia TTS WebSocket; its reader routes messages to contexts by ``context_id``."""

    def __init__(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        self._ws = ws
        self._routes: dict[str, asyncio.Queue[dict[str, Any]]] = {}
        self._send_lock = asyncio.Lock()
        self._reader = asyncio.create_task(self._read(), name="cartesia-tts-reader")

    @property
    def closed(self) -> bool:
        return self._ws.closed or self._reader.done()

    def route(self, context_id: str, queue: asyncio.Queue[dict[str, Any]]) -> None:
        self._routes[context_id] = queue

    def unroute(self, context_id: str) -> None:
        self._routes.pop(context_id, None)

    async def send(self, message: dict[str, Any]) -> None:
        async with self._send_lock:
            if self.closed:
                raise ConnectionResetError("the Cartesia socket is closed")
            await self._ws.send_str(json.dumps(message))

    async def _read(self) -> None:
        try:
            async for msg in self._ws:
                if msg.type != aiohttp.WSMsgType.TEXT:
                    continue
                try:
                    data = json.loads(msg.data)
                except json.JSONDecodeError:
                    log.warning("cartesia tts: a message that is not JSON")
                    continue
                queue = self._routes.get(data.get("context_id", ""))
                if queue is not None:
                    queue.put_nowait(data)
                elif data.get("type") == "error" and "context_id" not in data:
                    for q in self._routes.values():
                        q.put_nowait(data)
                # else: late messages of a cancelled context
        finally:
            if self._ws.close_code not in (None, 1000):
                log.info("cartesia tts: socket closed (code %s)", self._ws.close_code)
            for q in self._routes.values():
                q.put_nowait(_CLOSED)
            self._routes.clear()

    async def aclose(self) -> None:
        await self._ws.close()
        self._reader.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._reader


# --- the provider ---------------------------------------------------------------------------


class CartesiaTTS(TTS):
    name = "cartesia"

    def __init__(self, config: Config) -> None:
        self._config = config
        self._tts = config.tts
        self._api_key = config.secrets.cartesia_api_key
        self._voice_id = config.secrets.cartesia_voice_id
        self._url = websocket_url(config.secrets.cartesia_base_url, "/tts/websocket")
        self._session: aiohttp.ClientSession | None = None
        self._socket: _Socket | None = None
        self._lock = asyncio.Lock()
        self._fallback: TTS | None = None
        self.prefer_phonemes = False  # learnt from the first context that had phoneme timestamps
        self.stall_timeout_s = STALL_TIMEOUT_S
        self.connections = 0  # sockets opened (for /api/health and tests)

    def open(self, language: str) -> TTSStream:
        return CartesiaStream(self, language)

    async def aclose(self) -> None:
        socket, self._socket = self._socket, None
        if socket is not None:
            await socket.aclose()
        session, self._session = self._session, None
        if session is not None:
            await session.close()
        fallback, self._fallback = self._fallback, None
        if fallback is not None:
            await fallback.aclose()

    def request(self, context_id: str, language: str, transcript: str, more: bool) -> dict[str, Any]:
        return {
            "model_id": self._tts.model,
            "transcript": transcript,
            "voice": {"mode": "id", "id": self._voice_id},
            "language": language,
            "context_id": context_id,
            "continue": more,
            "output_format": {"container": "raw", "encoding": "pcm_s16le", "sample_rate": self._tts.sample_rate},
            "add_timestamps": True,
            "add_phoneme_timestamps": True,
        }

    async def socket(self, broken: _Socket | None = None) -> _Socket:
        """The shared socket, (re)connected if Cartesia closed it (or it is ``broken``).
        Raises ProviderError."""
        async with self._lock:
            if self._socket is not None and (self._socket is broken or self._socket.closed):
                old, self._socket = self._socket, None
                await old.aclose()
            if self._socket is None:
                self._socket = _Socket(await self._connect())
            return self._socket

    async def _connect(self) -> aiohttp.ClientWebSocketResponse:
        if not self._api_key or not self._voice_id:
            raise ProviderError("cartesia", "CARTESIA_API_KEY and CARTESIA_VOICE_ID must both be set")
        if self._session is None:
            self._session = aiohttp.ClientSession()
        headers = {"X-API-Key": self._api_key, "Cartesia-Version": self._tts.cartesia_version}
        try:
            async with asyncio.timeout(CONNECT_TIMEOUT_S):
                ws = await self._session.ws_connect(self._url, headers=headers, autoping=True)
        except aiohttp.WSServerHandshakeError as exc:
            if exc.status in (401, 403):
                raise ProviderError("cartesia", f"Cartesia rejected CARTESIA_API_KEY (HTTP {exc.status})") from None
            raise ProviderError("cartesia", f"WebSocket handshake failed (HTTP {exc.status})", retryable=True) from None
        except (aiohttp.ClientError, OSError, TimeoutError) as exc:
            reason = f"cannot connect to {self._url}: {type(exc).__name__}"
            raise ProviderError("cartesia", reason, retryable=True) from None
        self.connections += 1
        return ws

    async def fallback(self) -> TTS:
        """The offline voice (espeak-ng), created on first need."""
        if self._fallback is None:
            from .espeak_tts import EspeakTTS  # lazily: a Cartesia-only host may lack espeak

            tts = EspeakTTS(self._config)
            await tts.start()
            self._fallback = tts
        return self._fallback


class CartesiaStream(TTSStream):
    """One reply, one Cartesia context (or, after a failure, the espeak voice)."""

    def __init__(self, tts: CartesiaTTS, language: str) -> None:
        self._tts = tts
        self._language = language
        self._context_id = "sandra-" + uuid.uuid4().hex
        self._queue: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self._timeline = Timeline(prefer_phonemes=tts.prefer_phonemes)
        self._lock = asyncio.Lock()  # orders send/end against the switch to the fallback
        self._send_lock = asyncio.Lock()  # keeps this context's messages in order
        self._socket: _Socket | None = None
        self._fallback: TTSStream | None = None
        self._failed = False
        self._ended = False
        self._done = False
        self._closed = False
        self._waiting = False  # text went to Cartesia and nothing came back since

    async def send(self, text: str) -> None:
        if self._closed or not text.strip():
            return
        async with self._lock:
            if self._ended:
                raise RuntimeError("send() after end()")
            # Cartesia joins a context's transcripts verbatim: sentences need a space between.
            joined = " " + text if self._timeline.sentences else text
            self._timeline.sentence(text)
            if self._fallback is not None:
                await self._fallback.send(text)
                return
        await self._to_cartesia(joined, more=True)

    async def end(self) -> None:
        if self._closed:
            return
        async with self._lock:
            if self._ended:
                return
            self._ended = True
            if self._fallback is not None:
                await self._fallback.end()
                return
        if self._timeline.sentences == 0:  # nothing was said
            self._done = True
            self._queue.put_nowait({"type": "done", "context_id": self._context_id})
            return
        await self._to_cartesia("", more=False)

    async def _to_cartesia(self, text: str, more: bool) -> None:
        message = self._tts.request(self._context_id, self._language, text, more)
        async with self._send_lock:
            if self._failed or self._closed:
                return  # the reader switches to the fallback, which gets this text
            try:
                if self._socket is None:
                    await self._first_send(message)
                else:
                    await self._socket.send(message)
                self._waiting = True
            except ProviderError as exc:
                self._fail(str(exc))
            except (aiohttp.ClientError, ConnectionResetError) as exc:
                self._fail(f"cartesia: the socket failed while sending ({type(exc).__name__})")

    async def _first_send(self, message: dict[str, Any]) -> None:
        socket = await self._tts.socket()
        socket.route(self._context_id, self._queue)
        try:
            await socket.send(message)
        except (aiohttp.ClientError, ConnectionResetError):
            # Idle-closed under our feet: the context had not started, try one fresh socket.
            socket.unroute(self._context_id)
            socket = await self._tts.socket(broken=socket)
            socket.route(self._context_id, self._queue)
            await socket.send(message)
        self._socket = socket

    def _fail(self, reason: str) -> None:
        if not self._failed:
            self._failed = True
            self._queue.put_nowait({"type": "_failed", "reason": reason})

    async def __aiter__(self) -> AsyncIterator[TTSChunk]:  # type: ignore[override]
        rate = self._tts._tts.sample_rate
        audio_ms = 0.0
        pending: list[Viseme] = []  # visemes waiting for an audio chunk to ride on
        while not self._closed:
            try:
                async with asyncio.timeout(self._tts.stall_timeout_s):
                    first = await self._queue.get()
            except TimeoutError:
                if not (self._waiting or (self._ended and not self._failed)):
                    continue  # nothing asked for yet: the LLM is still thinking
                first = {"type": "_failed", "reason": f"cartesia: no audio for {self._tts.stall_timeout_s:g} s"}
            self._waiting = False
            # Everything that has already arrived: its timestamps go out with the first
            # audio chunk, early, instead of after the audio they describe.
            batch = [first]
            while not self._queue.empty():
                batch.append(self._queue.get_nowait())
            for message in batch:
                pending += self._timestamps(message)
            for message in batch:
                kind = message.get("type")
                if kind == "chunk":
                    pcm = base64.b64decode(message.get("data") or "")
                    if not pcm:
                        continue
                    audio_ms += len(pcm) / 2 / rate * 1000
                    yield TTSChunk(pcm, rate, tuple(pending), self._timeline.finished(audio_ms))
                    pending = []
                elif kind == "done":
                    self._done = True
                    text = self._timeline.rest()
                    if text or pending:  # a moment of silence carries what came after the audio
                        yield TTSChunk(bytes(rate * TAIL_MS // 1000 * 2), rate, tuple(pending), text)
                    return
                elif kind in ("error", "_failed", _CLOSED["type"]):
                    reason = message.get("reason") or self._describe(message)
                    # Cartesia ended the context itself unless we gave up waiting on it.
                    cancel = kind == "_failed" and self._socket is not None
                    async with contextlib.aclosing(self._fall_back(reason, audio_ms, cancel)) as chunks:
                        async for chunk in chunks:
                            yield chunk
                    return
                elif kind == "_closed_locally":
                    return

    def _timestamps(self, message: dict[str, Any]) -> list[Viseme]:
        kind = message.get("type")
        if kind == "phoneme_timestamps":
            ts = message.get("phoneme_timestamps") or {}
            self._tts.prefer_phonemes = True
            return self._timeline.phonemes(ts.get("phonemes", []), ts.get("start", []), ts.get("end", []))
        if kind == "timestamps":
            ts = message.get("word_timestamps") or {}
            return self._timeline.words(ts.get("words", []), ts.get("start", []), ts.get("end", []))
        return []

    def _describe(self, message: dict[str, Any]) -> str:
        if message is _CLOSED or message.get("type") == _CLOSED["type"]:
            return "cartesia: the socket closed in the middle of a reply"
        code = message.get("error_code") or message.get("status_code") or "error"
        text = message.get("message") or message.get("title") or message.get("error") or ""
        hint = " (set [tts] model to a current model, e.g. sonic-3.5)" if code == "model_sunsetted" else ""
        return f"cartesia: {code}: {str(text)[:200]}{hint}"

    async def _fall_back(self, reason: str, offset_ms: float, cancel: bool) -> AsyncIterator[TTSChunk]:
        self._failed = True
        socket = self._socket
        if socket is not None:
            socket.unroute(self._context_id)
            if cancel and not socket.closed:
                with contextlib.suppress(aiohttp.ClientError, ConnectionResetError):
                    await socket.send({"context_id": self._context_id, "cancel": True})
        log.error("%s; this reply is spoken by the offline voice", reason)
        fallback = await self._tts.fallback()
        async with self._lock:
            stream = fallback.open(self._language)
            self._fallback = stream
            for sentence in self._timeline.unfinished():
                await stream.send(sentence)
            if self._ended:
                await stream.end()
        async with contextlib.aclosing(aiter(stream)) as chunks:  # type: ignore[type-var]
            async for chunk in chunks:
                if chunk.visemes and offset_ms:
                    shifted = tuple(visemes.shift(chunk.visemes, offset_ms))
                    chunk = TTSChunk(chunk.pcm, chunk.sample_rate, shifted, chunk.text)
                yield chunk

    async def aclose(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._queue.put_nowait({"type": "_closed_locally"})
        socket = self._socket
        if socket is not None:
            socket.unroute(self._context_id)
            if not self._done and not self._failed and not socket.closed:
                with contextlib.suppress(aiohttp.ClientError, ConnectionResetError):
                    await socket.send({"context_id": self._context_id, "cancel": True})
        if self._fallback is not None:
            await self._fallback.aclose()
