"""Making guest links: ``BASE/?t=<jwt>``, for the CLI (with a QR code) and the API.

``python -m server guest-link --name Ana --from 2026-12-01 --to 2026-12-05 [--lang es]
[--max-calls 2] [--sub BOOKING] [--base-url URL] [--png FILE]``
"""

from __future__ import annotations

import argparse
import datetime as dt
import secrets
import sys
from typing import Any, TextIO

import segno

from ..config import Config
from . import guest as guests


def base_url(config: Config) -> str:
    return (config.auth.base_url or f"http://{config.server.host}:{config.server.port}").rstrip("/")


def make(config: Config, request: dict[str, Any], *, now: float, base: str | None = None) -> dict[str, Any]:
    """``{name?, lang?, from, to, max_calls?, sub?}`` -> ``{url, token, expires_at}``. ValueError."""
    if not config.secrets.jwt_secret:
        raise ValueError("SANDRA_JWT_SECRET is not set: guest links cannot be signed")
    unknown = set(request) - {"name", "lang", "from", "to", "max_calls", "sub"}
    if unknown:
        raise ValueError(f"unknown field(s): {', '.join(sorted(unknown))}")
    start, end = request.get("from"), request.get("to")
    if not isinstance(start, str) or not isinstance(end, str):
        raise ValueError("'from' and 'to' are required: dates like \"2026-12-01\" or ISO datetimes")
    name, lang, max_calls = request.get("name"), request.get("lang"), request.get("max_calls")
    sub = request.get("sub") or f"guest-{secrets.token_urlsafe(8)}"
    if name is not None and not isinstance(name, str):
        raise ValueError("'name' must be a string")
    if not isinstance(sub, str) or len(sub) > 128:
        raise ValueError("'sub' must be a string of at most 128 characters")
    if max_calls is not None and (not isinstance(max_calls, int) or isinstance(max_calls, bool)):
        raise ValueError("'max_calls' must be an integer")
    nbf, exp = guests.stay(start, end)
    if exp <= now:
        raise ValueError("that stay is already over")
    token = guests.issue(config.secrets.jwt_secret, sub=sub, exp=exp, nbf=nbf, name=name, lang=lang,
                         max_calls=max_calls, now=now)
    expires_at = dt.datetime.fromtimestamp(exp, dt.UTC).isoformat().replace("+00:00", "Z")
    return {"url": f"{base or base_url(config)}/?t={token}", "token": token, "expires_at": expires_at}


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m server guest-link", description="Make a guest link and its QR code")
    p.add_argument("--name", help="the guest's name (Sandra greets them with it)")
    p.add_argument("--from", dest="start", required=True, help="first day of the stay (YYYY-MM-DD, UTC)")
    p.add_argument("--to", dest="end", required=True, help="last day of the stay (YYYY-MM-DD, UTC, inclusive)")
    p.add_argument("--lang", choices=guests.LANGUAGES, help="the call's default language")
    p.add_argument("--max-calls", type=int, help="calls at the same time with this link (default 1)")
    p.add_argument("--sub", help="booking or guest id (default: a random one)")
    p.add_argument("--base-url", help="where guests open Sandra (default [auth] base_url, else http://host:port)")
    p.add_argument("--png", help="also write the QR code to this PNG file")
    p.add_argument("--no-qr", action="store_true", help="print the link only")
    return p


def main(config: Config, argv: list[str], now: float, out: TextIO = sys.stdout) -> int:
    args = parser().parse_args(argv)
    request = {"from": args.start, "to": args.end}
    for key, value in (("name", args.name), ("lang", args.lang), ("max_calls", args.max_calls), ("sub", args.sub)):
        if value is not None:
            request[key] = value
    try:
        link = make(config, request, now=now, base=args.base_url.rstrip("/") if args.base_url else None)
    except ValueError as exc:
        print(f"sandra guest-link: {exc}", file=sys.stderr)
        return 2
    qr = segno.make(link["url"], error="m")
    print(link["url"], file=out)
    print(f"valid until {link['expires_at']}", file=out)
    if not args.no_qr:
        qr.terminal(out=out, compact=True)
    if args.png:
        qr.save(args.png, kind="png", scale=8, border=4)
        print(f"QR code written to {args.png}", file=out)
    return 0
