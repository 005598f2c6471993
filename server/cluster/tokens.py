"""Resume tokens: ``<payload>.<signature>``, opaque to the client. Pure: time passed in.

The payload is ``session_id`` and the expiry (unix ms), base64url; the signature is
HMAC-SHA256 over it with the cluster's secret, so any worker holding the same secret can
check a token another worker issued. A token proves only that the bearer was given that
session; whether the conversation still exists is the store's to say.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from dataclasses import dataclass

from .errors import ResumeError

MAX_TOKEN_CHARS = 512


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


@dataclass(frozen=True)
class Resume:
    session_id: str
    expires_ms: int


class ResumeTokens:
    def __init__(self, secret: bytes, ttl_s: float) -> None:
        if len(secret) < 16:
            raise ValueError("a resume secret needs at least 16 bytes")
        self._secret = secret
        self.ttl_s = ttl_s

    def _sign(self, payload: str) -> str:
        return _b64(hmac.new(self._secret, payload.encode(), hashlib.sha256).digest())

    def issue(self, session_id: str, *, now: float, expires_ms: int | None = None) -> str:
        """A token for ``session_id``, valid ``ttl_s`` from ``now`` (unix seconds) unless
        ``expires_ms`` is given (a resumed session keeps its first expiry)."""
        expires = expires_ms if expires_ms is not None else int((now + self.ttl_s) * 1000)
        payload = _b64(f"{session_id}.{expires}".encode())
        return f"{payload}.{self._sign(payload)}"

    def verify(self, token: str, *, now: float) -> Resume:
        """The session a token resumes. Raises :class:`ResumeError` with the reason."""
        if not isinstance(token, str) or not token or len(token) > MAX_TOKEN_CHARS:
            raise ResumeError("the resume token is not a token")
        payload, _, signature = token.partition(".")
        if not signature or not hmac.compare_digest(signature, self._sign(payload)):
            raise ResumeError("the resume token's signature does not match")
        try:
            session_id, _, expires = _unb64(payload).decode().rpartition(".")
            expires_ms = int(expires)
        except (ValueError, UnicodeDecodeError) as exc:
            raise ResumeError("the resume token is malformed") from exc
        if not session_id:
            raise ResumeError("the resume token is malformed")
        if now * 1000 >= expires_ms:
            raise ResumeError("the resume token has expired")
        return Resume(session_id, expires_ms)
