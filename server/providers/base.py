"""The three interfaces Sandra talks to the outside through: STT, LLM, TTS.

Each vendor is one module implementing one of them. Audio crossing these interfaces is
16-bit little-endian mono PCM (``bytes``) with its sample rate stated beside it.

- **STT**: ``stt.open(language, on_partial)`` returns an :class:`STTStream` for one
  utterance. The call feeds it 16 kHz audio from the speech onset (pre-roll included)
  while the caller speaks and awaits :meth:`STTStream.finish` at the end of the turn.
  Whole-utterance recognisers subclass :class:`BatchSTT` and implement ``transcribe``.
- **LLM**: ``llm.reply(request)`` is an async iterator of text pieces, streamed as the
  model writes them.
- **TTS**: ``tts.open(language)`` returns a :class:`TTSStream` for one reply: text is
  ``send``-ed sentence by sentence, ``end`` says no more is coming, and iterating the
  stream yields :class:`TTSChunk` s of audio with visemes. Sentence-at-a-time
  synthesisers subclass :class:`SentenceTTS` and implement ``synthesize``.

Cancellation is how a barge-in stops a provider: the turn's task is cancelled, and each
provider's ``aclose`` (always awaited) releases what it holds.
"""

from __future__ import annotations

import abc
import asyncio
import contextvars
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

STT_RATE = 16000

# The caller's turn a provider call serves, counted from 1 (the greeting is 0): set by the
# call around each STT and reply task. The scripted providers' fault injection reads it.
CALLER_TURN: contextvars.ContextVar[int] = contextvars.ContextVar("caller_turn", default=0)


# --- data -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Transcript:
    text: str
    # Probability that the utterance held no speech (Whisper's no_speech_prob), if known.
    no_speech_prob: float | None = None
    language: str | None = None


@dataclass(frozen=True)
class ChatMessage:
    role: Literal["user", "assistant"]
    text: str
    # An assistant reply cut short by a barge-in: ``text`` is what was actually played.
    interrupted: bool = False


@dataclass(frozen=True)
class ToolUse:
    """The LLM called a tool (reported to the client as a ``tool`` event)."""

    name: str
    input: dict[str, Any]


async def _at_once() -> None:
    return None


@dataclass(frozen=True)
class LLMRequest:
    history: Sequence[ChatMessage]  # oldest first; the last one is the user's turn
    language: str = "en"
    # Side-channel reports for the client's debug console: ``notify(ToolUse(...))``.
    notify: Callable[[ToolUse], None] = field(default=lambda event: None)
    # Awaited before anything with an effect outside the reply (a tool such as notify_host):
    # a preemptive reply, prepared before the caller's turn is over, waits there until the
    # turn ends with its transcript (or is cancelled, and nothing happened).
    confirmed: Callable[[], Awaitable[object]] = field(default=lambda: _at_once())


@dataclass(frozen=True)
class Viseme:
    """An Oculus-15 viseme: ``id`` 0-14, ``t_ms`` from the start of the reply's audio."""

    id: int
    t_ms: float
    dur_ms: float


@dataclass(frozen=True)
class TTSChunk:
    pcm: bytes  # s16le mono
    sample_rate: int
    # Visemes whose t_ms falls in this reply's audio (times from the reply's first sample).
    visemes: tuple[Viseme, ...] = ()
    # The text this chunk finishes speaking, if it ends a sentence (for played-text accounting).
    text: str = ""


# --- STT ------------------------------------------------------------------------------


class STTStream(abc.ABC):
    @abc.abstractmethod
    async def feed(self, pcm: bytes) -> None:
        """Add 16 kHz mono s16le audio of the utterance."""

    @abc.abstractmethod
    async def finish(self) -> Transcript:
        """The utterance is over: return its transcript."""

    async def aclose(self) -> None:
        """Release resources; called once the stream is done or cancelled."""


class STT(abc.ABC):
    name: str = "stt"
    # Whether ``open(None, ...)`` detects the utterance's language (Transcript.language).
    detects_language: bool = False

    @abc.abstractmethod
    async def open(self, language: str, on_partial: Callable[[str], None] | None = None) -> STTStream:
        ...

    async def start(self) -> None:
        """Load models or check credentials once at server start."""

    async def aclose(self) -> None:
        pass


