"""Offline TTS: espeak-ng through its C library (``libespeak-ng.so.1``), with visemes.

espeak-ng synthesises in the calling thread (``AUDIO_OUTPUT_SYNCHRONOUS``) and hands each
~50 ms of 22050 Hz int16 audio to a callback together with the phoneme events (IPA names,
``audio_position`` in ms from the start of the text) that fall in it. The library is
process-global and not thread-safe, so every synthesis in the process runs on one
dedicated thread (:class:`_Engine`, created once), one text at a time. The callback
pushes audio to the event loop as it is produced, so the first chunk is out long before
the sentence is done; when the consumer stops iterating (barge-in) the callback returns
1 and espeak-ng aborts. The voice follows the stream's language, unless a sentence is
clearly in the other one.

espeak-ng is a system library: on Debian, ``apt-get install espeak-ng``.
"""

from __future__ import annotations

import asyncio
import ctypes
import threading
from collections.abc import AsyncIterator, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from .. import visemes
from ..config import Config
from ..errors import ConfigError, ProviderError
from ..knowledge import detect_language
from .base import SentenceTTS, TTSChunk, Viseme

LIBRARY = "libespeak-ng.so.1"
CHUNK_MS = 200

# speak_lib.h
AUDIO_OUTPUT_SYNCHRONOUS = 2
INITIALIZE_PHONEME_EVENTS = 0x0001
INITIALIZE_PHONEME_IPA = 0x0002
CHARS_UTF8 = 1
ENDPAUSE = 0x1000
POS_CHARACTER = 1
EVENT_LIST_TERMINATED = 0
EVENT_END = 5
EVENT_PHONEME = 7
PARAM_RATE = 1
EE_OK = 0
EE_NOT_FOUND = 2


class _EventId(ctypes.Union):
    _fields_ = [("number", ctypes.c_int), ("name", ctypes.c_char_p), ("string", ctypes.c_char * 8)]


class _Event(ctypes.Structure):
    """``espeak_EVENT``; layout checked against speak_lib.h of 1.51 (40 bytes on x86-64, id at 32)."""

    _fields_ = [
        ("type", ctypes.c_int),
        ("unique_identifier", ctypes.c_uint),
        ("text_position", ctypes.c_int),
        ("length", ctypes.c_int),
        ("audio_position", ctypes.c_int),
        ("sample", ctypes.c_int),
        ("user_data", ctypes.c_void_p),
        ("id", _EventId),
    ]


_SynthCallback = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.POINTER(ctypes.c_short), ctypes.c_int, ctypes.POINTER(_Event))


def load_library(name: str = LIBRARY) -> ctypes.CDLL:
    try:
        lib = ctypes.CDLL(name)
    except OSError as exc:
        raise ProviderError(
            "espeak",
            f"cannot load {name} ({exc}). The offline voice needs Debian's espeak-ng: apt-get install espeak-ng",
        ) from None
    lib.espeak_Initialize.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_char_p, ctypes.c_int]
    lib.espeak_Initialize.restype = ctypes.c_int
    lib.espeak_SetSynthCallback.argtypes = [_SynthCallback]
    lib.espeak_SetSynthCallback.restype = None
    lib.espeak_SetVoiceByName.argtypes = [ctypes.c_char_p]
    lib.espeak_SetVoiceByName.restype = ctypes.c_int
    lib.espeak_SetParameter.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int]
    lib.espeak_SetParameter.restype = ctypes.c_int
    lib.espeak_Synth.argtypes = [
        ctypes.c_void_p, ctypes.c_size_t, ctypes.c_uint, ctypes.c_int, ctypes.c_uint, ctypes.c_uint,
        ctypes.c_void_p, ctypes.c_void_p,
    ]
    lib.espeak_Synth.restype = ctypes.c_int
    return lib


# --- visemes (pure) -------------------------------------------------------------------


