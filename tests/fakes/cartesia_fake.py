"""A fake Cartesia: TTS WebSocket ``/tts/websocket`` and STT WebSocket ``/stt/websocket``.

Both check ``X-API-Key`` (401 at the handshake) and ``Cartesia-Version`` (header or
``?cartesia_version=``). TTS validates each generation request (model, voice, output
format), multiplexes contexts on one socket, honours ``continue`` and ``cancel``, and
answers with ``chunk`` / ``timestamps`` / ``phoneme_timestamps`` / ``done`` or ``error``
messages. STT takes binary PCM, sends partial transcripts while audio arrives, and on
``finalize`` the final transcript (as deltas) then ``flush_done``; ``done`` closes.
"""

from __future__ import annotations

import asyncio
import base64
import json
import re
import uuid
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from aiohttp import WSMsgType, web

from server.providers.scripted import MS_PER_CHAR, synthetic_voice

from .common import Changes

API_KEY = "sk_car_fake_key_0123456789"
VOICE_ID = "a0e99841-438c-4a64-b679-ae501e7d6091"
MODELS = ("sonic-3.5", "sonic-3", "sonic-2")
SUNSET = ("sonic", "sonic-english", "sonic-multilingual")
LANGUAGES = ("en", "es", "fr", "de", "it", "pt", "nl", "pl", "ru", "ja", "ko", "zh", "hi", "sv", "tr")
RATES = (8000, 16000, 22050, 24000, 44100, 48000)
# Crude letter -> IPA, enough for visemes to come out of the fake's phoneme timestamps.
_IPA = {"c": "k", "q": "k", "y": "j", "x": "ks", "j": "x", "ñ": "ɲ", "r": "ɾ", "h": "h"}


def _handshake_problem(request: web.Request, api_key: str) -> web.Response | None:
    key = request.headers.get("X-API-Key") or request.query.get("api_key")
    if key != api_key:
        return web.json_response({"error": "Invalid API key", "status_code": 401}, status=401)
    version = request.headers.get("Cartesia-Version") or request.query.get("cartesia_version") or ""
    if not re.fullmatch(r"\d{4}-\d{2}-\d{2}", version):
        return web.json_response({"error": "A dated Cartesia-Version header is required", "status_code": 400},
                                 status=400)
    return None


def error_message(title: str, message: str, error_code: str, status: int = 400,
                  context_id: str | None = None) -> dict[str, Any]:
    out: dict[str, Any] = {"type": "error", "title": title, "message": message, "error_code": error_code,
                           "status_code": status, "done": True, "request_id": uuid.uuid4().hex}
    if context_id is not None:
        out["context_id"] = context_id
    return out


# --- TTS ---------------------------------------------------------------------------------


@dataclass
class TTSContext:
    context_id: str
    requests: list[dict[str, Any]] = field(default_factory=list)
    cancelled: bool = False
    done: bool = False  # the fake sent `done`
    errored: bool = False
    audio_s: float = 0.0
    chunks_sent: int = 0

    @property
    def transcript(self) -> str:
        return "".join(r.get("transcript", "") for r in self.requests)


@dataclass
class TTSConnection:
    headers: dict[str, str]
    query: dict[str, str]
    messages: list[Any] = field(default_factory=list)
    closed_idle: bool = False
    closed: bool = False


