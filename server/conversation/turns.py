"""Turn-taking: every decision of a call, as a pure core. No asyncio, no clock reads.

:class:`TurnTaking` is fed what happens (the caller's audio frames, Sandra's outbound
frames, client messages, what the providers returned) with the time passed in, and
answers with :mod:`actions <server.conversation.actions>` for the shell to perform:
start/feed/finish/cancel a transcription, start/cancel a reply, flush the outbound
audio, send an event. Take them with :meth:`TurnTaking.take`. It owns the state machine,
the history, the turn numbering and the latency metrics of each turn.

The states::

    idle ──listen──▶ listening ──speech──▶ user_speaking ──end of turn──▶ thinking
                       ▲   ▲                   │    ▲                        │
                       │   └──no words─────────┘    │ barge-in (voice)  first reply frame
                       │                            │                        ▼
                       └──reply done / barge-in (client) ──────────────── speaking

A typed message and the greeting go straight to ``thinking``. Each turn gets the next
``turn_id``. The rules:

- **End of turn** (``detector = "smart"``): after ``min_silence_ms`` of silence the
  utterance so far is transcribed (speculatively) and judged by the end-of-turn audio
  model; both verdicts in, :attr:`judge` says whether it is finished. Finished: the turn
  ends now, with that transcript. Not finished: Sandra keeps listening (judging again
  every ``rejudge_ms`` of further silence, if set); the turn ends at ``max_silence_ms``
  whatever the verdict. If the caller goes on, the speculative transcript is thrown away and
  the whole utterance is transcribed again at the next pause. ``"silence"``: the turn
  ends after the segmenter's ``end_silence_ms``.
- **Barge-in in two steps.** Speech over Sandra is *held* until it has been voiced for
  ``barge_in_ms`` (the segmenter's :class:`SustainedSpeech`). While she is audibly
  speaking it then *pauses* her (the next frame is silence) and sends a tentative
  ``barge-in``; the interrupting sound is transcribed. It is *confirmed* when it holds
  words that are not only a backchannel, or stays voiced past ``confirm_ms``: her reply
  is cut (flush + cancel) and the words are the caller's next turn. Otherwise (a cough, a
  noise, "uh-huh") she *resumes* within ``resume_ms`` of the end of that sound, from the
  start of the word she was cut in. Before she is audible (thinking), sustained speech
  interrupts at once. ``confirm_ms = 0``: every barge-in is confirmed at once.
- Speech over a voice turn whose reply is not audible yet is the same utterance going
  on: the two pieces of audio become one turn.
- A typed message interrupts a reply (or drops a voice turn still being spoken).
- A turn with no words (or Whisper's no-speech verdict) is not answered.
- A cancelled reply is *unwinding* until the shell reports it gone
  (:meth:`reply_cancelled`, with what the caller heard of it): until then no reply
  starts and nothing is added to the history, so the history keeps its order
  (the cut reply, then what interrupted it) and no two replies ever write audio.
- A failed turn (provider error or our own defect) is answered with an apology and
  Sandra listens again.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from enum import StrEnum
from typing import TYPE_CHECKING

from ..events import (
    BargeIn,
    BargeInAck,
    CallStarted,
    Error,
    Event,
    MessageAck,
    ResponseDone,
    StateChanged,
    TranscriptEvent,
    TurnMetrics,
    Vad,
)
from ..media.echo import EchoGuard
from ..media.segmenter import SpeechAudio, SpeechEnd, SpeechSegmenter, SpeechStart, SustainedSpeech
from ..providers.base import ChatMessage, Transcript
from .actions import (
    Action,
    CancelReply,
    CancelTranscription,
    DropReply,
    FeedTranscription,
    FinishTranscription,
    FlushAudio,
    JudgeAudio,
    PauseAudio,
    ReleaseReply,
    ReplyTimings,
    ResumeAudio,
    Send,
    StartReply,
    StartTranscription,
)

if TYPE_CHECKING:
    from ..config import Config
    from ..turn import Evidence

MAX_HISTORY = 60
FRAME_MS = 20


@dataclass(frozen=True)
class TurnPolicy:
    """The ``[turn]`` rules (README "Turn-taking")."""

    detector: str = "smart"  # "smart" | "silence"
    min_silence_ms: int = 200
    max_silence_ms: int = 2000
    rejudge_ms: int = 0  # 0: an unfinished verdict stands until max_silence_ms
    confirm_ms: int = 1200
    resume_ms: int = 400
    sound_end_ms: int = 100  # silence that ends an interrupting sound
    preemptive: bool = False  # start the reply on the speculative transcript, held back


def _ms(seconds: float) -> float:
    return round(seconds * 1000, 3)


def _always_complete(probability: float | None, text: str, language: str) -> bool:
    return True


def _never_backchannel(text: str, language: str) -> bool:
    return False


@dataclass
class _Tentative:
    """Voice over Sandra that paused her: a cough, a backchannel or a real interruption."""

    turn: Turn  # the reply it paused
    stt_id: int  # the turn id its words get if it is confirmed
    onset_at: float
    audio: list[bytes]
    caller_turn: int
    voiced_ms: float
    seq: int = 0
    silent_ms: float = 0.0
    last_voiced_at: float = 0.0
    ended_at: float | None = None  # the sound ended; its transcript is awaited


class State(StrEnum):
    IDLE = "idle"
    LISTENING = "listening"
    USER_SPEAKING = "user_speaking"
    THINKING = "thinking"
    SPEAKING = "speaking"


@dataclass
class Turn:
    id: int
    kind: str  # "voice" | "text" | "greeting" | "apology"
    started_at: float
    caller_turn: int = 0  # the caller's turns counted from 1; 0 for Sandra's own
    utterance: list[bytes] = field(default_factory=list)
    transcribing: bool = False
    seq: int = 0  # the transcription in force (a restart after the caller went on is the next)
    speculating: bool = False  # a transcript of the utterance so far was asked for
    speculative: Transcript | None = None
    judged: bool = False  # the audio model's verdict on the utterance so far is in
    probability: float | None = None
    silent_ms: float = 0.0
    judged_ms: float = 0.0
    verdicts: list[str] = field(default_factory=list)
    transcript: str | None = None
    last_voiced_at: float | None = None
    eos_ms: float | None = None
    stt_ms: float | None = None
    replying: bool = False
    # A held reply prepared on the speculative transcript: the (history, language) it was
    # asked with; ``preemptive`` once it was released (it is the turn's reply).
    preempted: tuple[tuple[ChatMessage, ...], str] | None = None
    preemptive: bool = False
    first_audio_at: float | None = None
    done: bool = False


class TurnTaking:
    def __init__(
        self,
        segmenter: SpeechSegmenter,
        echo: EchoGuard,
        *,
        policy: TurnPolicy = TurnPolicy(detector="silence"),
        judge: Callable[[float | None, str, str], bool] = _always_complete,
        is_backchannel: Callable[[str, str], bool] = _never_backchannel,
        language: str = "en",
        no_speech_threshold: float = 0.6,
        wall_offset: float = 0.0,
    ) -> None:
        """``judge(probability, text, language)``: is an utterance finished, given the audio
        model's probability (None if it had none) and its transcript. ``is_backchannel(text,
        language)``: are these words only a backchannel ("uh-huh", "vale")?
        ``wall_offset``: wall-clock time minus the clock the times are given on (for the
        ``vad`` event's ``onset_ms``, which clients compare with their own clocks)."""
        self.segmenter = segmenter
        self.echo = echo
        self.policy = policy
        self.judge = judge
        self.is_backchannel = is_backchannel
        self.state = State.IDLE
        self.turn_id = 0
        self.caller_turns = 0
        self.language = language
        self.detect_language = False  # set the language from the first transcript
        self.history: list[ChatMessage] = []
        self.revision = 0  # moves on whenever what a resumed call needs (language, history) changes
        self.echo_suppressed = 0
        self._no_speech = no_speech_threshold
        self._wall_offset = wall_offset
        self._actions: list[Action] = []
        self._active: Turn | None = None  # the turn Sandra is working on (thinking/speaking)
        self._listening: Turn | None = None  # the voice turn receiving the caller's audio
        self._held: list[bytes] | None = None  # speech over Sandra, not yet a barge-in
        self._tentative: _Tentative | None = None
        self._late: _Tentative | None = None  # resumed before its words came: they may still cut her
        self._barge_in_onset: tuple[int, float] | None = None  # (turn, first voiced frame)
        self._unwinding: dict[int, Turn] = {}  # cancelled replies the shell has not reported gone
        self._deferred: list[Callable[[], None]] = []  # waits for the unwinding to finish
        self._turns: dict[int, Turn] = {}

    @classmethod
    def configured(
        cls, config: Config, evidence: Evidence | None, *, language: str = "en", wall_offset: float = 0.0
    ) -> TurnTaking:
        """The core for a call under ``config`` (``[vad]``, ``[turn]``), with the process's
        end-of-turn ``evidence`` (None, or one without an audio model: the silence rule)."""
        vad, turn = config.vad, config.turn
        smart = turn.detector == "smart" and evidence is not None and evidence.smart
        policy = TurnPolicy("smart" if smart else "silence", turn.min_silence_ms, turn.max_silence_ms,
                            turn.rejudge_ms, turn.confirm_ms, turn.resume_ms, turn.sound_end_ms, turn.preemptive)
        segmenter = SpeechSegmenter(start_ms=vad.start_ms, end_silence_ms=turn.max_silence_ms if smart else vad.end_silence_ms,
                                    pre_roll_ms=vad.pre_roll_ms, barge_in_ms=vad.barge_in_ms)
        return cls(
            segmenter, EchoGuard(return_db=vad.echo_return_db, margin_db=vad.echo_margin_db), policy=policy,
            judge=evidence.complete if evidence is not None else _always_complete,
            is_backchannel=evidence.is_backchannel if evidence is not None else _never_backchannel,
            language=language, no_speech_threshold=config.stt.no_speech_threshold, wall_offset=wall_offset,
        )

    def take(self) -> list[Action]:
        actions, self._actions = self._actions, []
        return actions

    # --- call lifecycle -------------------------------------------------------------

    def listen(self, at: float) -> None:
        """The call is live (audio arrived, or the client started it): start listening."""
        if self.state is State.IDLE:
            self._go(State.LISTENING)

    def call_start(
        self, language: str | None, at: float, message_id: object = None, *, greet: bool = True,
        extra: dict[str, object] | None = None,
    ) -> None:
        """``call:start``: the call's language (None or "auto": detect it), then the greeting
        (``greet`` False: a resumed conversation is not greeted again). ``extra``: more
        fields for ``call:started``."""
        if language in (None, "auto"):
            self.detect_language = self.detect_language or not self.history
        else:
            self.language = language
            self.detect_language = False
        self.revision += 1
        self.listen(at)
        self._send(CallStarted(self.language, id=message_id, extra=extra or None))  # type: ignore[arg-type]
        if greet:
            self._begin_reply_turn("greeting", at, script="greeting")

    def restore(self, language: str, history: list[ChatMessage], turn_id: int) -> None:
        """Continue a conversation (a resumed session) before the call starts."""
        self.language = language
        self.history[:] = history[-MAX_HISTORY:]
        self.turn_id = turn_id
        self.caller_turns = sum(1 for m in history if m.role == "user")
        self.revision += 1

    def end(self, at: float) -> None:
        """Hang-up: everything under way is cancelled."""
        if self._tentative is not None:
            self._do(CancelTranscription(self._tentative.stt_id))
            self._tentative = None
        self._drop_late()
        for turn in list(self._turns.values()):
            self._cancel(turn)
        self._listening = self._active = None
        self._held = None
        if self.state is not State.IDLE:
            self._go(State.IDLE)

    # --- the caller's audio ---------------------------------------------------------

    def frame(self, pcm: bytes, voiced: bool, rms: float, at: float) -> None:
        """One 20 ms frame of the caller's audio (16 kHz mono) with the VAD's verdict."""
        if self.state is State.IDLE:
            return
        echo = self.echo.is_echo(at, rms, voiced)  # every frame: the guard learns from silence too
        if voiced and echo:
            voiced = False
            self.echo_suppressed += 1
        for ev in self.segmenter.push(pcm, voiced, at):
            match ev:
                case SpeechStart():
                    self._speech_start(ev)
                case SpeechAudio():
                    self._speech_audio(ev.audio)
                case SustainedSpeech():
                    self._sustained(ev)
                case SpeechEnd():
                    self._speech_end(ev)
        if self._tentative is not None:
            self._tentative_frame(self._tentative, voiced, at)
        if self._listening is not None:
            self._listening_frame(self._listening, voiced, at)

    def _speech_audio(self, audio: bytes) -> None:
        turn, tentative = self._listening, self._tentative
        if turn is not None:
            turn.utterance.append(audio)
            if not turn.speculating:
                self._do(FeedTranscription(turn.id, audio))
        elif tentative is not None:
            tentative.audio.append(audio)
            if tentative.ended_at is None:
                self._do(FeedTranscription(tentative.stt_id, audio))
        elif self._held is not None:
            self._held.append(audio)

    def _speech_start(self, ev: SpeechStart) -> None:
        self._send(Vad(True, onset_ms=round((ev.onset_at + self._wall_offset) * 1000, 1)))
        tentative = self._tentative
        if tentative is not None:  # the interrupting sound goes on after a gap
            tentative.audio.append(ev.audio)
            tentative.silent_ms = 0.0
            self._restart_tentative(tentative)
        elif self.state is State.LISTENING:
            self._begin_voice_turn([ev.audio], ev.at)
        elif self.state in (State.THINKING, State.SPEAKING):
            self._held = [ev.audio]  # wait for barge_in_ms of speech before interrupting

    def _sustained(self, ev: SustainedSpeech) -> None:
        if self._held is None or self.state not in (State.THINKING, State.SPEAKING):
            return
        audio, self._held = self._held, None
        self.echo.forget_since(ev.onset_at)  # that was the caller, not Sandra's echo
        active = self._active
        if active is not None and active.first_audio_at is not None and self.policy.confirm_ms > 0:
            self._pause(active, audio, ev)  # she is audible: pause, then confirm or resume
            return
        previous = self._interrupt("voice", ev.at, onset_at=ev.onset_at)
        if previous is not None and previous.kind == "voice" and previous.first_audio_at is None:
            audio = previous.utterance + audio  # they were not done: one utterance
            if previous.transcript is not None and self.history and self.history[-1] == ChatMessage(
                "user", previous.transcript
            ):
                self.history.pop()  # remembered as a turn of its own: it is part of this one now
        self._begin_voice_turn(audio, ev.at, new_id=False)

    # --- barge-in in two steps ----------------------------------------------------------

    def _pause(self, turn: Turn, audio: list[bytes], ev: SustainedSpeech) -> None:
        self._drop_late()  # a new sound over her: that one is decided on its own
        self._do(PauseAudio())  # the next outbound frame is silence
        self._barge_in_onset = (turn.id, ev.onset_at)
        voiced_ms = float(self.segmenter.barge_in_ms - FRAME_MS)  # this frame is counted next
        tentative = _Tentative(turn, self.turn_id + 1, ev.onset_at, list(audio), self.caller_turns + 1, voiced_ms,
                               last_voiced_at=ev.at)
        self._tentative = tentative
        self._send(BargeIn(turn.id, "voice", tentative=True))
        self._do(StartTranscription(tentative.stt_id, tuple(audio), self._stt_language(), self.language,
                                    tentative.caller_turn, tentative.seq))

    def _tentative_frame(self, tentative: _Tentative, voiced: bool, at: float) -> None:
        if voiced:
            if tentative.ended_at is not None:  # it goes on after a short gap: all of it, again
                self._restart_tentative(tentative)
            tentative.voiced_ms += FRAME_MS
            tentative.silent_ms = 0.0
            tentative.last_voiced_at = at
            if tentative.voiced_ms >= self.policy.confirm_ms:
                self._confirm(at, None)  # too long for a cough or an "uh-huh"
            return
        tentative.silent_ms += FRAME_MS
        if tentative.ended_at is not None:
            if _ms(at - tentative.ended_at) >= self.policy.resume_ms:
                self._resume(at, still_listening=True)  # no words in time: a noise, probably
        elif tentative.silent_ms >= self.policy.sound_end_ms:
            tentative.ended_at = at  # the sound is over: what was it?
            self._do(FinishTranscription(tentative.stt_id))

    def _heard_late(self, late: _Tentative, transcript: Transcript, at: float) -> None:
        """The words of a sound she resumed over came after all: real words still cut her."""
        self._late = None
        turn = late.turn
        text = transcript.text.strip()
        still_speaking = self._active is turn and not turn.done and self.state in (State.THINKING, State.SPEAKING)
        if not still_speaking or not self._has_words(transcript) or self.is_backchannel(text, self.language):
            return
        self._tentative = late
        self._confirm(at, transcript)

    def _drop_late(self) -> None:
        late, self._late = self._late, None
        if late is not None:
            self._do(CancelTranscription(late.stt_id))

    def _restart_tentative(self, tentative: _Tentative) -> None:
        tentative.ended_at = None
        tentative.seq += 1
        self._do(CancelTranscription(tentative.stt_id))
        self._do(StartTranscription(tentative.stt_id, tuple(tentative.audio), self._stt_language(), self.language,
                                    tentative.caller_turn, tentative.seq))

    def _tentative_heard(self, tentative: _Tentative, transcript: Transcript, at: float) -> None:
        text = transcript.text.strip()
        if self._has_words(transcript) and not self.is_backchannel(text, self.language):
            self._confirm(at, transcript)
        else:
            self._resume(at)

    def _confirm(self, at: float, transcript: Transcript | None) -> None:
        """The interruption is real: cut the reply; the interrupting words are the next turn."""
        tentative, self._tentative = self._tentative, None
        assert tentative is not None
        turn = tentative.turn
        self._do(FlushAudio())
        if self._active is turn:
            self._active = None
        self._cancel(turn)
        self._send(BargeIn(turn.id, "voice", tentative=False))
        self.turn_id = tentative.stt_id
        self.caller_turns = max(self.caller_turns, tentative.caller_turn)
        new = self._new_turn("voice", tentative.onset_at, caller_turn=tentative.caller_turn)
        new.utterance = tentative.audio
        new.seq = tentative.seq
        new.transcribing = True
        new.last_voiced_at = tentative.last_voiced_at
        self._go(State.USER_SPEAKING)
        if not self.segmenter.speaking:  # the segmenter's end of speech came already: the turn is over
            new.eos_ms = (at - tentative.last_voiced_at) * 1000
            self._active = new
            self._go(State.THINKING)
            if transcript is not None:
                new.transcribing = False
                self._answer(new, transcript)
            else:
                self._do(FinishTranscription(new.id))
            return
        self._listening = new  # their turn goes on as any other: the end-of-turn rules end it
        if transcript is not None:  # what they said so far, as if transcribed at a pause
            new.speculative = transcript
            new.silent_ms = new.judged_ms = tentative.silent_ms
            if self.policy.detector == "smart":
                self._do(JudgeAudio(new.id, new.seq, tuple(new.utterance)))

    def _resume(self, at: float, *, still_listening: bool = False) -> None:
        """A false alarm: Sandra goes on from the start of the word she was cut in.

        ``still_listening``: resumed because its words did not come in time; they are still
        awaited, and real words cut her after all (:meth:`_heard_late`)."""
        tentative, self._tentative = self._tentative, None
        assert tentative is not None
        self._drop_late()
        if still_listening:
            self._late = tentative
        else:
            self._do(CancelTranscription(tentative.stt_id))
        if self.segmenter.speaking:
            self.segmenter.cut()
            self._send(Vad(False))
        turn = tentative.turn
        if self._active is turn and not turn.done:
            self._do(ResumeAudio(turn.id))
        self._barge_in_onset = None

    def _speech_end(self, ev: SpeechEnd) -> None:
        """The segmenter's end of speech: ``end_silence_ms`` (silence detector), or the
        ``max_silence_ms`` cap (smart detector: the turn ends whatever the verdict)."""
        self._send(Vad(False))
        self._held = None
        turn, self._listening = self._listening, None
        if turn is None:
            return
        turn.last_voiced_at = ev.last_voiced_at
        turn.eos_ms = (ev.at - ev.last_voiced_at) * 1000
        if turn.verdicts:
            turn.verdicts.append("max_silence")
        if turn.speculative is None and not turn.speculating:
            self._do(FinishTranscription(turn.id))
        if self.state is State.USER_SPEAKING and self.turn_id == turn.id:
            self._active = turn
            self._go(State.THINKING)
        if turn.speculative is not None:  # judged unfinished until now: answer what we have
            turn.transcribing = False
            self._answer(turn, turn.speculative)

    # --- end of turn (smart) -------------------------------------------------------------

    def _listening_frame(self, turn: Turn, voiced: bool, at: float) -> None:
        if voiced:
            turn.last_voiced_at = at
            turn.silent_ms = 0.0
            if turn.speculating or turn.speculative is not None or turn.judged:
                self._restart_transcription(turn)  # they went on: throw the speculation away
            return
        turn.silent_ms += FRAME_MS
        policy = self.policy
        if policy.detector != "smart":
            return
        if turn.silent_ms >= policy.min_silence_ms and not turn.speculating and turn.speculative is None:
            turn.speculating = True
            turn.judged_ms = turn.silent_ms
            self._do(FinishTranscription(turn.id))
            self._do(JudgeAudio(turn.id, turn.seq, tuple(turn.utterance)))
        elif policy.rejudge_ms and turn.judged and turn.silent_ms - turn.judged_ms >= policy.rejudge_ms:
            turn.judged = False  # judge again: the longer silence is evidence too
            turn.judged_ms = turn.silent_ms
            self._do(JudgeAudio(turn.id, turn.seq, tuple(turn.utterance)))

    def _restart_transcription(self, turn: Turn) -> None:
        turn.seq += 1
        turn.speculating = False
        turn.speculative = None
        self._drop_preempted(turn)
        turn.judged = False
        turn.probability = None
        self._do(CancelTranscription(turn.id))
        self._do(StartTranscription(turn.id, tuple(turn.utterance), self._stt_language(), self.language,
                                    turn.caller_turn, turn.seq))

    def turn_judged(self, turn_id: int, seq: int, probability: float | None, at: float) -> None:
        """The end-of-turn audio model's probability that the utterance so far is finished
        (None: it could not tell)."""
        turn = self._listening
        if turn is None or turn.id != turn_id or turn.seq != seq:
            return
        turn.judged = True
        turn.probability = probability
        self._decide(turn, at)

    def _decide(self, turn: Turn, at: float) -> bool:
        """End the turn on the speculative transcript if both verdicts say it is finished."""
        if turn.speculative is None or not turn.judged:
            return False  # both verdicts first
        text = turn.speculative.text.strip()
        complete = not self._has_words(turn.speculative) or self.judge(turn.probability, text, self.language)
        turn.verdicts.append("complete" if complete else "incomplete")
        if not complete:
            return False
        self.segmenter.cut()
        self._send(Vad(False))
        self._listening = None
        if turn.last_voiced_at is not None:
            turn.eos_ms = (at - turn.last_voiced_at) * 1000
        if self.state is State.USER_SPEAKING and self.turn_id == turn.id:
            self._active = turn
            self._go(State.THINKING)
        turn.transcribing = False
        self._answer(turn, turn.speculative)
        return True

    def _preempt(self, turn: Turn, transcript: Transcript) -> None:
        """Prepare the reply to the speculative ``transcript`` while the turn may still go
        on: it is asked for now and held back (:meth:`_start_reply` releases or drops it)."""
        if not self.policy.preemptive or turn.preempted is not None or not self._has_words(transcript):
            return
        if self._unwinding or self._active is not None:
            return  # another reply is under way or unwinding: the history is not settled
        language = self._language_of(transcript)
        history = (*self.history, ChatMessage("user", transcript.text.strip()))[-MAX_HISTORY:]
        turn.preempted = (history, language)
        self._do(StartReply(turn.id, turn.kind, None, history, language, turn.caller_turn, held=True))

    def _drop_preempted(self, turn: Turn) -> None:
        if turn.preempted is not None:
            turn.preempted = None
            self._do(DropReply(turn.id))

    def _detected(self, transcript: Transcript) -> str | None:
        """The language ``transcript`` sets for the call, if the call is still detecting it."""
        if self.detect_language and transcript.language in ("en", "es"):
            return transcript.language
        return None

    def _language_of(self, transcript: Transcript) -> str:
        """The call's language once ``transcript`` is heard."""
        return self._detected(transcript) or self.language

    def _begin_voice_turn(self, audio: list[bytes], at: float, *, new_id: bool = True) -> None:
        """The caller's speech is a new turn (``new_id``: it starts one; else the barge-in
        already moved ``turn_id`` on)."""
        if new_id:
            self.turn_id += 1
            self._go(State.USER_SPEAKING)
        self.caller_turns += 1
        turn = self._new_turn("voice", at, caller_turn=self.caller_turns)
        turn.utterance = list(audio)
        turn.transcribing = True
        self._listening = turn
        self._do(StartTranscription(turn.id, tuple(audio), self._stt_language(), self.language, turn.caller_turn))

    def _stt_language(self) -> str | None:
        return None if self.detect_language else self.language

    # --- transcription results -------------------------------------------------------

    def partial(self, turn_id: int, text: str) -> None:
        turn = self._turns.get(turn_id)
        if text and turn is not None and not turn.done:
            self._send(TranscriptEvent(turn_id, text, False))

    def transcribed(self, turn_id: int, transcript: Transcript, stt_ms: float, at: float, seq: int = 0) -> None:
        tentative = self._tentative
        if tentative is not None and turn_id == tentative.stt_id:
            if seq == tentative.seq and tentative.ended_at is not None:
                self._tentative_heard(tentative, transcript, at)
            return
        late = self._late
        if late is not None and turn_id == late.stt_id:
            if seq == late.seq:
                self._heard_late(late, transcript, at)
            return
        turn = self._turns.get(turn_id)
        if turn is None or turn.done or not turn.transcribing or seq != turn.seq:
            return
        turn.stt_ms = stt_ms
        if turn is self._listening:  # smart end of turn: the utterance so far
            turn.speculating = False
            turn.speculative = transcript
            if not self._decide(turn, at):
                self._preempt(turn, transcript)
            return
        turn.transcribing = False
        self._answer(turn, transcript)

    def _has_words(self, transcript: Transcript) -> bool:
        no_speech = transcript.no_speech_prob is not None and transcript.no_speech_prob > self._no_speech
        return bool(transcript.text.strip()) and not no_speech

    def _answer(self, turn: Turn, transcript: Transcript) -> None:
        """The caller's turn is over with ``transcript``: answer it, or drop it if wordless."""
        text = transcript.text.strip()
        if not self._has_words(transcript):
            self._forget(turn)
            if self._active is turn or self._listening is turn:
                self._active = self._listening = None
                if self.state in (State.USER_SPEAKING, State.THINKING) and self.turn_id == turn.id:
                    self._go(State.LISTENING)
            return
        if (detected := self._detected(transcript)) is not None:
            self.language = detected
            self.detect_language = False
        turn.transcript = text
        self._send(TranscriptEvent(turn.id, text, True))
        self._answer_after_unwinding(turn, text)

    def _answer_after_unwinding(self, turn: Turn, text: str) -> None:
        """Remember the caller's ``text`` and ask for the reply, once a cut reply is gone."""

        def answer() -> None:
            if turn.done:
                return
            self._remember(ChatMessage("user", text))
            self._start_reply(turn, None)

        self._after_unwinding(answer)

    def transcription_failed(self, turn_id: int, code: str, message: str, at: float, seq: int = 0) -> None:
        """STT failed: say sorry. If the caller was still speaking, their turn ends here."""
        tentative = self._tentative
        if tentative is not None and turn_id == tentative.stt_id:
            if seq == tentative.seq:
                self._resume(at)  # cannot tell what it was: carry on
            return
        turn = self._turns.get(turn_id)
        if turn is None or turn.done:
            return
        if seq != turn.seq:
            return
        turn.transcribing = False
        self._send(Error(code, message))
        if self._listening is turn:
            self._listening = None
            if self.state is State.USER_SPEAKING and self.turn_id == turn.id:
                self._active = turn
                self._go(State.THINKING)
        if self._active is turn:
            self._after_unwinding(lambda: None if turn.done else self._start_reply(turn, "apology"))
        else:
            self._forget(turn)

    # --- Sandra's audio ---------------------------------------------------------------

    @property
    def wants_silent_frames(self) -> bool:
        """Whether a silent outbound frame means anything now (a barge-in's latency is timed
        by the first one, a resume deadline may pass): else the shell need not report it."""
        tentative = self._tentative
        return self._barge_in_onset is not None or (tentative is not None and tentative.ended_at is not None)

    def outbound_frame(self, at: float, rms: float, reply_id: int | None) -> None:
        """A frame left the outbound track: ``reply_id`` is the reply it was audio of,
        None for silence."""
        self.echo.played(at, rms)
        if reply_id is not None:
            turn = self._active
            if turn is not None and turn.id == reply_id and turn.replying and not turn.done:
                if turn.first_audio_at is None:
                    turn.first_audio_at = at
                if self.state is State.THINKING and self.turn_id == turn.id:
                    self._go(State.SPEAKING)
        elif self._barge_in_onset is not None:
            turn_id, onset = self._barge_in_onset
            self._barge_in_onset = None
            self._send(TurnMetrics(turn_id, extra={"barge_in_ms": round((at - onset) * 1000, 1)}))
        tentative = self._tentative
        if tentative is not None and tentative.ended_at is not None:
            if _ms(at - tentative.ended_at) >= self.policy.resume_ms:
                self._resume(at, still_listening=True)

    # --- reply results ----------------------------------------------------------------

    def reply_finished(self, turn_id: int, text: str, timings: ReplyTimings, at: float) -> None:
        """The reply was spoken to its end (its audio has left)."""
        turn = self._turns.get(turn_id)
        if turn is None or turn.done or not turn.replying:
            return
        text = text.strip()
        self._forget(turn)
        self._remember(ChatMessage("assistant", text))
        self._send(ResponseDone(turn.id, text, False))
        self._send_metrics(turn, timings, interrupted=False)
        if self._active is turn:
            self._active = None
            if self.state in (State.THINKING, State.SPEAKING) and self.turn_id == turn.id:
                self._go(State.LISTENING)

    def reply_failed(self, turn_id: int, code: str, message: str, at: float) -> None:
        """The reply failed (a provider error or a defect): the same turn apologises."""
        turn = self._turns.get(turn_id)
        if turn is None or turn.done:
            return
        if not turn.replying:  # a held reply failed before the turn ended: answer afresh then
            self._drop_preempted(turn)
            return
        self._send(Error(code, message))
        self._start_reply(turn, "apology")

    def reply_cancelled(self, turn_id: int, heard: str, timings: ReplyTimings, at: float) -> None:
        """A cancelled reply is gone; ``heard`` is what the caller heard of it."""
        turn = self._unwinding.pop(turn_id, None)
        if turn is None:
            return
        self._remember(ChatMessage("assistant", heard, interrupted=True))
        self._send(ResponseDone(turn.id, heard, True))
        self._send_metrics(turn, timings, interrupted=True)
        if not self._unwinding:
            deferred, self._deferred = self._deferred, []
            for work in deferred:
                work()

    # --- client messages --------------------------------------------------------------

    def typed(self, text: str, at: float, message_id: object = None) -> None:
        """A typed ``message``: a turn of its own, answered in writing and out loud."""
        self.listen(at)
        self.caller_turns += 1
        turn = self._begin_reply_turn("text", at, caller_turn=self.caller_turns, ack=message_id, announce=True)
        self._answer_after_unwinding(turn, text)

    def client_barge_in(self, at: float, message_id: object = None) -> None:
        """The client's ``barge-in`` (the interrupt button): stop Sandra now."""
        turn = self._interrupt("client", at)
        turn_id = turn.id if turn is not None else self.turn_id
        self._send(BargeInAck(turn_id, turn is not None, id=message_id))  # type: ignore[arg-type]

    # --- recovery -----------------------------------------------------------------------

    def recover(self, at: float) -> None:
        """Our own code failed somewhere: drop every turn and apologise, listening again.

        The shell calls this after it has cancelled (and awaited) every task of the call."""
        for turn in list(self._turns.values()):
            turn.done = True
        self._turns.clear()
        self._unwinding.clear()
        self._deferred.clear()
        self._listening = self._active = None
        self._held = None
        self._tentative = None
        self._late = None
        self._barge_in_onset = None
        self.segmenter.cut()
        if self.state is State.IDLE:
            return
        self.state = State.LISTENING  # nothing is under way any more
        self._send(Error("internal_error", "Sandra had an internal error; she is listening again"))
        self._begin_reply_turn("apology", at, script="apology")

    # --- internals ------------------------------------------------------------------------

    def _begin_reply_turn(
        self, kind: str, at: float, *, script: str | None = None, caller_turn: int = 0,
        ack: object = None, announce: bool = False,
    ) -> Turn:
        """A turn with no speech (typed message, greeting, apology): interrupts whatever is
        under way (a reply is cut, a voice turn still being spoken is dropped)."""
        if self._interrupt("client", at) is None and self._listening is not None:
            self._cancel(self._listening)  # still speaking when they typed: drop it
            self._listening = None
        self._held = None
        self.turn_id += 1
        turn = self._new_turn(kind, at, caller_turn=caller_turn)
        self._active = turn
        if announce:
            self._send(MessageAck(turn.id, id=ack))  # type: ignore[arg-type]
        self._go(State.THINKING)
        if script is not None:
            self._after_unwinding(lambda: None if turn.done else self._start_reply(turn, script))
        return turn

    def _interrupt(self, source: str, at: float, onset_at: float | None = None) -> Turn | None:
        """Cut Sandra off now. Returns the interrupted turn, or None if she was not answering."""
        if self.state not in (State.THINKING, State.SPEAKING):
            return None
        self._drop_late()
        tentative, self._tentative = self._tentative, None
        if tentative is not None:  # a paused reply: a hard stop now, never resumed
            self._do(CancelTranscription(tentative.stt_id))
            self.segmenter.cut()
        turn = self._active
        interrupted_id = self.turn_id
        self._do(FlushAudio())  # the next outbound frame is silence
        self._barge_in_onset = (interrupted_id, onset_at if onset_at is not None else at)
        self._active = None
        if turn is not None:
            self._cancel(turn)
        self._send(BargeIn(interrupted_id, source, tentative=False))
        if source == "voice":
            self.turn_id += 1
            self._go(State.USER_SPEAKING)
        else:
            self._go(State.LISTENING)
        return turn

    def _cancel(self, turn: Turn) -> None:
        if turn.done:
            return
        if turn.transcribing:
            turn.transcribing = False
            self._do(CancelTranscription(turn.id))
        if turn.replying:
            self._unwinding[turn.id] = turn
            self._do(CancelReply(turn.id))
        self._forget(turn)

    def _start_reply(self, turn: Turn, script: str | None) -> None:
        turn.replying = True
        held, turn.preempted = turn.preempted, None
        if held is not None:
            if script is None and held == (tuple(self.history), self.language):
                turn.preemptive = True  # prepared on the very transcript the turn ended with
                self._do(ReleaseReply(turn.id))
                return
            self._do(DropReply(turn.id))
        self._do(StartReply(turn.id, turn.kind, script, tuple(self.history), self.language, turn.caller_turn))

    def _after_unwinding(self, work: Callable[[], None]) -> None:
        if self._unwinding:
            self._deferred.append(work)
        else:
            work()

    def _new_turn(self, kind: str, at: float, *, caller_turn: int = 0) -> Turn:
        turn = Turn(self.turn_id, kind, at, caller_turn=caller_turn)
        self._turns[turn.id] = turn
        return turn

    def _forget(self, turn: Turn) -> None:
        self._drop_preempted(turn)
        turn.done = True
        self._turns.pop(turn.id, None)

    def _remember(self, message: ChatMessage) -> None:
        if message.text:
            self.history.append(message)
            del self.history[:-MAX_HISTORY]
            self.revision += 1

    def _send_metrics(self, turn: Turn, timings: ReplyTimings, *, interrupted: bool) -> None:
        values: dict[str, float | None] = {
            "eos_ms": turn.eos_ms,
            "stt_ms": turn.stt_ms,
            "llm_ttft_ms": timings.llm_ttft_ms,
            "tts_ttfb_ms": timings.tts_ttfb_ms,
        }
        if turn.probability is not None:
            values["eot_probability"] = turn.probability
        if turn.first_audio_at is not None and turn.last_voiced_at is not None and turn.kind == "voice":
            values["voice_to_voice_ms"] = (turn.first_audio_at - turn.last_voiced_at) * 1000
        elif turn.first_audio_at is not None and turn.kind == "text":
            values["text_to_voice_ms"] = (turn.first_audio_at - turn.started_at) * 1000
        shown: dict[str, object] = {k: round(v, 3 if k == "eot_probability" else 1) for k, v in values.items()
                                    if v is not None}
        if turn.verdicts:
            shown["eot_verdicts"] = list(turn.verdicts)
        if turn.preemptive:
            shown["preemptive"] = True
        self._send(TurnMetrics(turn.id, kind=turn.kind, interrupted=interrupted, extra=shown))  # type: ignore[arg-type]

    def _go(self, state: State) -> None:
        self.state = state
        self._emit_state()

    def _emit_state(self) -> None:
        self._send(StateChanged(self.state.value, self.turn_id))

    def _send(self, event: Event) -> None:
        self._actions.append(Send(event))

    def _do(self, action: Action) -> None:
        self._actions.append(action)
