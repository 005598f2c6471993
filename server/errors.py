"""Sandra's exceptions.

The hierarchy::

    SandraError
    ├── ConfigError          bad or missing configuration (names the key, never a secret)
    ├── ProtocolError        a datachannel message that cannot be accepted
    ├── OfferError           a WebRTC offer that cannot be answered (HTTP 400)
    ├── CapacityError        no room for another call (HTTP 503)
    │   └── TooManyCalls     a guest link already has its max_calls calls (HTTP 429; server/sessions.py)
    ├── TokenError           a guest link refused (HTTP 401, with its code; server/security/guest.py)
    └── ProviderError        an STT, LLM or TTS provider failed
        ├── retryable: bool  whether trying again may help (429, 529, dropped socket)
        └── role: str        "stt", "llm" or "tts": which part of the turn it was serving
"""

from __future__ import annotations


class SandraError(Exception):
    """Root of every error Sandra raises on purpose."""


class ConfigError(SandraError):
    pass


class ProtocolError(SandraError):
    """A datachannel message was rejected. ``code`` goes to the client, with the
    message's ``id`` when it could be read, so a request still gets its answer."""

    def __init__(self, message: str, code: str = "bad_message", message_id: str | int | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.message_id = message_id


class OfferError(SandraError):
    def __init__(self, message: str, code: str = "bad_offer") -> None:
        super().__init__(message)
        self.code = code


class CapacityError(SandraError):
    pass


class ProviderError(SandraError):
    """A provider failed. ``provider`` is its name (the vendor), ``retryable`` says if trying
    again may help, ``role`` which part of the turn it served (set where that is known)."""

    def __init__(self, provider: str, message: str, *, retryable: bool = False, role: str | None = None) -> None:
        super().__init__(f"{provider}: {message}")
        self.provider = provider
        self.retryable = retryable
        self.role = role