class CartesiaTTSFake:
    def __init__(self, changes: Changes) -> None:
        self._changes = changes
        self.api_key = API_KEY
        self.first_byte_delay = 0.0  # seconds before a context's first chunk
        self.chunk_delay = 0.0  # seconds between chunks
        self.chunk_ms = 100
        self.idle_timeout_s = 300.0  # Cartesia closes a socket idle this long
        self.timestamps_first = False  # send a sentence's timestamps before its audio
        self.phonemes = True  # honour add_phoneme_timestamps (False: only word timestamps)
        # Injected failures: an error message instead of the next context's audio, or
        # after this many chunks of it.
        self.fail_next: dict[str, Any] | None = None
        self.fail_after_chunks: int | None = None
        self.connections: list[TTSConnection] = []
        self.contexts: dict[str, TTSContext] = {}
        self._sockets: set[web.WebSocketResponse] = set()

    def routes(self) -> list[web.RouteDef]:
        return [web.get("/tts/websocket", self._websocket)]

    def fail(self, title: str = "Model sunsetted", message: str = "The model 'sonic' has been sunsetted.",
             error_code: str = "model_sunsetted", status: int = 400) -> None:
        self.fail_next = {"title": title, "message": message, "error_code": error_code, "status": status}

    async def close_all(self) -> None:
        for ws in list(self._sockets):
            await ws.close(code=1001, message=b"server shutdown")

    async def _websocket(self, request: web.Request) -> web.StreamResponse:
        problem = _handshake_problem(request, self.api_key)
        conn = TTSConnection(headers=dict(request.headers), query=dict(request.query))
        self.connections.append(conn)
        self._changes.changed()
        if problem:
            return problem
        ws = web.WebSocketResponse(heartbeat=None)
        await ws.prepare(request)
        self._sockets.add(ws)
        lock = asyncio.Lock()
        tasks: dict[str, tuple[asyncio.Queue[tuple[dict[str, Any], bool]], asyncio.Task[None]]] = {}

        async def send(payload: dict[str, Any]) -> None:
            async with lock:
                if not ws.closed:
                    await ws.send_str(json.dumps(payload))

        try:
            while True:
                try:
                    msg = await ws.receive(timeout=self.idle_timeout_s)
                except TimeoutError:
                    conn.closed_idle = True
                    await ws.close(code=1000, message=b"idle timeout")
                    break
                if msg.type in (WSMsgType.CLOSE, WSMsgType.CLOSING, WSMsgType.CLOSED, WSMsgType.ERROR):
                    break
                if msg.type != WSMsgType.TEXT:
                    await send(error_message("Invalid message", "Only JSON text messages are accepted.",
                                             "invalid_request"))
                    continue
                try:
                    data = json.loads(msg.data)
                except json.JSONDecodeError:
                    await send(error_message("Invalid JSON", "The message is not valid JSON.", "invalid_request"))
                    continue
                conn.messages.append(data)
                self._changes.changed()
                await self._on_message(data, send, tasks)
        finally:
            for _, task in tasks.values():
                task.cancel()
            for _, task in tasks.values():
                try:
                    await task
                except asyncio.CancelledError:
                    pass
            self._sockets.discard(ws)
            conn.closed = True
            self._changes.changed()
        return ws

    async def _on_message(self, data: dict[str, Any], send: Any, tasks: dict[str, Any]) -> None:
        cid = data.get("context_id")
        if data.get("cancel"):
            ctx = self.contexts.get(cid) if isinstance(cid, str) else None
            if ctx is not None:
                ctx.cancelled = True
                if cid in tasks:
                    tasks[cid][1].cancel()
            self._changes.changed()
            return
        if not isinstance(cid, str) or not cid:
            cid = "ctx_" + uuid.uuid4().hex[:12]
        problem = _validate_generation(data)
        if problem is not None:
            await send(error_message(*problem, context_id=cid))
            return
        ctx = self.contexts.get(cid)
        if ctx is None:
            ctx = self.contexts[cid] = TTSContext(cid)
        elif ctx.done or ctx.cancelled or ctx.errored:
            await send(error_message("Context closed", f"Context {cid} is no longer accepting input.",
                                     "context_closed", context_id=cid))
            return
        ctx.requests.append(data)
        self._changes.changed()
        if cid not in tasks:
            queue: asyncio.Queue[tuple[dict[str, Any], bool]] = asyncio.Queue()
            tasks[cid] = (queue, asyncio.create_task(self._generate(ctx, queue, send)))
        tasks[cid][0].put_nowait((data, bool(data.get("continue", False))))

    async def _generate(self, ctx: TTSContext, queue: asyncio.Queue[tuple[dict[str, Any], bool]], send: Any) -> None:
        cid = ctx.context_id
        first = True
        while True:
            data, more = await queue.get()
            text = data.get("transcript", "")
            if first and self.fail_next is not None:
                f, self.fail_next = self.fail_next, None
                ctx.errored = True
                self._changes.changed()
                await send(error_message(f["title"], f["message"], f["error_code"], f["status"], context_id=cid))
                return
            if text.strip():
                if first and self.first_byte_delay:
                    await asyncio.sleep(self.first_byte_delay)
                first = False
                if not await self._speak(ctx, data, text, send):
                    return
            if not more:
                ctx.done = True
                self._changes.changed()
                await send({"type": "done", "done": True, "status_code": 200, "context_id": cid})
                return

    async def _speak(self, ctx: TTSContext, data: dict[str, Any], text: str, send: Any) -> bool:
        cid = ctx.context_id
        fmt = data["output_format"]
        rate = fmt["sample_rate"]
        pcm = synthetic_voice(text, rate)
        if fmt["encoding"] == "pcm_f32le":
            raw = (pcm.astype(np.float32) / 32768).astype("<f4").tobytes()
            width = 4
        else:
            raw = pcm.astype("<i2").tobytes()
            width = 2
        offset = ctx.audio_s
        timing = self._timestamps(ctx, data, text, offset)
        if self.timestamps_first:
            for message in timing:
                await send(message)
        step = rate * self.chunk_ms // 1000 * width
        for k in range(0, len(raw), step):
            if self.fail_after_chunks is not None and ctx.chunks_sent >= self.fail_after_chunks:
                self.fail_after_chunks = None
                ctx.errored = True
                self._changes.changed()
                await send(error_message("Internal error", "Generation failed.", "internal_error", 500, context_id=cid))
                return False
            if k and self.chunk_delay:
                await asyncio.sleep(self.chunk_delay)
            await send({"type": "chunk", "data": base64.b64encode(raw[k:k + step]).decode(), "done": False,
                        "status_code": 206, "step_time": 1.0, "context_id": cid})
            ctx.chunks_sent += 1
            self._changes.changed()
        ctx.audio_s = offset + len(pcm) / rate
        if not self.timestamps_first:
            for message in timing:
                await send(message)
        return True

    def _timestamps(self, ctx: TTSContext, data: dict[str, Any], text: str, offset: float) -> list[dict[str, Any]]:
        words, starts, ends, pos = [], [], [], 0
        for word in text.split():
            start = text.index(word, pos)
            pos = start + len(word)
            words.append(word)
            starts.append(round(offset + start * MS_PER_CHAR / 1000, 4))
            ends.append(round(offset + pos * MS_PER_CHAR / 1000, 4))
        out: list[dict[str, Any]] = []
        cid = ctx.context_id
        if data.get("add_phoneme_timestamps") and self.phonemes:
            phonemes, p_start, p_end = [], [], []
            for word, s, e in zip(words, starts, ends):
                letters = [c for c in word.lower() if c.isalpha()]
                for i, c in enumerate(letters):
                    phonemes.append(_IPA.get(c, c))
                    p_start.append(round(s + (e - s) * i / len(letters), 4))
                    p_end.append(round(s + (e - s) * (i + 1) / len(letters), 4))
            out.append({"type": "phoneme_timestamps", "context_id": cid, "status_code": 206, "done": False,
                        "phoneme_timestamps": {"phonemes": phonemes, "start": p_start, "end": p_end}})
        if data.get("add_timestamps"):
            out.append({"type": "timestamps", "context_id": cid, "status_code": 206, "done": False,
                        "word_timestamps": {"words": words, "start": starts, "end": ends}})
        return out


