"""The HTTP edge: CORS, security headers, the client's address, a redacting access log.

- :func:`cors_middleware`: listed origins get ``Access-Control-Allow-Origin: <origin>`` on
  ``/api/*`` and an answered preflight; any other origin gets no CORS header at all.
- :func:`headers_middleware`: a Content-Security-Policy with no inline script and the
  other headers every response carries.
- :func:`client_ip`: the socket's peer, or ``X-Forwarded-For`` when the peer is a trusted proxy.
- :class:`RedactingAccessLogger`: the access log with ``t=`` / ``token=`` values hidden.
"""

from __future__ import annotations

import ipaddress
import logging
import re
from collections.abc import Awaitable, Callable, Iterable

from aiohttp import web
from aiohttp.abc import AbstractAccessLogger
from aiohttp.typedefs import Handler

ALLOW_METHODS = "POST, DELETE, GET, OPTIONS"
ALLOW_HEADERS = "Authorization, Content-Type"
PREFLIGHT_MAX_AGE = "600"


def content_security_policy(frame_origins: Iterable[str] = ()) -> str:
    """No inline script or style, nothing from elsewhere; framable by the CORS origins only."""
    ancestors = " ".join(["'self'", *frame_origins])
    return (
        "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data: blob:; "
        "media-src 'self' blob:; connect-src 'self'; object-src 'none'; base-uri 'none'; "
        f"form-action 'self'; frame-ancestors {ancestors}"
    )


def security_headers(frame_origins: Iterable[str] = ()) -> dict[str, str]:
    return {
        "Content-Security-Policy": content_security_policy(frame_origins),
        "X-Content-Type-Options": "nosniff",
        "Referrer-Policy": "no-referrer",  # a guest link carries its token
        "Permissions-Policy": "microphone=(self), camera=(), geolocation=()",
    }


def headers_middleware(frame_origins: Iterable[str] = ()) -> Callable[..., Awaitable[web.StreamResponse]]:
    headers = security_headers(frame_origins)

    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        response = await handler(request)
        for name, value in headers.items():
            response.headers.setdefault(name, value)
        return response

    return middleware


def cors_middleware(origins: Iterable[str]) -> Callable[..., Awaitable[web.StreamResponse]]:
    allowed = frozenset(o.rstrip("/") for o in origins)

    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        origin = request.headers.get("Origin")
        api = request.path.startswith("/api/")
        ok = api and origin is not None and origin in allowed
        if api and request.method == "OPTIONS" and "Access-Control-Request-Method" in request.headers:
            if not ok:
                return web.json_response(
                    {"error": {"code": "cors_forbidden", "message": "this origin may not call Sandra's API"}},
                    status=403,
                )
            response: web.StreamResponse = web.Response(status=204)
            response.headers["Access-Control-Allow-Methods"] = ALLOW_METHODS
            response.headers["Access-Control-Allow-Headers"] = ALLOW_HEADERS
            response.headers["Access-Control-Max-Age"] = PREFLIGHT_MAX_AGE
        else:
            try:
                response = await handler(request)
            except web.HTTPException as exc:
                response = exc
        if api:
            response.headers["Vary"] = "Origin"
        if ok:
            response.headers["Access-Control-Allow-Origin"] = origin  # type: ignore[assignment]
        if isinstance(response, web.HTTPException):
            raise response
        return response

    return middleware


def _networks(entries: Iterable[str]) -> tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]:
    return tuple(ipaddress.ip_network(e, strict=False) for e in entries)


class ClientAddress:
    """``of(peer, forwarded_for)``: the client, trusting ``X-Forwarded-For`` only from a
    trusted proxy, and then its right-most hop that is not itself a trusted proxy."""

    def __init__(self, trusted_proxies: Iterable[str]) -> None:
        self.trusted = _networks(trusted_proxies)

    def _is_trusted(self, address: str) -> bool:
        try:
            ip = ipaddress.ip_address(address)
        except ValueError:
            return False
        return any(ip in net for net in self.trusted)

    def of(self, peer: str | None, forwarded_for: str | None) -> str:
        peer = peer or "unknown"
        if not forwarded_for or not self._is_trusted(peer):
            return peer
        hops = [h.strip() for h in forwarded_for.split(",") if h.strip()]
        for hop in reversed(hops):
            if not self._is_trusted(hop):
                return hop
        return hops[0] if hops else peer


def client_ip(request: web.Request, address: ClientAddress) -> str:
    return address.of(request.remote, request.headers.get("X-Forwarded-For"))


_SECRET_QUERY = re.compile(r"([?&](?:t|token|access_token)=)[^&#\s]*", re.IGNORECASE)


def redact(target: str) -> str:
    """A request target with token-carrying query values replaced by ``[redacted]``."""
    return _SECRET_QUERY.sub(r"\1[redacted]", target)


class RedactingAccessLogger(AbstractAccessLogger):
    """``<ip> "<METHOD> <path?query> HTTP/x.y" <status> <bytes> <seconds>s``, tokens redacted."""

    def log(self, request: web.BaseRequest, response: web.StreamResponse, time: float) -> None:
        if not self.logger.isEnabledFor(logging.INFO):
            return
        version = f"{request.version.major}.{request.version.minor}"
        self.logger.info(
            '%s "%s %s HTTP/%s" %d %d %.3fs', request.remote, request.method, redact(request.raw_path), version,
            response.status, response.body_length, time,
        )
