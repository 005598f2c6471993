"""The HTTP surface: signaling, health, metrics and the client pages.

``create_app(config)`` builds the aiohttp application; providers start and calls end in
its ``cleanup_ctx``. Errors are JSON ``{"error": {"code", "message"}}``, never a trace.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import math
import os
import signal
import time
from collections.abc import AsyncIterator
from typing import Any
from pathlib import Path

from aiohttp import web

from . import __version__, admin, providers
from . import turn as end_of_turn
from . import cluster as clustering
from .config import Config
from .errors import CapacityError, OfferError
from .media.ice import restrict_host_addresses
from .metrics import LoopMonitor, Metrics, names_module, now_ms, process_stats
from .security import guest as guests
from .security import links, turn
from .security.guest import same
from .security.limits import LimitStore, MemoryLimitStore
from .security.web import ClientAddress, RedactingAccessLogger, client_ip, cors_middleware, headers_middleware
from .sessions import Sessions, TooManyCalls

log = logging.getLogger("sandra.app")

MAX_SDP_BYTES = 64 * 1024

CONFIG = web.AppKey("config", Config)
SESSIONS = web.AppKey("sessions", Sessions)
METRICS = web.AppKey("metrics", Metrics)
PROVIDERS = web.AppKey("providers", providers.Providers)
LOOP = web.AppKey("loop", LoopMonitor)
LIMITS = web.AppKey("limits", LimitStore)  # type: ignore[type-abstract]
ADDRESS = web.AppKey("client_address", ClientAddress)
MAX_GUEST_LINK_BYTES = 4096


def error(status: int, code: str, message: str) -> web.Response:
    return web.json_response({"error": {"code": code, "message": message}}, status=status)


def _bearer(request: web.Request) -> str | None:
    header = request.headers.get("Authorization", "")
    scheme, _, value = header.partition(" ")
    if scheme.lower() != "bearer":
        return None
    return value.strip() or None


def _guest(request: web.Request) -> guests.Guest | None:
    """The guest link an API request carries (None: the static token, or open mode).
    Raises TokenError."""
    config = request.app[CONFIG]
    secrets, bearer = config.secrets, _bearer(request)
    if secrets.auth_token and same(bearer, secrets.auth_token):
        return None
    if config.auth.mode == "token":
        return guests.verify(bearer, secrets.jwt_secret or "", time.time())
    if secrets.auth_token:
        raise guests.TokenError("unauthorized", "missing or invalid bearer token")
    if bearer and secrets.jwt_secret:  # open mode: a valid guest link still names the guest
        try:
            return guests.verify(bearer, secrets.jwt_secret, time.time())
        except guests.TokenError:
            return None
    return None


def _admin(request: web.Request, *, required: bool) -> web.Response | None:
    """None when the request may act as the host; else the 401 to answer."""
    admin = request.app[CONFIG].secrets.admin_token
    if admin is None and not required:
        return None
    if admin is None:
        return error(401, "admin_required", "set SANDRA_ADMIN_TOKEN on the server to use this endpoint")
    if not same(_bearer(request), admin):
        return error(401, "admin_required", "this endpoint needs the admin token as a bearer token")
    return None


def _retry_after(seconds: float) -> dict[str, str]:
    return {"Retry-After": str(max(1, math.ceil(seconds)))}


async def offer(request: web.Request) -> web.Response:
    config = request.app[CONFIG]
    ip = client_ip(request, request.app[ADDRESS])
    per_minute = config.limits.offers_per_minute
    try:  # the limits are cluster-wide with Redis: without it, no new calls
        wait = await request.app[LIMITS].take(f"offers:{ip}", per_minute / 60.0, per_minute)
    except clustering.ClusterUnavailable as exc:
        return error(503, "cluster_unavailable", str(exc))
    if wait > 0:
        response = error(429, "rate_limited", f"too many offers from {ip}: try again in {math.ceil(wait)} s")
        response.headers.update(_retry_after(wait))
        return response
    if request.app[SESSIONS].draining:
        response = error(503, "draining", "Sandra is restarting: call again in a few seconds")
        response.headers.update(_retry_after(5))
        return response
    try:
        guest = _guest(request)
    except guests.TokenError as exc:
        return error(401, exc.code, str(exc))
    if request.content_length is not None and request.content_length > MAX_SDP_BYTES + 1024:
        return error(400, "sdp_too_large", f"the offer is larger than {MAX_SDP_BYTES} bytes")
    try:
        body = json.loads(await request.read())
    except (json.JSONDecodeError, UnicodeDecodeError):
        return error(400, "bad_json", "the body must be JSON: {\"sdp\": ..., \"type\": \"offer\"}")
    except web.HTTPRequestEntityTooLarge:
        return error(400, "sdp_too_large", f"the offer is larger than {MAX_SDP_BYTES} bytes")
    if not isinstance(body, dict):
        return error(400, "bad_json", "the body must be a JSON object")
    sdp, kind = body.get("sdp"), body.get("type")
    if kind != "offer":
        return error(400, "bad_offer", "'type' must be \"offer\"")
    if not isinstance(sdp, str) or not sdp.strip():
        return error(400, "bad_offer", "'sdp' must be a non-empty string")
    if len(sdp.encode()) > MAX_SDP_BYTES:
        return error(400, "sdp_too_large", f"the SDP is larger than {MAX_SDP_BYTES} bytes")
    resume_token = body.get("resume_token")
    if resume_token is not None and (not isinstance(resume_token, str) or len(resume_token) > 512):
        return error(400, "invalid_resume_token", "'resume_token' must be the token call:started gave")
    try:
        session_id, answer = await request.app[SESSIONS].answer(sdp, guest, resume_token)
    except OfferError as exc:
        return error(400, exc.code, str(exc))
    except TooManyCalls as exc:
        return error(429, "too_many_calls", str(exc))
    except CapacityError as exc:
        return error(503, "at_capacity", str(exc))
    except clustering.ResumeError as exc:
        return error(400, "invalid_resume_token", f"{exc}: start a new call")
    except clustering.SessionBusy as exc:
        return error(409, "session_busy", str(exc))
    except clustering.ClusterUnavailable as exc:
        return error(503, "cluster_unavailable", str(exc))
    return web.json_response({"sdp": answer.sdp, "type": answer.type, "session_id": session_id})


async def hang_up(request: web.Request) -> web.Response:
    if (refused := _admin(request, required=False)) is not None:
        return refused
    try:
        if await request.app[SESSIONS].hang_up(request.match_info["session_id"]):
            return web.json_response({"status": "closed"})
    except clustering.ClusterUnavailable as exc:
        return error(503, "cluster_unavailable", str(exc))
    return error(404, "no_such_session", "no call with that session id")


async def ice(request: web.Request) -> web.Response:
    """The page's ICE servers: the configured ones plus fresh TURN credentials."""
    config = request.app[CONFIG]
    try:
        guest = _guest(request)
    except guests.TokenError as exc:
        return error(401, exc.code, str(exc))
    servers: list[dict[str, object]] = [
        {k: v for k, v in (("urls", list(s.urls)), ("username", s.username), ("credential", s.credential)) if v}
        for s in config.webrtc.ice_servers
    ]
    webrtc, ttl = config.webrtc, 0
    if webrtc.turn_urls and config.secrets.turn_secret:
        ident = guest.sub if guest is not None else client_ip(request, request.app[ADDRESS])
        creds = turn.credentials(config.secrets.turn_secret, webrtc.turn_urls, ident=ident, ttl_s=webrtc.turn_ttl_s,
                                 now=time.time())
        servers.append(creds.to_json())
        ttl = int(webrtc.turn_ttl_s)
    return web.json_response({"iceServers": servers, "ttl": ttl}, headers={"Cache-Control": "no-store"})