class _BufferedStream(STTStream):
    def __init__(self, stt: BatchSTT, language: str) -> None:
        self._stt = stt
        self._language = language
        self._chunks: list[bytes] = []

    async def feed(self, pcm: bytes) -> None:
        self._chunks.append(pcm)

    async def finish(self) -> Transcript:
        return await self._stt.transcribe(b"".join(self._chunks), self._language)


class BatchSTT(STT):
    """A recogniser of whole utterances: buffers the audio, transcribes at the end."""

    async def open(self, language: str, on_partial: Callable[[str], None] | None = None) -> STTStream:
        return _BufferedStream(self, language)

    @abc.abstractmethod
    async def transcribe(self, pcm: bytes, language: str) -> Transcript:
        ...


# --- LLM ------------------------------------------------------------------------------


class LLM(abc.ABC):
    name: str = "llm"

    @abc.abstractmethod
    def reply(self, request: LLMRequest) -> AsyncIterator[str]:
        """Stream the reply to ``request.history[-1]`` in text pieces."""

    def greeting(self, language: str) -> str:
        if language == "es":
            return "¡Hola! Soy Sandra, tu conserje. ¿En qué puedo ayudarte?"
        return "Hi, I'm Sandra, your concierge. How can I help?"

    def apology(self, language: str) -> str:
        if language == "es":
            return "Lo siento, ahora mismo tengo un problema técnico. ¿Puedes repetirlo en un momento?"
        return "Sorry, I'm having a technical problem right now. Could you ask me again in a moment?"

    async def start(self) -> None:
        pass

    async def aclose(self) -> None:
        pass


# --- TTS ------------------------------------------------------------------------------


class TTSStream(abc.ABC):
    @abc.abstractmethod
    async def send(self, text: str) -> None:
        """Add a sentence (or clause) of the reply."""

    @abc.abstractmethod
    async def end(self) -> None:
        """No more text for this reply."""

    @abc.abstractmethod
    def __aiter__(self) -> AsyncIterator[TTSChunk]:
        """Audio of the reply, in order, until everything sent before ``end`` is spoken."""

    async def aclose(self) -> None:
        """Stop synthesising (barge-in) and release resources. Safe to call twice."""


class TTS(abc.ABC):
    name: str = "tts"

    @abc.abstractmethod
    def open(self, language: str) -> TTSStream:
        ...

    async def start(self) -> None:
        pass

    async def aclose(self) -> None:
        pass


class _SentenceStream(TTSStream):
    """Synthesises each sent sentence in order; visemes shifted onto the reply's timeline."""

    _END = object()

    def __init__(self, tts: SentenceTTS, language: str) -> None:
        self._tts = tts
        self._language = language
        self._texts: asyncio.Queue[Any] = asyncio.Queue()
        self._closed = False

    async def send(self, text: str) -> None:
        if text.strip():
            self._texts.put_nowait(text)

    async def end(self) -> None:
        self._texts.put_nowait(self._END)

    async def __aiter__(self) -> AsyncIterator[TTSChunk]:  # type: ignore[override]
        sentence_start_ms = 0.0
        while not self._closed:
            text = await self._texts.get()
            if text is self._END:
                return
            sentence_ms = 0.0
            async for chunk in self._tts.synthesize(text, self._language):
                if sentence_start_ms and chunk.visemes:
                    shifted = tuple(Viseme(v.id, v.t_ms + sentence_start_ms, v.dur_ms) for v in chunk.visemes)
                    chunk = TTSChunk(chunk.pcm, chunk.sample_rate, shifted, chunk.text)
                sentence_ms += len(chunk.pcm) / 2 / chunk.sample_rate * 1000
                yield chunk
            sentence_start_ms += sentence_ms

    async def aclose(self) -> None:
        self._closed = True


class SentenceTTS(TTS):
    """A synthesiser of one sentence at a time."""

    def open(self, language: str) -> TTSStream:
        return _SentenceStream(self, language)

    @abc.abstractmethod
    def synthesize(self, text: str, language: str) -> AsyncIterator[TTSChunk]:
        """Audio of ``text``; visemes timed from the sentence's first sample; the last
        chunk carries ``text``."""