class VisemeTrack:
    """Phoneme events in, visemes out: each phoneme lasts until the next event.

    An event without a phoneme name marks a pause; it becomes a ``sil`` viseme when it
    lasts at least ``min_pause_ms`` (shorter ones are word joins, not worth a closed mouth).
    """

    def __init__(self, min_pause_ms: float = 60.0) -> None:
        self._min_pause_ms = min_pause_ms
        self._open: tuple[float, str] | None = None
        self._ready: list[Viseme] = []

    def add(self, t_ms: float, phoneme: str) -> None:
        if self._open is not None:
            self._finish(t_ms)
        self._open = (t_ms, phoneme)

    def take(self) -> list[Viseme]:
        out, self._ready = self._ready, []
        return out

    def close(self, end_ms: float) -> list[Viseme]:
        """The sentence's audio ends at ``end_ms``: the last phoneme ends there too."""
        if self._open is not None:
            self._finish(end_ms)
            self._open = None
        return [v for v in self.take() if v.t_ms < end_ms]

    def _finish(self, end_ms: float) -> None:
        assert self._open is not None
        start, phoneme = self._open
        dur = end_ms - start
        if dur <= 0:
            return
        ids = visemes.phoneme_to_visemes(phoneme) if phoneme else ([0] if dur >= self._min_pause_ms else [])
        step = dur / len(ids) if ids else 0.0
        self._ready.extend(Viseme(vid, round(start + k * step, 1), round(step, 1)) for k, vid in enumerate(ids))


# --- the engine (one per process) ------------------------------------------------------


_Piece = tuple[bytes, list[tuple[int, str]]]  # audio, and (ms, IPA phoneme) events in it


@dataclass
class _Job:
    """One text being synthesised: filled on the espeak thread, drained on the event loop."""

    loop: asyncio.AbstractEventLoop
    queue: asyncio.Queue[_Piece | None]
    samples: int = 0
    cancelled: bool = False
    error: BaseException | None = field(default=None)

    def push(self, pcm: bytes, phonemes: list[tuple[int, str]]) -> None:
        self.samples += len(pcm) // 2
        self.loop.call_soon_threadsafe(self.queue.put_nowait, (pcm, phonemes))


class _Engine:
    """espeak-ng, which is process-global: one thread, one text at a time."""

    def __init__(self, lib: ctypes.CDLL) -> None:
        self._lib = lib
        self.executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="espeak")
        self._lock = threading.Lock()  # the executor already serialises; this makes it a rule
        self._callback = _SynthCallback(self._on_audio)  # kept alive as long as the engine
        self._job: _Job | None = None
        self._voice: str | None = None
        self.sample_rate = 0

    # Everything below runs on the espeak thread.

    def _initialize(self) -> None:
        if self.sample_rate:
            return
        rate = self._lib.espeak_Initialize(
            AUDIO_OUTPUT_SYNCHRONOUS, 0, None, INITIALIZE_PHONEME_EVENTS | INITIALIZE_PHONEME_IPA
        )
        if rate <= 0:
            raise ProviderError(
                "espeak", "espeak_Initialize failed: is espeak-ng-data installed? (apt-get install espeak-ng)"
            )
        self._lib.espeak_SetSynthCallback(self._callback)
        self.sample_rate = rate

    def _select(self, voice: str, key: str) -> None:
        if voice == self._voice:
            return
        err = self._lib.espeak_SetVoiceByName(voice.encode())
        if err != EE_OK:
            self._voice = None
            raise ConfigError(f"[tts] {key} = {voice!r}: espeak-ng has no such voice (list them: espeak-ng --voices)")
        self._voice = voice

    def check(self, voices: Iterable[tuple[str, str]]) -> int:
        with self._lock:
            self._initialize()
            for key, voice in voices:
                self._select(voice, key)
            return self.sample_rate

    def synth(self, job: _Job, text: str, voice: str, key: str, rate_wpm: int) -> None:
        with self._lock:
            if job.cancelled:
                return
            self._initialize()
            self._select(voice, key)
            self._lib.espeak_SetParameter(PARAM_RATE, rate_wpm, 0)
            data = text.encode("utf-8") + b"\0"
            self._job = job
            try:
                flags = CHARS_UTF8 | ENDPAUSE  # ENDPAUSE: the pause after a sentence
                err = self._lib.espeak_Synth(data, len(data), 0, POS_CHARACTER, 0, flags, None, None)
            finally:
                self._job = None
        if job.error is not None:
            raise job.error
        if err != EE_OK and not job.cancelled:
            raise ProviderError("espeak", f"espeak_Synth failed with error {err}")

    def _on_audio(self, wav: Any, n: int, events: Any) -> int:
        job = self._job
        if job is None or job.cancelled:
            return 1
        try:
            phonemes = []
            i = 0
            while events[i].type != EVENT_LIST_TERMINATED:
                ev = events[i]
                if ev.type == EVENT_PHONEME:
                    name = bytes(ev.id.string).split(b"\0", 1)[0].decode("utf-8", "replace")
                    phonemes.append((ev.audio_position, name))
                elif ev.type == EVENT_END:
                    phonemes.append((ev.audio_position, ""))
                i += 1
            pcm = ctypes.string_at(wav, n * 2) if wav and n > 0 else b""
            if pcm or phonemes:
                job.push(pcm, phonemes)
            return 0
        except BaseException as exc:  # nothing may unwind into C: hand it to the job, abort
            job.error = exc
            return 1