async def guest_link(request: web.Request) -> web.Response:
    """``{name?, lang?, from, to, max_calls?, sub?}`` -> ``{url, token, expires_at}`` (admin)."""
    if (refused := _admin(request, required=True)) is not None:
        return refused
    config = request.app[CONFIG]
    if not config.secrets.jwt_secret:
        return error(503, "guest_links_disabled", "set SANDRA_JWT_SECRET on the server to make guest links")
    try:
        body = json.loads(await request.content.read(MAX_GUEST_LINK_BYTES + 1))
    except (json.JSONDecodeError, UnicodeDecodeError):
        return error(400, "bad_json", "the body must be JSON: {\"from\": \"2026-12-01\", \"to\": \"2026-12-05\"}")
    if not isinstance(body, dict):
        return error(400, "bad_json", "the body must be a JSON object")
    try:
        link = links.make(config, body, now=time.time())
    except ValueError as exc:
        return error(400, "bad_guest_link", str(exc))
    return web.json_response(link, status=201)


async def health(request: web.Request) -> web.Response:
    view = await request.app[SESSIONS].cluster.view()
    body = {
        "status": view.status,
        "service": "Sandra IA",
        "version": __version__,
        "webrtc": {"connections": view.connections},
        "providers": request.app[PROVIDERS].names(),
    }
    if view.reason:
        body["reason"] = view.reason
    if view.redis:
        body["cluster"] = view.to_json()
    return web.json_response(body)


