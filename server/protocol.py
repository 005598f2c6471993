"""The ``control`` datachannel protocol: JSON objects with a ``type``, one per message.

Pure codec, no I/O. :func:`parse` turns a client message into one of the frozen
dataclasses below or raises :class:`ProtocolError` with a sentence the client sees;
:func:`encode` turns a server event into compact JSON. Any client message may carry an
``id`` (string or integer); the server's direct answer to it (``auth:ok``,
``call:started``, ``barge-in:ack``, ``pong``, ``error``) echoes it, so a client can match
requests to acknowledgements.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, ClassVar

from .errors import ProtocolError

MAX_MESSAGE_BYTES = 4096
MAX_TEXT_CHARS = 1000
LANGUAGES = ("en", "es")

MessageId = str | int | None


# --- client -> server -----------------------------------------------------------------


@dataclass(frozen=True)
class Auth:
    type: ClassVar[str] = "auth"
    token: str | None = None
    id: MessageId = None


@dataclass(frozen=True)
class CallStart:
    type: ClassVar[str] = "call:start"
    language: str | None = None
    id: MessageId = None


@dataclass(frozen=True)
class Message:
    type: ClassVar[str] = "message"
    text: str = ""
    id: MessageId = None


@dataclass(frozen=True)
class BargeIn:
    type: ClassVar[str] = "barge-in"
    id: MessageId = None


@dataclass(frozen=True)
class CallEnd:
    type: ClassVar[str] = "call:end"
    id: MessageId = None


@dataclass(frozen=True)
class Ping:
    type: ClassVar[str] = "ping"
    t: float | None = None
    id: MessageId = None


ClientMessage = Auth | CallStart | Message | BargeIn | CallEnd | Ping

_CLIENT_TYPES: dict[str, type] = {cls.type: cls for cls in (Auth, CallStart, Message, BargeIn, CallEnd, Ping)}


def _field(obj: dict[str, Any], name: str, kinds: tuple[type, ...], what: str, required: bool = False) -> Any:
    if name not in obj or obj[name] is None:
        if required:
            raise ProtocolError(f"'{obj['type']}' needs a '{name}' field ({what})", "bad_field")
        return None
    value = obj[name]
    if isinstance(value, bool) or not isinstance(value, kinds):
        raise ProtocolError(f"'{obj['type']}'.{name} must be {what}", "bad_field")
    return value


def parse(data: str | bytes) -> ClientMessage:
    """Decode one client message. Raises :class:`ProtocolError` on anything unacceptable."""
    if len(data) > MAX_MESSAGE_BYTES:
        raise ProtocolError(f"message of {len(data)} bytes is over the {MAX_MESSAGE_BYTES}-byte limit", "too_large")
    if isinstance(data, bytes):
        try:
            data = data.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise ProtocolError("message is not UTF-8 text", "bad_json") from exc
    try:
        obj = json.loads(data)
    except (json.JSONDecodeError, RecursionError) as exc:
        raise ProtocolError("message is not valid JSON", "bad_json") from exc
    if not isinstance(obj, dict):
        raise ProtocolError("message must be a JSON object", "bad_json")
    readable_id = _readable_id(obj.get("id"))
    kind = obj.get("type")
    if not isinstance(kind, str):
        raise ProtocolError("message needs a string 'type'", "bad_type", readable_id)
    cls = _CLIENT_TYPES.get(kind)
    if cls is None:
        raise ProtocolError(f"unknown message type '{kind[:40]}'", "unknown_type", readable_id)
    mid = _field(obj, "id", (str, int), "a string or an integer")
    if isinstance(mid, str) and len(mid) > 64:
        raise ProtocolError("'id' is longer than 64 characters", "bad_field")
    try:
        return _parse_fields(cls, obj, mid)
    except ProtocolError as exc:
        exc.message_id = mid
        raise


def _readable_id(value: Any) -> MessageId:
    """The message's ``id`` if it is a valid one (to echo in an error), else None."""
    if isinstance(value, bool) or not isinstance(value, (str, int)):
        return None
    return value if not isinstance(value, str) or len(value) <= 64 else None


def _parse_fields(cls: type, obj: dict[str, Any], mid: MessageId) -> ClientMessage:

    if cls is Auth:
        return Auth(token=_field(obj, "token", (str,), "a string"), id=mid)
    if cls is CallStart:
        language = _field(obj, "language", (str,), "a string")
        if language is not None:
            language = language.lower().split("-")[0]
            if language == "auto":  # HOOK(spanish): same as no language: detected from the first utterance
                language = None
            elif language not in LANGUAGES:
                raise ProtocolError(f"language must be one of {', '.join(LANGUAGES)}", "bad_field")
        return CallStart(language=language, id=mid)
    if cls is Message:
        text = _field(obj, "text", (str,), "a string", required=True).strip()
        if not text:
            raise ProtocolError("'message'.text is empty", "bad_field")
        if len(text) > MAX_TEXT_CHARS:
            raise ProtocolError(f"'message'.text is over {MAX_TEXT_CHARS} characters", "too_large")
        return Message(text=text, id=mid)
    if cls is Ping:
        t = _field(obj, "t", (int, float), "a number")
        return Ping(t=t, id=mid)
    return cls(id=mid)


# --- server -> client -----------------------------------------------------------------


def event(type: str, **fields: Any) -> dict[str, Any]:
    """A server event; ``None`` fields are left out."""
    return {"type": type, **{k: v for k, v in fields.items() if v is not None}}


def encode(ev: dict[str, Any]) -> str:
    return json.dumps(ev, separators=(",", ":"), ensure_ascii=False)