_engine: _Engine | None = None
_engine_lock = threading.Lock()


def engine() -> _Engine:
    """The process's espeak-ng engine. Global because the C library is."""
    global _engine
    with _engine_lock:
        if _engine is None:
            _engine = _Engine(load_library())
        return _engine


# --- the provider ---------------------------------------------------------------------


class EspeakTTS(SentenceTTS):
    name = "espeak"

    def __init__(self, config: Config) -> None:
        self._config = config.tts
        self._engine = engine()
        # Audio espeak-ng actually produced, in ms, cancelled sentences included (metrics).
        self.synthesized_ms = 0.0

    def _voice(self, language: str) -> tuple[str, str]:
        if language.lower().startswith("es"):
            return "voice_es", self._config.voice_es
        return "voice_en", self._config.voice_en

    async def start(self) -> None:
        """Initialise espeak-ng and check both voices, so the first sentence is not slower."""
        voices = [self._voice("en"), self._voice("es")]
        await asyncio.get_running_loop().run_in_executor(self._engine.executor, self._engine.check, voices)

    async def synthesize(self, text: str, language: str) -> AsyncIterator[TTSChunk]:
        loop = asyncio.get_running_loop()
        # Unbounded on purpose: espeak-ng runs hundreds of times faster than real time, so a
        # sentence is in memory (a few hundred kB) within milliseconds whatever we do, and
        # holding the one espeak thread back for a slow consumer would stall every call.
        queue: asyncio.Queue[_Piece | None] = asyncio.Queue()
        job = _Job(loop, queue)
        # A sentence clearly in the other language (the concierge answers a Spanish question
        # in Spanish even on an English call) is read by that language's voice.
        key, voice = self._voice(detect_language(text, language))
        future = loop.run_in_executor(
            self._engine.executor, self._engine.synth, job, text, voice, key, self._config.rate_wpm
        )
        # Ends the queue after every piece of audio: those were scheduled on the loop from
        # the espeak thread before the future's result was.
        future.add_done_callback(lambda _: queue.put_nowait(None))
        track = VisemeTrack()
        pending = bytearray()
        rate = 0
        try:
            while True:
                item = await queue.get()
                if item is None:
                    break
                pcm, phonemes = item
                rate = self._engine.sample_rate
                for t_ms, phoneme in phonemes:
                    track.add(t_ms, phoneme)
                pending += pcm
                chunk_bytes = rate * CHUNK_MS // 1000 * 2
                # Strictly more than a chunk: the last chunk, which carries the text, is never empty.
                while len(pending) > chunk_bytes:
                    yield TTSChunk(bytes(pending[:chunk_bytes]), rate, tuple(track.take()))
                    del pending[:chunk_bytes]
            future.result()  # the espeak thread's error, if any
            end_ms = job.samples * 1000 / rate if rate else 0.0
            yield TTSChunk(bytes(pending), rate or self._engine.sample_rate or 22050, tuple(track.close(end_ms)), text)
        finally:
            if future.done():
                self._account(job, future)
            else:  # the consumer stopped early (barge-in)
                job.cancelled = True  # the callback aborts espeak-ng at its next buffer
                future.add_done_callback(lambda f: self._account(job, f))

    def _account(self, job: _Job, future: asyncio.Future[None]) -> None:
        if not future.cancelled():
            future.exception()  # retrieved: a cancelled sentence's error is nobody's business
        if self._engine.sample_rate:
            self.synthesized_ms += job.samples * 1000 / self._engine.sample_rate