async def metrics_json(request: web.Request) -> web.Response:
    """``?window_s=10``: loop lag over the last 10 s only (benchmarks)."""
    sessions = request.app[SESSIONS]
    try:
        window_s = float(request.query["window_s"]) if "window_s" in request.query else None
    except ValueError:
        return error(400, "bad_query", "window_s must be a number of seconds")
    view = await sessions.cluster.view()
    body = {
        "timestamp": now_ms(),
        "connections": view.connections,
        "sessions": view.sessions(),
        "latency": request.app[METRICS].latency_summary(),
        "turn_taking": request.app[METRICS].turn_taking(),
        "process": {**process_stats(), "loop_lag_ms": request.app[LOOP].summary(window_s), "pid": os.getpid()},
    }
    if view.redis:
        body["cluster"] = view.to_json()
    return web.json_response(body)


async def metric_names(request: web.Request) -> web.Response:
    """The one list of latency metric names, as an ES module for the pages."""
    return web.Response(text=names_module(), content_type="text/javascript", headers={"Cache-Control": "no-cache"})


async def metrics_prometheus(request: web.Request) -> web.Response:
    text = await request.app[SESSIONS].cluster.prometheus(request.app[METRICS].prometheus())
    return web.Response(body=text, content_type="text/plain", charset="utf-8")


def _page(path: Path):  # type: ignore[no-untyped-def]
    async def handler(request: web.Request) -> web.StreamResponse:
        if not path.is_file():
            return error(404, "not_found", f"{path.name} is not built")
        return web.FileResponse(path, headers={"Cache-Control": "no-cache"})

    return handler


def _client_files(root: Path):  # type: ignore[no-untyped-def]
    """Files under client/ by their path, never outside it."""
    root = root.resolve()

    async def handler(request: web.Request) -> web.StreamResponse:
        name = request.match_info["name"]
        path = (root / name).resolve()
        if name.startswith("api/") or not path.is_relative_to(root) or not path.is_file():
            return error(404, "not_found", f"no such file: /{name}")
        return web.FileResponse(path, headers={"Cache-Control": "no-cache"})

    return handler


@web.middleware
async def json_errors(request: web.Request, handler):  # type: ignore[no-untyped-def]
    """Unexpected failures become a JSON 500 with no trace; the trace goes to the log."""
    try:
        return await handler(request)
    except web.HTTPException as exc:
        if exc.status >= 400:
            return error(exc.status, exc.reason.lower().replace(" ", "_"), exc.reason)
        raise
    except Exception:
        log.exception("unhandled error on %s %s", request.method, request.path)
        return error(500, "internal", "internal server error")


