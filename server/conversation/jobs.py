"""The call's provider work: one task per transcription and per reply.

:class:`Jobs` performs the core's transcription and reply actions. Each job runs in a
task the call owns and reports back by posting a :class:`Result` to the call's inbox
(never by touching the core itself); the call's task applies it to the core. A job that
raises a :class:`ProviderError` reports a ``provider_error``; one that raises anything
else is our own defect: its traceback goes to the log and it reports ``internal_error``.
Either way the core answers with an apology.

A cancelled reply (barge-in) is awaited before it is reported gone, with what the
caller heard of it, so the next reply never starts while the old one is unwinding.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from .. import recording
from ..errors import ProviderError
from ..events import ResponseDelta, ToolUsed
from ..media.outbound import OutboundAudio
from ..providers import Providers
from ..providers.base import CALLER_TURN, LLMRequest, Transcript
from . import actions
from .actions import ReplyTimings
from .reply import Hold, Reply, speak
from .turns import TurnTaking

if TYPE_CHECKING:
    from .call import Call

log = logging.getLogger("sandra.call")


# --- results, applied to the core by the call's task --------------------------------------


@dataclass(frozen=True)
class Result:
    turn_id: int

    def apply(self, core: TurnTaking, now: float) -> None:
        raise NotImplementedError


@dataclass(frozen=True)
class Partial(Result):
    text: str

    def apply(self, core: TurnTaking, now: float) -> None:
        core.partial(self.turn_id, self.text)


@dataclass(frozen=True)
class Transcribed(Result):
    transcript: Transcript
    stt_ms: float
    seq: int = 0

    def apply(self, core: TurnTaking, now: float) -> None:
        core.transcribed(self.turn_id, self.transcript, self.stt_ms, now, self.seq)


@dataclass(frozen=True)
class TranscriptionFailed(Result):
    code: str
    message: str
    seq: int = 0

    def apply(self, core: TurnTaking, now: float) -> None:
        core.transcription_failed(self.turn_id, self.code, self.message, now, self.seq)


@dataclass(frozen=True)
class Judged(Result):
    seq: int
    probability: float | None

    def apply(self, core: TurnTaking, now: float) -> None:
        core.turn_judged(self.turn_id, self.seq, self.probability, now)


@dataclass(frozen=True)
class ReplyFinished(Result):
    text: str
    timings: ReplyTimings

    def apply(self, core: TurnTaking, now: float) -> None:
        core.reply_finished(self.turn_id, self.text, self.timings, now)


@dataclass(frozen=True)
class ReplyFailed(Result):
    code: str
    message: str

    def apply(self, core: TurnTaking, now: float) -> None:
        core.reply_failed(self.turn_id, self.code, self.message, now)


@dataclass(frozen=True)
class ReplyCancelled(Result):
    heard: str
    timings: ReplyTimings

    def apply(self, core: TurnTaking, now: float) -> None:
        core.reply_cancelled(self.turn_id, self.heard, self.timings, now)


# --- the jobs ---------------------------------------------------------------------------


@dataclass
class _Transcription:
    audio: asyncio.Queue[bytes | None]
    task: asyncio.Task[None] | None = None


@dataclass
class _Reply:
    reply: Reply
    task: asyncio.Task[None] | None = None
    hold: Hold | None = None  # a preemptive reply, until released


async def _once(text: str) -> AsyncIterator[str]:
    yield text


class Jobs:
    def __init__(
        self,
        call: Call,
        providers: Providers,
        outbound: OutboundAudio,
        *,
        audio_model: Callable[[bytes], float] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        """``audio_model(pcm16k)``: the end-of-turn model's probability that the utterance
        is finished (CPU work: run in an executor); None: no audio model."""
        self._call = call
        self._audio_model = audio_model
        self._providers = providers
        self._outbound = outbound
        self._clock = clock
        self._stt: dict[int, _Transcription] = {}
        self._replies: dict[int, _Reply] = {}
        self._unwinding: dict[int, _Reply] = {}

    def perform(self, action: actions.Action) -> None:
        match action:
            case actions.StartTranscription():
                job = self._stt[action.turn_id] = _Transcription(asyncio.Queue())
                for chunk in action.audio:
                    job.audio.put_nowait(chunk)
                job.task = self._call.spawn(self._transcribe(action, job), f"stt-{action.turn_id}")
            case actions.FeedTranscription():
                if (job := self._stt.get(action.turn_id)) is not None:
                    job.audio.put_nowait(action.audio)
            case actions.FinishTranscription():
                if (job := self._stt.get(action.turn_id)) is not None:
                    job.audio.put_nowait(None)
            case actions.CancelTranscription():
                if (job := self._stt.pop(action.turn_id, None)) is not None and job.task is not None:
                    job.task.cancel()
            case actions.StartReply():
                reply = self._replies.setdefault(action.turn_id, _Reply(Reply(action.turn_id)))
                if action.held:
                    turn_id = action.turn_id
                    reply.hold = Hold(self._call.send, lambda: self._outbound.begin_reply(turn_id))
                reply.task = self._call.spawn(self._speak(action, reply), f"reply-{action.turn_id}")
            case actions.ReleaseReply():
                if (reply := self._replies.get(action.turn_id)) is not None and reply.hold is not None:
                    reply.hold.release()
            case actions.DropReply():
                reply = self._replies.get(action.turn_id)
                if reply is not None and reply.hold is not None and not reply.hold.released.is_set():
                    del self._replies[action.turn_id]
                    if reply.task is not None:
                        reply.task.cancel()
            case actions.JudgeAudio():
                self._call.spawn(self._judge(action), f"judge-{action.turn_id}")
            case actions.CancelReply():
                if (reply := self._replies.pop(action.turn_id, None)) is not None:
                    if reply.task is not None:
                        reply.task.cancel()
                    self._unwinding[action.turn_id] = reply
                    self._call.spawn(self._unwind(action.turn_id, reply), f"unwind-{action.turn_id}")
            case _:
                raise TypeError(f"not a job: {action!r}")

    async def cancel_all(self) -> None:
        """Cancel every job and wait for them (recovery after a defect)."""
        jobs = [*self._stt.values(), *self._replies.values(), *self._unwinding.values()]
        self._stt.clear()
        self._replies.clear()
        self._unwinding.clear()
        tasks = [job.task for job in jobs if job.task is not None]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    def unwound(self) -> list[Result]:
        """At hang-up, after every task was cancelled: the replies cut by it."""
        cut = {**self._replies, **self._unwinding}
        self._replies.clear()
        self._unwinding.clear()
        return [ReplyCancelled(turn_id, self._heard(turn_id, job.reply), _timings(job.reply)) for turn_id, job in cut.items()]

    # --- transcription ------------------------------------------------------------------

    async def _transcribe(self, action: actions.StartTranscription, job: _Transcription) -> None:
        CALLER_TURN.set(action.caller_turn)
        stt = self._providers.stt
        language = action.language
        if language is None and not stt.detects_language:
            language = action.fallback_language
        post, turn_id = self._call.post, action.turn_id
        try:
            stream = await stt.open(language, on_partial=lambda text: post(Partial(turn_id, text)))  # type: ignore[arg-type]
            try:
                while (pcm := await job.audio.get()) is not None:
                    await stream.feed(pcm)
                started = self._clock()
                transcript = await stream.finish()
                stt_ms = (self._clock() - started) * 1000
            finally:
                await stream.aclose()
        except ProviderError as exc:
            self._provider_failed(exc, "stt")
            post(TranscriptionFailed(turn_id, "provider_error", f"the {exc.provider} service failed: {exc}", action.seq))
        except Exception as exc:
            self._defect(turn_id, exc)
            post(TranscriptionFailed(turn_id, "internal_error", _internal(exc), action.seq))
        else:
            post(Transcribed(turn_id, transcript, stt_ms, action.seq))
        finally:
            if self._stt.get(turn_id) is job:
                del self._stt[turn_id]

    async def _judge(self, action: actions.JudgeAudio) -> None:
        probability: float | None = None
        if self._audio_model is not None:
            pcm = b"".join(action.audio)
            try:
                probability = await asyncio.get_running_loop().run_in_executor(None, self._audio_model, pcm)
            except Exception as exc:  # judged by the words alone
                log.error("call %s: the end-of-turn model failed", self._call.session_id, exc_info=exc)
                self._call.metrics.failures.labels("turn").inc()
        self._call.post(Judged(action.turn_id, action.seq, probability))

    # --- replies ------------------------------------------------------------------------

    async def _speak(self, action: actions.StartReply, job: _Reply) -> None:
        CALLER_TURN.set(action.caller_turn)
        post, turn_id, reply, hold = self._call.post, action.turn_id, job.reply, job.hold
        if action.script == "apology":
            await self._apologize(action, job)
            self._finished(turn_id, job)
            return
        llm = self._providers.llm
        if action.script == "greeting":
            greeting = self._call.guard.greeting(llm.greeting(action.language), action.language)  # the guest's name
            if self._call.recorder.recording:
                greeting = recording.announce(greeting, action.language)  # "this call is recorded"
            pieces = _once(greeting)
        else:
            send = hold.send if hold is not None else self._call.send
            request = LLMRequest(tuple(action.history), action.language,
                                 notify=lambda tool: send(ToolUsed(tool.name, tool.input)))
            if hold is not None:  # its tools' effects wait for the turn to be over
                request = dataclasses.replace(request, confirmed=hold.released.wait)
            pieces = llm.reply(request)
        try:
            if hold is None:
                self._outbound.begin_reply(turn_id)
            await speak(reply, pieces, tts=self._providers.tts, language=action.language, outbound=self._outbound,
                        send=self._call.send, clock=self._clock, hold=hold)
            if hold is not None:
                await hold.released.wait()  # a reply with no audio at all still waits for its turn
            await self._outbound.drained()
        except ProviderError as exc:
            self._provider_failed(exc, "llm")
            post(ReplyFailed(turn_id, "provider_error", f"the {exc.provider} service failed: {exc}"))
        except Exception as exc:
            self._defect(turn_id, exc)
            post(ReplyFailed(turn_id, "internal_error", _internal(exc)))
        else:
            self._finished(turn_id, job)

    def _finished(self, turn_id: int, job: _Reply) -> None:
        if self._replies.get(turn_id) is job:
            del self._replies[turn_id]
        reply = job.reply
        self._call.post(ReplyFinished(turn_id, reply.said if reply.winding_down else reply.text, _timings(reply)))

    def wind_down(self) -> None:
        """Every reply stops at the end of the sentence it is speaking (a draining server)."""
        for job in self._replies.values():
            job.reply.winding_down = True

    async def _apologize(self, action: actions.StartReply, job: _Reply) -> None:
        """Say sorry after a failure, out loud if the voice still works, else in writing."""
        apology = self._providers.llm.apology(action.language)
        reply = job.reply
        if not reply.spoken and not reply.current:
            self._outbound.begin_reply(action.turn_id)  # nothing of the failed reply is playing
        reply.text = (reply.text + " " + apology).strip()
        try:
            await speak(Reply(action.turn_id), _once(apology), tts=self._providers.tts, language=action.language,
                        outbound=self._outbound, send=self._call.send, clock=self._clock)
            await self._outbound.drained()
        except Exception as exc:  # even the apology failed: write it
            if isinstance(exc, ProviderError):
                self._provider_failed(exc, "tts")
            else:
                self._defect(action.turn_id, exc)
            log.warning("call %s: apology not spoken: %s", self._call.session_id, exc)
            self._call.send(ResponseDelta(action.turn_id, apology))

    async def _unwind(self, turn_id: int, job: _Reply) -> None:
        if job.task is not None:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await job.task
        if self._unwinding.pop(turn_id, None) is job:
            self._call.post(ReplyCancelled(turn_id, self._heard(turn_id, job.reply), _timings(job.reply)))

    def _heard(self, turn_id: int, reply: Reply) -> str:
        outbound = self._outbound
        if outbound.reply_id != turn_id:
            return ""
        return reply.played_text(outbound.reply_sent, outbound.reply_written)

    # --- reporting ----------------------------------------------------------------------

    def _provider_failed(self, exc: ProviderError, role: str) -> None:
        log.warning("call %s: %s", self._call.session_id, exc)
        self._call.metrics.provider_errors.labels(exc.role or role, exc.provider).inc()

    def _defect(self, turn_id: int, exc: BaseException) -> None:
        log.error("call %s: turn %d failed", self._call.session_id, turn_id, exc_info=exc)
        self._call.metrics.failures.labels("turn").inc()


def _internal(exc: BaseException) -> str:
    return f"Sandra had an internal error ({type(exc).__name__}); she apologised and is listening again"


def _timings(reply: Reply) -> ReplyTimings:
    ttft = tts = None
    if reply.llm_first_at is not None and reply.llm_started_at is not None:
        ttft = (reply.llm_first_at - reply.llm_started_at) * 1000
    if reply.tts_first_at is not None and reply.tts_sent_at is not None:
        tts = (reply.tts_first_at - reply.tts_sent_at) * 1000
    return ReplyTimings(ttft, tts)

