"""Guest links: an HS256 JWT signed with ``SANDRA_JWT_SECRET`` that follows a stay.

Claims: ``aud = "sandra"``, ``sub`` (booking or guest id), ``exp`` (end of the stay),
optional ``nbf`` (its start), ``name`` (the greeting uses it), ``lang`` (``en``/``es``: the
call's default language) and ``max_calls`` (concurrent calls with this token, default 1).

Pure: :func:`verify` is handed the time; PyJWT checks the signature, the audience and the
required claims, and the dates are checked here against ``now`` so that tests need no clock.
"""

from __future__ import annotations

import datetime as dt
import hmac
from dataclasses import dataclass

import jwt

from ..errors import SandraError

AUDIENCE = "sandra"
ALGORITHM = "HS256"
LANGUAGES = ("en", "es")
MIN_SECRET_BYTES = 32
MAX_NAME_CHARS = 40
MAX_CALLS_CAP = 20


class TokenError(SandraError):
    """A guest token that cannot be accepted. ``code`` is one of ``auth_required``,
    ``invalid_token``, ``token_expired``, ``token_not_yet_valid`` (all HTTP 401)."""

    status = 401

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


@dataclass(frozen=True)
class Guest:
    sub: str
    name: str | None
    lang: str | None
    max_calls: int
    exp: int
    nbf: int | None


def same(given: str | None, expected: str) -> bool:
    """``given == expected`` in constant time (a bearer token compared with a secret)."""
    return given is not None and hmac.compare_digest(given.encode(), expected.encode())


def _when(ts: float) -> str:
    return dt.datetime.fromtimestamp(ts, dt.UTC).strftime("%Y-%m-%d %H:%M UTC")


def clean_name(name: str | None) -> str | None:
    """A name fit to be spoken and shown: printable, single spaces, at most 40 characters."""
    if name is None:
        return None
    text = " ".join("".join(c for c in name if c.isprintable()).split())[:MAX_NAME_CHARS].strip()
    return text or None


def verify(token: str | None, secret: str, now: float) -> Guest:
    """The guest a token was issued to. Raises :class:`TokenError`."""
    if not token:
        raise TokenError("auth_required", "this call needs a guest link: open the link you were sent")
    try:
        claims = jwt.decode(
            token,
            secret.encode(),
            algorithms=[ALGORITHM],
            audience=AUDIENCE,
            options={"require": ["exp", "sub", "aud"], "verify_exp": False, "verify_nbf": False, "verify_iat": False},
        )
    except jwt.InvalidTokenError as exc:
        raise TokenError("invalid_token", f"this guest link is not valid ({_reason(exc)})") from exc
    exp, nbf = claims["exp"], claims.get("nbf")
    name, lang, max_calls = claims.get("name"), claims.get("lang"), claims.get("max_calls", 1)
    if not isinstance(exp, int | float) or isinstance(exp, bool):
        raise TokenError("invalid_token", "this guest link is not valid (exp is not a date)")
    if nbf is not None and (not isinstance(nbf, int | float) or isinstance(nbf, bool)):
        raise TokenError("invalid_token", "this guest link is not valid (nbf is not a date)")
    if not isinstance(claims["sub"], str) or not claims["sub"]:
        raise TokenError("invalid_token", "this guest link is not valid (no guest id)")
    if name is not None and not isinstance(name, str):
        raise TokenError("invalid_token", "this guest link is not valid (name is not a string)")
    if lang is not None and lang not in LANGUAGES:
        raise TokenError("invalid_token", f"this guest link is not valid (lang must be one of {', '.join(LANGUAGES)})")
    if not isinstance(max_calls, int) or isinstance(max_calls, bool) or not 1 <= max_calls <= MAX_CALLS_CAP:
        raise TokenError("invalid_token", f"this guest link is not valid (max_calls must be 1..{MAX_CALLS_CAP})")
    if now >= exp:
        raise TokenError("token_expired", f"this guest link expired on {_when(exp)}")
    if nbf is not None and now < nbf:
        raise TokenError("token_not_yet_valid", f"this guest link is valid from {_when(nbf)}")
    return Guest(sub=claims["sub"], name=clean_name(name), lang=lang, max_calls=max_calls, exp=int(exp),
                 nbf=int(nbf) if nbf is not None else None)


def _reason(exc: jwt.InvalidTokenError) -> str:
    match exc:
        case jwt.InvalidAudienceError():
            return "it is not meant for Sandra"
        case jwt.InvalidSignatureError():
            return "bad signature"
        case jwt.MissingRequiredClaimError():
            return f"no {exc.claim} claim"
        case jwt.InvalidAlgorithmError():
            return "wrong algorithm"
        case _:
            return "malformed"


def issue(
    secret: str,
    *,
    sub: str,
    exp: int,
    nbf: int | None = None,
    name: str | None = None,
    lang: str | None = None,
    max_calls: int | None = None,
    now: float,
) -> str:
    """A signed guest token. Raises ValueError on claims :func:`verify` would refuse."""
    if exp <= (nbf if nbf is not None else 0):
        raise ValueError("the stay must end after it starts")
    if lang is not None and lang not in LANGUAGES:
        raise ValueError(f"lang must be one of {', '.join(LANGUAGES)}")
    if max_calls is not None and not 1 <= max_calls <= MAX_CALLS_CAP:
        raise ValueError(f"max_calls must be 1..{MAX_CALLS_CAP}")
    claims: dict[str, object] = {"aud": AUDIENCE, "sub": sub, "exp": int(exp), "iat": int(now)}
    if nbf is not None:
        claims["nbf"] = int(nbf)
    if clean_name(name):
        claims["name"] = clean_name(name)
    if lang is not None:
        claims["lang"] = lang
    if max_calls is not None:
        claims["max_calls"] = max_calls
    return jwt.encode(claims, secret.encode(), algorithm=ALGORITHM)


def stay(start: str, end: str) -> tuple[int, int]:
    """``(nbf, exp)`` for a stay given as dates (``2026-12-01``: from 00:00 UTC that day, to
    the end of the last day) or ISO datetimes (taken as UTC without an offset). ValueError."""

    def parse(value: str, last: bool) -> int:
        try:
            if len(value) == 10:
                day = dt.datetime.combine(dt.date.fromisoformat(value), dt.time(), dt.UTC)
                return int((day + dt.timedelta(days=1 if last else 0)).timestamp())
            moment = dt.datetime.fromisoformat(value)
        except ValueError as exc:
            raise ValueError(f"{value!r} is not a date (YYYY-MM-DD) or an ISO datetime") from exc
        if moment.tzinfo is None:
            moment = moment.replace(tzinfo=dt.UTC)
        return int(moment.timestamp())

    nbf, exp = parse(start, False), parse(end, True)
    if exp <= nbf:
        raise ValueError("the stay must end after it starts")
    return nbf, exp
