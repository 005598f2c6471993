"""The host's admin API and the dashboard page (``/admin``).

Every ``/api/calls*`` and ``/api/inbox*`` route needs ``Authorization: Bearer
<SANDRA_ADMIN_TOKEN>`` (``401 admin_required`` otherwise; with no admin token configured
the admin API is off and always answers 401).

- ``GET /api/calls``: ``{"live": [...], "calls": [...]}``: the calls in progress (state,
  language, duration, last turn's latency) and the recorded ones, newest first
  (``?live=1``: the live ones only; ``?limit=N``, at most 200);
- ``GET /api/calls/{id}``: the call's JSON (recorded, or the live transcript so far);
- ``GET /api/calls/{id}/audio``: its Ogg/Opus, with HTTP range requests. Besides the
  bearer token it takes ``?exp=<unix s>&sig=<hex>``, the ``audio_url`` that
  ``GET /api/calls/{id}`` hands out: an HMAC of the session id and expiry under the admin
  token, good for that one file for an hour, so that an ``<audio>`` element (which cannot
  send headers) streams and seeks with ranges;
- ``GET /api/inbox``: the ``notify_host`` messages, newest first, each with a stable
  ``id`` and ``handled``; ``POST /api/inbox/{id}/handled`` marks one (kept beside the
  inbox in ``<inbox>.handled.json``).

:func:`setup` also runs the recordings' retention sweep at startup and every hour.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import hashlib
import hmac
import json
import logging
import re
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

from aiohttp import web

from .config import Config
from .recording import sweep
from .sessions import Sessions

log = logging.getLogger("sandra.admin")

SWEEP_EVERY_S = 3600.0
AUDIO_URL_S = 3600
MAX_LIST = 200
SESSION_ID = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
INBOX_ID = re.compile(r"^[0-9a-f]{16}$")

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def _error(status: int, code: str, message: str) -> web.Response:
    return web.json_response({"error": {"code": code, "message": message}}, status=status)


class Admin:
    def __init__(self, config: Config, sessions: Sessions) -> None:
        self.config = config
        self.sessions = sessions
        self.root = config.path(config.recording.dir)
        self.inbox = config.path(config.llm.host_inbox)
        self.handled_file = self.inbox.with_name(self.inbox.name + ".handled.json")
        self._lock = asyncio.Lock()

    # --- auth ------------------------------------------------------------------------

    def _is_admin(self, request: web.Request) -> bool:
        token = self.config.secrets.admin_token
        given = request.headers.get("Authorization", "")
        return bool(token) and hmac.compare_digest(given.encode(), f"Bearer {token}".encode())

    def guarded(self, handler: Handler) -> Handler:
        async def check(request: web.Request) -> web.StreamResponse:
            if not self._is_admin(request):
                return _error(401, "admin_required", "this needs the admin token: Authorization: Bearer <SANDRA_ADMIN_TOKEN>")
            return await handler(request)

        return check

    def _signature(self, session_id: str, expires: int) -> str:
        key = (self.config.secrets.admin_token or "").encode()
        return hmac.new(key, f"audio:{session_id}:{expires}".encode(), hashlib.sha256).hexdigest()[:32]

    def audio_url(self, session_id: str, now: float) -> str:
        expires = int(now) + AUDIO_URL_S
        return f"/api/calls/{session_id}/audio?exp={expires}&sig={self._signature(session_id, expires)}"

    def _signed(self, request: web.Request, session_id: str, now: float) -> bool:
        if not self.config.secrets.admin_token:
            return False
        try:
            expires = int(request.query.get("exp", ""))
        except ValueError:
            return False
        sig = request.query.get("sig", "")
        return expires >= now and hmac.compare_digest(sig.encode(), self._signature(session_id, expires).encode())

    # --- calls -----------------------------------------------------------------------

    def _live(self) -> list[dict[str, Any]]:
        now = time.monotonic()
        out = []
        for call in list(self.sessions.calls.values()):
            rec = call.recorder
            records = rec.log.records
            out.append({
                "session_id": call.session_id,
                "live": True,
                "state": call.state.value,
                "language": call.language,
                "started_at": rec.started_at.isoformat(),
                "duration_s": round(now - call.created_at, 1),
                "turns": len(records),
                "interrupted": sum(1 for r in records if r.interrupted),
                "last_metrics": rec.log.last_metrics,
                "recording": rec.recording,
            })
        return sorted(out, key=lambda c: c["started_at"], reverse=True)

    def _recorded(self, limit: int) -> list[dict[str, Any]]:
        if not self.root.is_dir():
            return []
        live = set(self.sessions.calls)
        files = sorted(self.root.glob("*/*.json"), key=lambda p: (p.parent.name, p.stat().st_mtime), reverse=True)
        out = []
        for path in files:
            if len(out) >= limit:
                break
            if path.stem in live:
                continue
            try:
                doc = json.loads(path.read_text())
            except (OSError, json.JSONDecodeError):
                continue
            turns = doc.get("turns", [])
            out.append({
                "session_id": doc.get("session_id", path.stem),
                "live": False,
                "started_at": doc.get("started_at"),
                "ended_at": doc.get("ended_at"),
                "duration_s": doc.get("duration_s"),
                "language": doc.get("language"),
                "guest": doc.get("guest"),
                "close_reason": doc.get("close_reason"),
                "turns": len(turns),
                "interrupted": sum(1 for t in turns if t.get("interrupted")),
                "recording": path.with_suffix(".ogg").is_file(),
                "metrics": [t["metrics"] for t in turns if t.get("who") == "sandra" and t.get("metrics")],
            })
        return out

    def _find(self, session_id: str, suffix: str) -> Path | None:
        if not SESSION_ID.match(session_id) or not self.root.is_dir():
            return None
        return next(iter(sorted(self.root.glob(f"*/{session_id}{suffix}"), reverse=True)), None)

    async def list_calls(self, request: web.Request) -> web.Response:
        try:
            limit = min(MAX_LIST, max(1, int(request.query.get("limit", "50"))))
        except ValueError:
            return _error(400, "bad_query", "limit must be a whole number")
        if request.query.get("live") in ("1", "true"):
            return web.json_response({"live": self._live()})
        recorded = await asyncio.to_thread(self._recorded, limit)
        return web.json_response({"live": self._live(), "calls": recorded, "recording": self.config.recording.enabled})

    async def get_call(self, request: web.Request) -> web.Response:
        session_id = request.match_info["session_id"]
        call = self.sessions.calls.get(session_id)
        if call is not None:
            return web.json_response({**call.recorder.document(), "live": True, "state": call.state.value})
        path = self._find(session_id, ".json")
        if path is None:
            return _error(404, "no_such_call", "no call with that session id")
        doc = json.loads(await asyncio.to_thread(path.read_text))
        recorded = path.with_suffix(".ogg").is_file()
        return web.json_response({**doc, "live": False, "recording": recorded,
                                  "audio_url": self.audio_url(session_id, time.time()) if recorded else None})

    async def get_audio(self, request: web.Request) -> web.StreamResponse:
        session_id = request.match_info["session_id"]
        if not self._is_admin(request) and not self._signed(request, session_id, time.time()):
            return _error(401, "admin_required", "this needs the admin token, or the call's audio_url")
        path = self._find(session_id, ".ogg")
        if path is None:
            return _error(404, "no_recording", "no recording for that session id")
        return web.FileResponse(path, headers={"Content-Type": "audio/ogg", "Cache-Control": "no-cache"})

    # --- the host inbox --------------------------------------------------------------

    def _read_inbox(self) -> list[dict[str, Any]]:
        handled = self._handled()
        messages = []
        try:
            lines = self.inbox.read_text(encoding="utf-8").splitlines()
        except FileNotFoundError:
            return []
        for line in lines:
            if not line.strip():
                continue
            try:
                entry = json.loads(line)
            except json.JSONDecodeError:
                continue
            if not isinstance(entry, dict):
                continue
            message_id = hashlib.sha256(line.encode()).hexdigest()[:16]
            messages.append({"id": message_id, **entry, "handled": message_id in handled})
        return messages[::-1]

    def _handled(self) -> set[str]:
        try:
            return set(json.loads(self.handled_file.read_text()))
        except (FileNotFoundError, json.JSONDecodeError, TypeError):
            return set()

    async def get_inbox(self, request: web.Request) -> web.Response:
        messages = await asyncio.to_thread(self._read_inbox)
        return web.json_response({"messages": messages, "unhandled": sum(1 for m in messages if not m["handled"])})

    async def mark_handled(self, request: web.Request) -> web.Response:
        message_id = request.match_info["message_id"]
        if not INBOX_ID.match(message_id):
            return _error(400, "bad_id", "a message id is 16 hex digits")
        async with self._lock:
            messages = await asyncio.to_thread(self._read_inbox)
            if not any(m["id"] == message_id for m in messages):
                return _error(404, "no_such_message", "no inbox message with that id")
            handled = self._handled() | {message_id}
            await asyncio.to_thread(_write_json, self.handled_file, sorted(handled))
        return web.json_response({"id": message_id, "handled": True})

    # --- retention -------------------------------------------------------------------

    async def retention(self, app: web.Application) -> AsyncIterator[None]:
        task = None
        if self.config.recording.enabled:
            task = asyncio.get_running_loop().create_task(self._sweeper(), name="recording-retention")
        try:
            yield
        finally:
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task

    async def _sweeper(self) -> None:
        while True:
            try:
                await asyncio.to_thread(sweep, self.root, self.config.recording.keep_days, dt.datetime.now(dt.UTC))
            except OSError as exc:
                log.warning("retention sweep failed: %s", exc)
            await asyncio.sleep(SWEEP_EVERY_S)


def _write_json(path: Path, value: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(value))
    tmp.replace(path)


def setup(app: web.Application, config: Config, sessions: Sessions) -> Admin:
    """Add the admin routes and the retention sweep to ``app`` (before the catch-all route)."""
    admin = Admin(config, sessions)
    app.cleanup_ctx.append(admin.retention)
    g = admin.guarded
    app.router.add_get("/api/calls", g(admin.list_calls))
    app.router.add_get("/api/calls/{session_id}", g(admin.get_call))
    app.router.add_get("/api/calls/{session_id}/audio", admin.get_audio)  # checks its own auth
    app.router.add_get("/api/inbox", g(admin.get_inbox))
    app.router.add_post("/api/inbox/{message_id}/handled", g(admin.mark_handled))
    page = config.path(config.server.client_dir) / "admin.html"

    async def dashboard(request: web.Request) -> web.StreamResponse:
        if not page.is_file():
            return _error(404, "not_found", "admin.html is not built")
        return web.FileResponse(page, headers={"Cache-Control": "no-cache"})

    app.router.add_get("/admin", dashboard)
    return admin