def _validate_generation(data: dict[str, Any]) -> tuple[str, str, str] | None:
    model = data.get("model_id")
    if model in SUNSET:
        return ("Model sunsetted", f"The model '{model}' has been sunsetted. Use sonic-3.5 or sonic-3.",
                "model_sunsetted")
    if model not in MODELS:
        return ("Invalid model", f"Unknown model_id {model!r}.", "invalid_model")
    if not isinstance(data.get("transcript"), str):
        return ("Invalid request", "transcript is required.", "invalid_request")
    if data.get("language", "en") not in LANGUAGES:
        return ("Invalid language", f"Language {data.get('language')!r} is not supported.", "invalid_language")
    voice = data.get("voice")
    if not isinstance(voice, dict) or voice.get("mode") != "id" or not voice.get("id"):
        return ("Invalid voice", "voice must be {\"mode\": \"id\", \"id\": \"<voice id>\"}.", "invalid_voice")
    if voice["id"] != VOICE_ID:
        return ("Voice not found", f"Voice {voice['id']} was not found.", "voice_not_found")
    fmt = data.get("output_format")
    if (not isinstance(fmt, dict) or fmt.get("container") != "raw"
            or fmt.get("encoding") not in ("pcm_s16le", "pcm_f32le") or fmt.get("sample_rate") not in RATES):
        return ("Invalid output format", "output_format must be raw pcm_s16le|pcm_f32le at a supported rate.",
                "invalid_output_format")
    return None


# --- STT ---------------------------------------------------------------------------------


@dataclass
class STTConnection:
    headers: dict[str, str]
    query: dict[str, str]
    audio: bytearray = field(default_factory=bytearray)
    texts: list[str] = field(default_factory=list)  # text frames received
    finalized: int = 0
    closed: bool = False
    dropped: bool = False