def create_app(
    config: Config, provider_set: providers.Providers | None = None, limit_store: LimitStore | None = None
) -> web.Application:
    """The Sandra application. ``provider_set`` defaults to the configured providers,
    ``limit_store`` to an in-process :class:`MemoryLimitStore`."""
    end_of_turn.check(config)  # a "smart" end-of-turn detector without its model file is a startup error
    app = web.Application(
        middlewares=[
            cors_middleware(config.server.cors_origins),
            headers_middleware(config.server.cors_origins),
            json_errors,
        ],
        client_max_size=MAX_SDP_BYTES * 2,
    )
    app[CONFIG] = config
    app[METRICS] = Metrics()
    app[LIMITS] = limit_store if limit_store is not None else MemoryLimitStore()
    app[ADDRESS] = ClientAddress(config.server.trusted_proxies)
    app[PROVIDERS] = provider_set if provider_set is not None else providers.create(config)
    cluster = clustering.create(config)
    if limit_store is None and getattr(cluster, "limits", None) is not None:
        app[LIMITS] = cluster.limits  # the rate limits and max_calls hold cluster-wide
    app[SESSIONS] = Sessions(config, app[PROVIDERS], app[METRICS], app[LIMITS], cluster)
    app[LOOP] = LoopMonitor()

    async def lifetime(app: web.Application) -> AsyncIterator[None]:
        restrict_host_addresses(config.webrtc.host_addresses)
        await app[PROVIDERS].start()
        log.info("providers: %s", app[PROVIDERS].names())
        # The end-of-turn model, loaded once for every call (blocking: off the loop).
        app[SESSIONS].detector = await asyncio.get_running_loop().run_in_executor(None, end_of_turn.evidence, config)
        await app[SESSIONS].cluster.start(app[SESSIONS])
        monitor = asyncio.get_running_loop().create_task(app[LOOP].run(), name="loop-monitor")
        try:
            yield
        finally:
            monitor.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await monitor
            await app[SESSIONS].close_all()
            await app[SESSIONS].cluster.aclose()
            await app[PROVIDERS].aclose()

    app.cleanup_ctx.append(lifetime)
    client = config.path(config.server.client_dir)
    app.router.add_post("/api/offer", offer)
    app.router.add_delete("/api/sessions/{session_id}", hang_up)
    app.router.add_post("/api/guest-links", guest_link)
    app.router.add_get("/api/ice", ice)
    app.router.add_get("/api/health", health)
    app.router.add_get("/api/metrics", metrics_json)
    app.router.add_get("/metrics", metrics_prometheus)
    app.router.add_get("/metric-names.js", metric_names)
    admin.setup(app, config, app[SESSIONS])  # the host's API, /admin and recording retention
    app.router.add_get("/", _page(client / "index.html"))
    app.router.add_get("/debug", _page(client / "debug.html"))
    app.router.add_get("/{name:.+}", _client_files(client))
    return app


async def run(config: Config, reuse_port: bool = False, early: list[int] | None = None) -> None:
    """Serve until SIGTERM or SIGINT, then drain: new offers get 503 ``draining``, calls in
    progress get up to ``[server] drain_timeout_s`` to finish, then the process stops."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    if early:  # signalled while starting: start, then drain at once
        stop.set()
    app = create_app(config)
    runner = web.AppRunner(app, handle_signals=False, access_log_class=RedactingAccessLogger)
    try:
        await runner.setup()
        site = web.TCPSite(runner, config.server.host, config.server.port, reuse_port=reuse_port)
        await site.start()
        await stop.wait()
        log.info("draining: %d call(s) in progress, up to %.0f s", len(app[SESSIONS]), config.server.drain_timeout_s)
        await app[SESSIONS].drain(config.server.drain_timeout_s)
    finally:
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(signum)
        await runner.cleanup()
    log.info("stopped")


def serve(config: Config, reuse_port: bool = False, ready: Any = None) -> None:
    """Run Sandra until SIGTERM/SIGINT and a drain (one worker process when ``reuse_port``;
    ``ready``, a multiprocessing Event, is set once a signal would be handled)."""
    early: list[int] = []  # a signal before the loop runs (a worker still starting) is not lost
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda signum, frame: early.append(signum))
    if ready is not None:
        ready.set()
    logging.basicConfig(level=config.server.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        asyncio.run(run(config, reuse_port, early))
    finally:  # drained: a late signal must not kill the process on its way out
        for signum in (signal.SIGTERM, signal.SIGINT):
            signal.signal(signum, signal.SIG_IGN)
