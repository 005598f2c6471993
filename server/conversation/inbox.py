"""What the call's task is handed: one small frozen item per thing that happened.

aiortc's handlers (and our media and provider tasks) put these on the call's bounded
inbox; only the call's own task takes them (:meth:`server.conversation.call.Call.post`).
"""

from __future__ import annotations

from dataclasses import dataclass

from aiortc import RTCDataChannel
from aiortc.mediastreams import MediaStreamTrack

from .jobs import Result

INBOX_SIZE = 1024  # items; about 10 s of audio frames both ways


@dataclass(frozen=True)
class TrackArrived:
    track: MediaStreamTrack


@dataclass(frozen=True)
class ChannelOpened:
    channel: RTCDataChannel


@dataclass(frozen=True)
class Message:
    data: str | bytes
    at: float


@dataclass(frozen=True)
class ConnectionState:
    state: str


@dataclass(frozen=True)
class InFrame:
    """A 20 ms frame of the caller's audio, 16 kHz mono, with the VAD's verdict."""

    pcm: bytes
    voiced: bool
    rms: float
    at: float


@dataclass(frozen=True)
class OutFrame:
    """A frame left the outbound track: ``reply_id`` the reply it was audio of, None for silence."""

    at: float
    rms: float
    reply_id: int | None


Item = TrackArrived | ChannelOpened | Message | ConnectionState | InFrame | OutFrame | Result