class CartesiaSTTFake:
    def __init__(self, changes: Changes) -> None:
        self._changes = changes
        self.api_key = API_KEY
        self.transcript = "What time is check-in?"
        self.final_parts: list[str] | None = None  # default: the transcript as two deltas
        self.partial_every_bytes = 8000  # a partial every 250 ms of 16 kHz audio
        self.delay = 0.0  # seconds between `finalize` and the final transcript
        self.drop_after_bytes: int | None = None  # cut the TCP connection after this much audio
        self.drop_on_finalize = False
        self.error_on_finalize: dict[str, Any] | None = None
        self.connections: list[STTConnection] = []
        self._sockets: set[web.WebSocketResponse] = set()

    def routes(self) -> list[web.RouteDef]:
        return [web.get("/stt/websocket", self._websocket)]

    async def close_all(self) -> None:
        for ws in list(self._sockets):
            await ws.close(code=1001, message=b"server shutdown")

    def _finals(self) -> list[str]:
        if self.final_parts is not None:
            return self.final_parts
        words = self.transcript.split()
        half = max(1, len(words) // 2)
        parts = [" ".join(words[:half])]
        if words[half:]:
            parts.append(" " + " ".join(words[half:]))
        return parts

    async def _websocket(self, request: web.Request) -> web.StreamResponse:
        problem = _handshake_problem(request, self.api_key)
        conn = STTConnection(headers=dict(request.headers), query=dict(request.query))
        self.connections.append(conn)
        self._changes.changed()
        if problem:
            return problem
        q = request.query
        valid = q.get("model") == "ink-whisper" and q.get("encoding") == "pcm_s16le"
        if not valid or not q.get("sample_rate", "").isdigit():
            return web.json_response({"error": "model=ink-whisper, encoding and sample_rate are required",
                                      "status_code": 400}, status=400)
        rate = int(q["sample_rate"])
        ws = web.WebSocketResponse(heartbeat=None)
        await ws.prepare(request)
        self._sockets.add(ws)
        request_id = uuid.uuid4().hex
        language = q.get("language", "en")
        partials_sent = 0
        try:
            async for msg in ws:
                if msg.type == WSMsgType.BINARY:
                    conn.audio += msg.data
                    self._changes.changed()
                    if self.drop_after_bytes is not None and len(conn.audio) >= self.drop_after_bytes:
                        self._drop(request, conn)
                        break
                    words = self.transcript.split()
                    due = len(conn.audio) // self.partial_every_bytes
                    if due > partials_sent and len(words) > 1:
                        partials_sent = due
                        n = min(len(words) - 1, due)
                        await ws.send_json({"type": "transcript", "request_id": request_id, "is_final": False,
                                            "text": " ".join(words[:n]), "duration": len(conn.audio) / 2 / rate,
                                            "language": language})
                elif msg.type == WSMsgType.TEXT:
                    conn.texts.append(msg.data)
                    self._changes.changed()
                    if msg.data == "finalize":
                        conn.finalized += 1
                        if self.drop_on_finalize:
                            self._drop(request, conn)
                            break
                        if self.delay:
                            await asyncio.sleep(self.delay)
                        if self.error_on_finalize is not None:
                            e = self.error_on_finalize
                            await ws.send_json(error_message(
                                e.get("title", "Error"), e.get("message", "failed"),
                                e.get("error_code", "internal_error"), e.get("status", 500)))
                            continue
                        duration = len(conn.audio) / 2 / rate
                        for part in self._finals():
                            words = [{"word": w, "start": 0.0, "end": duration} for w in part.split()]
                            await ws.send_json({"type": "transcript", "request_id": request_id, "is_final": True,
                                                "text": part, "duration": duration, "language": language,
                                                "words": words})
                        await ws.send_json({"type": "flush_done", "request_id": request_id})
                    elif msg.data == "done":
                        await ws.send_json({"type": "done", "request_id": request_id})
                        await ws.close()
                        break
                    else:
                        await ws.send_json(error_message("Invalid message", "Expected binary audio, "
                                                         "'finalize' or 'done'.", "invalid_request"))
        finally:
            self._sockets.discard(ws)
            conn.closed = True
            self._changes.changed()
        return ws

    def _drop(self, request: web.Request, conn: STTConnection) -> None:
        conn.dropped = True
        if request.transport is not None:
            request.transport.close()  # no close frame: the socket just dies
