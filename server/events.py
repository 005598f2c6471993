"""Server -> client events on the ``control`` datachannel: one frozen dataclass each.

This module is the only place a server event is built. :meth:`Event.to_json` gives the
wire form: ``{"type": ..., <fields>}`` with ``None`` fields left out, so an event that
answers a client message carries that message's ``id`` only when it had one. The names
and fields are a public protocol (README "Datachannel protocol"): outside clients rely
on every one of them.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field, fields
from typing import Any, ClassVar

MessageId = str | int | None


@dataclass(frozen=True)
class Event:
    type: ClassVar[str] = ""

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"type": self.type}
        for f in fields(self):
            value = getattr(self, f.name)
            if value is None:
                continue
            if f.name == "extra":
                out.update(value)
            else:
                out[f.name] = value
        return out

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), separators=(",", ":"), ensure_ascii=False)


# --- answers to client messages ---------------------------------------------------------


@dataclass(frozen=True)
class AuthOk(Event):
    type: ClassVar[str] = "auth:ok"
    session_id: str
    id: MessageId = None


@dataclass(frozen=True)
class CallStarted(Event):
    type: ClassVar[str] = "call:started"
    language: str
    id: MessageId = None
    # Extra fields other parts add (e.g. a resume token), flattened into the event.
    extra: dict[str, Any] | None = None


@dataclass(frozen=True)
class MessageAck(Event):
    """A typed ``message`` was taken: ``turn_id`` is the turn that answers it."""

    type: ClassVar[str] = "message:ack"
    turn_id: int
    id: MessageId = None


@dataclass(frozen=True)
class BargeInAck(Event):
    type: ClassVar[str] = "barge-in:ack"
    turn_id: int
    interrupted: bool
    id: MessageId = None


@dataclass(frozen=True)
class Pong(Event):
    type: ClassVar[str] = "pong"
    t: float | None
    server_time: float
    id: MessageId = None


@dataclass(frozen=True)
class Error(Event):
    type: ClassVar[str] = "error"
    code: str
    message: str
    id: MessageId = None


# --- the conversation -------------------------------------------------------------------


@dataclass(frozen=True)
class StateChanged(Event):
    type: ClassVar[str] = "state"
    state: str
    turn_id: int


@dataclass(frozen=True)
class Vad(Event):
    type: ClassVar[str] = "vad"
    speaking: bool
    # Wall-clock time (ms) the first voiced frame arrived, on speech start.
    onset_ms: float | None = None


@dataclass(frozen=True)
class TranscriptEvent(Event):
    type: ClassVar[str] = "transcript"
    turn_id: int
    text: str
    final: bool


@dataclass(frozen=True)
class ResponseDelta(Event):
    type: ClassVar[str] = "response:delta"
    turn_id: int
    text: str


@dataclass(frozen=True)
class ResponseDone(Event):
    type: ClassVar[str] = "response:done"
    turn_id: int
    text: str
    interrupted: bool


@dataclass(frozen=True)
class VisemeBatch(Event):
    type: ClassVar[str] = "viseme"
    turn_id: int
    playhead_ms: float
    visemes: list[dict[str, float]]


@dataclass(frozen=True)
class BargeIn(Event):
    """Sandra was interrupted. ``tentative``: voice over her paused her (she may resume);
    false: the interruption is confirmed (or was the client's button) and her reply is cut."""

    type: ClassVar[str] = "barge-in"
    turn_id: int
    source: str  # "voice" | "client"
    tentative: bool = False


@dataclass(frozen=True)
class Resume(Event):
    """A tentative barge-in was a false alarm (a cough, a noise, a backchannel): Sandra goes
    on with the reply, from ``playhead_ms`` (its position, the start of the word she was
    cut in; the same timeline as the ``viseme`` events' ``t_ms``)."""

    type: ClassVar[str] = "resume"
    turn_id: int
    playhead_ms: float


@dataclass(frozen=True)
class TurnMetrics(Event):
    """A turn's latencies (``values``: names from :data:`server.metrics.LATENCIES`)."""

    type: ClassVar[str] = "metrics"
    turn_id: int
    kind: str | None = None
    interrupted: bool | None = None
    extra: dict[str, float] = field(default_factory=dict)

    @property
    def values(self) -> dict[str, float]:
        return dict(self.extra)


@dataclass(frozen=True)
class ToolUsed(Event):
    type: ClassVar[str] = "tool"
    name: str
    input: dict[str, Any]


@dataclass(frozen=True)
class CallEnded(Event):
    type: ClassVar[str] = "call:ended"
    reason: str
