"""Short-lived TURN credentials in the TURN REST scheme (coturn ``use-auth-secret``).

username ``"<unix expiry>:<id>"``, credential ``base64(HMAC-SHA1(secret, username))``: the
TURN server recomputes the HMAC with the same static secret and refuses the name once its
expiry has passed. Pure: the time is passed in.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True, repr=False)
class TurnCredentials:
    urls: tuple[str, ...]
    username: str
    credential: str
    expires_at: int

    def __repr__(self) -> str:
        return f"TurnCredentials(urls={self.urls}, username={self.username!r}, credential=...)"

    def to_json(self) -> dict[str, Any]:
        """One entry of RTCConfiguration.iceServers."""
        return {"urls": list(self.urls), "username": self.username, "credential": self.credential}


def credential(secret: str, username: str) -> str:
    digest = hmac.new(secret.encode(), username.encode(), hashlib.sha1).digest()
    return base64.b64encode(digest).decode()


def credentials(secret: str, urls: tuple[str, ...], *, ident: str, ttl_s: float, now: float) -> TurnCredentials:
    """Credentials for ``ident`` (a session or guest id) valid ``ttl_s`` from ``now``."""
    expires_at = int(now + ttl_s)
    ident = ident.replace(":", "_")
    username = f"{expires_at}:{ident}"
    return TurnCredentials(urls=tuple(urls), username=username, credential=credential(secret, username),
                           expires_at=expires_at)
