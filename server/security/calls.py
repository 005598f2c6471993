"""What the call core asks the security layer, in one small object per call.

``CallGuard(config, guest, now)``:

- :meth:`on_message` (every datachannel message, time passed in) -> ``"ok"`` | ``"drop"``
  (answer ``error {code: "rate_limited"}``) | ``"close"`` (sustained flood: end the call);
- :meth:`allow_typed` -> False: a typed message over ``messages_per_minute``, not answered;
- :meth:`accepts` -> whether a datachannel ``auth`` token is good (a guest JWT or the
  static ``SANDRA_AUTH_TOKEN``);
- :meth:`greeting` -> the greeting with the guest's name; :attr:`language` the call's
  default language from the guest link.
"""

from __future__ import annotations

from typing import Literal

from ..config import Config
from . import guest as guests
from .guest import Guest
from .limits import MessageLimits

FLOOD_REASON = "rate_limited: too many datachannel messages"
DRAIN_REASON = "server_restarting"

Verdict = Literal["ok", "drop", "close"]

_WELCOME = {"en": "Welcome, {name}! ", "es": "¡Te damos la bienvenida, {name}! "}


def personal_greeting(greeting: str, name: str | None, language: str) -> str:
    """``greeting`` preceded by a welcome with the guest's name (unchanged without one)."""
    name = guests.clean_name(name)
    if not name:
        return greeting
    return _WELCOME.get(language, _WELCOME["en"]).format(name=name) + greeting


class CallGuard:
    def __init__(self, config: Config, guest: Guest | None, now: float) -> None:
        self.config = config
        self.guest = guest
        limits = config.limits
        self.limits = MessageLimits(
            now, per_second=limits.messages_per_second, typed_per_minute=limits.messages_per_minute,
            close_after_s=limits.flood_close_s,
        )

    @property
    def language(self) -> str | None:
        return self.guest.lang if self.guest is not None else None

    def on_message(self, at: float) -> Verdict:
        if self.limits.allow_message(at):
            return "ok"
        return "close" if self.limits.flooded(at) else "drop"

    def allow_typed(self, at: float) -> bool:
        return self.limits.allow_typed(at)

    def required(self) -> bool:
        """Whether a datachannel ``auth`` must come first (the static token, as before)."""
        return bool(self.config.secrets.auth_token) and self.guest is None

    def accepts(self, token: str | None, wall_now: float) -> bool:
        secrets = self.config.secrets
        if secrets.auth_token and guests.same(token, secrets.auth_token):
            return True
        if self.config.auth.mode == "token" and secrets.jwt_secret:
            try:
                guests.verify(token, secrets.jwt_secret, wall_now)
            except guests.TokenError:
                return False
            return True
        return not secrets.auth_token

    def greeting(self, greeting: str, language: str) -> str:
        return personal_greeting(greeting, self.guest.name if self.guest else None, language)
