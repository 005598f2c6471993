"""The HTTP surface: signaling, health, metrics and the client pages.

``create_app(config)`` builds the aiohttp application; providers start and calls end in
its ``cleanup_ctx``. Errors are JSON ``{"error": {"code", "message"}}``, never a trace.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
from collections.abc import AsyncIterator
from pathlib import Path

from aiohttp import web

from . import __version__, providers, turn
from .config import Config
from .errors import CapacityError, OfferError
from .media.ice import restrict_host_addresses
from .metrics import LoopMonitor, Metrics, now_ms, process_stats
from .sessions import Sessions

log = logging.getLogger("sandra.app")

MAX_SDP_BYTES = 64 * 1024

CONFIG = web.AppKey("config", Config)
SESSIONS = web.AppKey("sessions", Sessions)
METRICS = web.AppKey("metrics", Metrics)
PROVIDERS = web.AppKey("providers", providers.Providers)
LOOP = web.AppKey("loop", LoopMonitor)


def error(status: int, code: str, message: str) -> web.Response:
    return web.json_response({"error": {"code": code, "message": message}}, status=status)


async def offer(request: web.Request) -> web.Response:
    config = request.app[CONFIG]
    token = config.secrets.auth_token
    if token and request.headers.get("Authorization") != f"Bearer {token}":
        return error(401, "unauthorized", "missing or invalid bearer token")
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
    try:
        session_id, answer = await request.app[SESSIONS].answer(sdp)
    except OfferError as exc:
        return error(400, exc.code, str(exc))
    except CapacityError as exc:
        return error(503, "at_capacity", str(exc))
    return web.json_response({"sdp": answer.sdp, "type": answer.type, "session_id": session_id})


async def hang_up(request: web.Request) -> web.Response:
    if await request.app[SESSIONS].hang_up(request.match_info["session_id"]):
        return web.json_response({"status": "closed"})
    return error(404, "no_such_session", "no call with that session id")


async def health(request: web.Request) -> web.Response:
    return web.json_response(
        {
            "status": "ok",
            "service": "Sandra IA",
            "version": __version__,
            "webrtc": {"connections": len(request.app[SESSIONS])},
            "providers": request.app[PROVIDERS].names(),
        }
    )


async def metrics_json(request: web.Request) -> web.Response:
    """``?window_s=10``: loop lag over the last 10 s only (benchmarks)."""
    sessions = request.app[SESSIONS]
    try:
        window_s = float(request.query["window_s"]) if "window_s" in request.query else None
    except ValueError:
        return error(400, "bad_query", "window_s must be a number of seconds")
    return web.json_response(
        {
            "timestamp": now_ms(),
            "connections": len(sessions),
            "sessions": sessions.summary(),
            "latency": request.app[METRICS].latency_summary(),
            "process": {**process_stats(), "loop_lag_ms": request.app[LOOP].summary(window_s), "pid": os.getpid()},
        }
    )


async def metrics_prometheus(request: web.Request) -> web.Response:
    return web.Response(body=request.app[METRICS].prometheus(), content_type="text/plain", charset="utf-8")


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


def create_app(config: Config, provider_set: providers.Providers | None = None) -> web.Application:
    """The Sandra application. ``provider_set`` defaults to the configured providers."""
    # HOOK(eot): a "smart" end-of-turn detector without its model file is a startup error.
    turn.check(config)
    app = web.Application(middlewares=[json_errors], client_max_size=MAX_SDP_BYTES * 2)
    app[CONFIG] = config
    app[METRICS] = Metrics()
    app[PROVIDERS] = provider_set if provider_set is not None else providers.create(config)
    app[SESSIONS] = Sessions(config, app[PROVIDERS], app[METRICS])
    app[LOOP] = LoopMonitor()

    async def lifetime(app: web.Application) -> AsyncIterator[None]:
        restrict_host_addresses(config.webrtc.host_addresses)
        await app[PROVIDERS].start()
        log.info("providers: %s", app[PROVIDERS].names())
        monitor = asyncio.get_running_loop().create_task(app[LOOP].run(), name="loop-monitor")
        try:
            yield
        finally:
            monitor.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await monitor
            await app[SESSIONS].close_all()
            await app[PROVIDERS].aclose()

    app.cleanup_ctx.append(lifetime)
    client = config.path(config.server.client_dir)
    app.router.add_post("/api/offer", offer)
    app.router.add_delete("/api/sessions/{session_id}", hang_up)
    app.router.add_get("/api/health", health)
    app.router.add_get("/api/metrics", metrics_json)
    app.router.add_get("/metrics", metrics_prometheus)
    app.router.add_get("/", _page(client / "index.html"))
    app.router.add_get("/debug", _page(client / "debug.html"))
    app.router.add_get("/{name:.+}", _client_files(client))
    return app


def serve(config: Config, reuse_port: bool = False) -> None:
    """Run Sandra until interrupted (one worker process when ``reuse_port``)."""
    logging.basicConfig(level=config.server.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    web.run_app(create_app(config), host=config.server.host, port=config.server.port, print=None, reuse_port=reuse_port)
