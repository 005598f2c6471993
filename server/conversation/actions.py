"""What the turn-taking core asks its shell to do: small frozen dataclasses.

:class:`~server.conversation.turns.TurnTaking` returns these; :class:`~server.conversation.call.Call`
performs them in order. ``turn_id`` always names the turn the action belongs to.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from ..events import Event
from ..providers.base import ChatMessage


@dataclass(frozen=True)
class Send:
    """Send an event to the client."""

    event: Event


@dataclass(frozen=True)
class StartTranscription:
    """Open an STT stream for a voice turn and feed it ``audio`` (16 kHz mono chunks)."""

    turn_id: int
    audio: tuple[bytes, ...]
    language: str | None  # None: detect it
    fallback_language: str  # for recognisers that cannot detect
    caller_turn: int
    seq: int = 0  # a turn re-transcribed (the caller went on after a pause) gets the next seq


@dataclass(frozen=True)
class FeedTranscription:
    turn_id: int
    audio: bytes


@dataclass(frozen=True)
class FinishTranscription:
    """The caller's turn has ended: get the transcript (the core is told ``transcribed``)."""

    turn_id: int


@dataclass(frozen=True)
class CancelTranscription:
    turn_id: int


@dataclass(frozen=True)
class StartReply:
    """Speak a reply for ``turn_id``: from the LLM over ``history`` (``script`` None), or the
    provider's ``"greeting"`` / ``"apology"`` (an apology continues the turn's reply)."""

    turn_id: int
    kind: str
    script: str | None
    history: Sequence[ChatMessage]
    language: str
    caller_turn: int
    # Preemptive: prepared on a speculative transcript before the turn is over. Its text,
    # events and audio are produced but held back until ReleaseReply (or dropped).
    held: bool = False


@dataclass(frozen=True)
class ReleaseReply:
    """The turn ended with the transcript a held reply was prepared on: let it be heard."""

    turn_id: int


@dataclass(frozen=True)
class DropReply:
    """Throw a held reply away unheard: cancel its task; nothing is reported."""

    turn_id: int


@dataclass(frozen=True)
class CancelReply:
    """Cancel the reply's task, await it, and report ``reply_cancelled`` with what was heard."""

    turn_id: int


@dataclass(frozen=True)
class FlushAudio:
    """Drop the queued outbound audio now: the next frame is silence."""


@dataclass(frozen=True)
class PauseAudio:
    """Stop playing now, keeping the queued audio (a tentative barge-in)."""


@dataclass(frozen=True)
class ResumeAudio:
    """Play again from the start of the word she was cut in, and send ``resume``."""

    turn_id: int


@dataclass(frozen=True)
class JudgeAudio:
    """Ask the end-of-turn audio model whether the utterance so far sounds finished; the
    answer comes back as ``turn_judged(turn_id, seq, probability)``."""

    turn_id: int
    seq: int
    audio: tuple[bytes, ...]


@dataclass(frozen=True)
class ReplyTimings:
    """A reply's provider latencies, measured by the shell."""

    llm_ttft_ms: float | None = None
    tts_ttfb_ms: float | None = None


Action = (
    Send | StartTranscription | FeedTranscription | FinishTranscription | CancelTranscription
    | StartReply | ReleaseReply | DropReply | CancelReply | FlushAudio | PauseAudio | ResumeAudio | JudgeAudio
)
