"""Speaking a reply: text pieces (from the LLM) -> sentences -> TTS -> the outbound track.

:func:`speak` runs two coroutines in one TaskGroup: the *writer* (a child task) cuts the streamed text into
sentences and sends them to the TTS stream as they complete (the first sentence is
spoken while the LLM is still writing); the *player* (in the caller's task) resamples TTS audio to the track's
rate, sends the visemes just before their audio is queued, and writes the audio with
backpressure. Cancelling the task running :func:`speak` (barge-in) stops the LLM stream,
the TTS stream and the queued audio together; the caller flushes the track first, in
the same step.

:class:`Hold` holds a preemptive reply back: prepared on a speculative transcript before
the caller's turn is over, its events wait in a list and its audio before the first write,
until :meth:`Hold.release` (the turn ended with that transcript) or the task is cancelled
(they went on).

:class:`Reply` keeps track of which text has been turned into audio and where, so that
:meth:`Reply.played_text` can say what the caller actually heard.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import aclosing, contextmanager
from dataclasses import dataclass, field

from ..errors import ProviderError
from ..events import Event, ResponseDelta, VisemeBatch
from ..media.outbound import OutboundAudio, Resampler
from ..providers.base import TTS, Viseme
from .sentences import SentenceSplitter

VISEMES_PER_MESSAGE = 24  # keeps a viseme message well under one SCTP packet

Send = Callable[[Event], None]


@dataclass
class Reply:
    turn_id: int
    text: str = ""  # all text the LLM produced so far
    spoken: list[tuple[int, str]] = field(default_factory=list)  # (end sample, sentence) per finished sentence
    current: str = ""  # sentences sent to TTS, not yet finished
    llm_started_at: float | None = None
    llm_first_at: float | None = None
    tts_sent_at: float | None = None
    tts_first_at: float | None = None
    # Stop at the end of the sentence being spoken (a draining server): no more text is
    # synthesised, what is queued plays out.
    winding_down: bool = False

    @property
    def said(self) -> str:
        """The sentences spoken to their end."""
        return " ".join(text for _, text in self.spoken).strip()

    def played_text(self, samples_played: int, samples_written: int) -> str:
        """What the caller heard, given how many samples of this reply left the track:
        the sentences played to their end, and the words of the one cut short in
        proportion to how much of its audio was played."""
        heard, start = [], 0
        for end, text in self.spoken:
            if end > samples_played:
                partial, partial_end = text, end
                break
            heard.append(text)
            start = end
        else:  # cut inside text whose audio is not all written yet
            partial, partial_end = self.current, samples_written
        if partial and samples_played > start:
            fraction = min(1.0, (samples_played - start) / max(1, partial_end - start))
            words = partial.split()
            heard.append(" ".join(words[: int(len(words) * fraction)]))
        return " ".join(t for t in heard if t).strip()


class Hold:
    """A preemptive reply's gate: events are kept, audio waits, until :meth:`release`."""

    def __init__(self, send: Send, on_release: Callable[[], None]) -> None:
        self._send = send
        self._on_release = on_release
        self._kept: list[Event] = []
        self.released = asyncio.Event()

    def send(self, event: Event) -> None:
        if self.released.is_set():
            self._send(event)
        else:
            self._kept.append(event)

    def release(self) -> None:
        """The turn is the caller's for good: the reply becomes Sandra's reply (synchronously,
        in the call's task, so nothing of the turn's own events can come between)."""
        if self.released.is_set():
            return
        self._on_release()
        kept, self._kept = self._kept, []
        for event in kept:
            self._send(event)
        self.released.set()


async def speak(
    reply: Reply,
    pieces: AsyncIterator[str],
    *,
    tts: TTS,
    language: str,
    outbound: OutboundAudio,
    send: Send,
    clock: Callable[[], float] = time.monotonic,
    hold: Hold | None = None,
) -> None:
    """Speak the streamed ``pieces`` as ``reply``. Returns when the TTS stream is done
    (audio may still be queued on the track: await ``outbound.drained()``). With ``hold``,
    everything is prepared but nothing is sent or played before it is released."""
    if hold is not None:
        send = hold.send
    stream = tts.open(language)
    resampler = Resampler(outbound.sample_rate)
    rate = outbound.sample_rate

    async def writer() -> None:
        splitter = SentenceSplitter()
        reply.llm_started_at = clock()
        async with aclosing(pieces) as stream_of_text:
            while True:
                try:
                    with _role("llm"):
                        piece = await anext(stream_of_text)
                except StopAsyncIteration:
                    break
                if not piece:
                    continue
                if reply.llm_first_at is None:
                    reply.llm_first_at = clock()
                reply.text += piece
                send(ResponseDelta(reply.turn_id, piece))
                for sentence in splitter.feed(piece):
                    await _to_tts(sentence)
        for sentence in splitter.flush():
            await _to_tts(sentence)
        with _role("tts"):
            await stream.end()

    async def _to_tts(sentence: str) -> None:
        if reply.tts_sent_at is None:
            reply.tts_sent_at = clock()
        reply.current = (reply.current + " " + sentence).strip()
        with _role("tts"):
            await stream.send(sentence)

    async def player() -> None:
        with _role("tts"):
            await _play()

    async def _play() -> None:
        async for chunk in stream:
            if reply.tts_first_at is None:
                reply.tts_first_at = clock()
            pcm = resampler.convert(chunk.pcm, chunk.sample_rate)
            if hold is not None:
                await hold.released.wait()  # the first audio is ready: it plays once released
            if chunk.visemes:
                _send_visemes(reply.turn_id, chunk.visemes, outbound.reply_sent / rate * 1000, send)
            await outbound.write(pcm)
            if chunk.text:
                reply.spoken.append((outbound.reply_written, chunk.text))
                reply.current = reply.current[len(chunk.text) :].strip() if reply.current.startswith(chunk.text) else ""
                if reply.winding_down:
                    break  # the end of the sentence she was saying
        tail = resampler.flush()
        if tail:
            await outbound.write(tail)

    try:
        async with asyncio.TaskGroup() as group:
            writing = group.create_task(writer())
            # The player runs in the caller's own task: cancelling that task (barge-in)
            # stops the audio writes at once, even if the player was about to run.
            await player()
            if reply.winding_down:
                writing.cancel()  # no more of the reply: the LLM stream closes
    except BaseExceptionGroup as failed:
        raise failed.exceptions[0] from None  # the provider's own error, for the apology
    finally:
        await stream.aclose()


@contextmanager
def _role(role: str) -> Iterator[None]:
    """Tags a ProviderError raised inside with the part of the turn it served."""
    try:
        yield
    except ProviderError as exc:
        exc.role = exc.role or role
        raise


def _send_visemes(turn_id: int, visemes: tuple[Viseme, ...], playhead_ms: float, send: Send) -> None:
    for i in range(0, len(visemes), VISEMES_PER_MESSAGE):
        batch = visemes[i : i + VISEMES_PER_MESSAGE]
        send(
            VisemeBatch(
                turn_id,
                round(playhead_ms, 1),
                [{"id": v.id, "t_ms": round(v.t_ms, 1), "dur_ms": round(v.dur_ms, 1)} for v in batch],
            )
        )
