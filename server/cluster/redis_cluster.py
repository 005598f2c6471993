"""The cluster through Redis: registry, admission, hang-ups across workers, shared views.

One :class:`RedisCluster` per worker. Its three tasks:

- **heartbeat** (every ``[cluster] heartbeat_s``): one Lua script re-asserts this worker
  (expiry ``heartbeat_ttl_s`` on Redis's clock), the sessions it holds, its summary and
  Prometheus text, and forgets dead workers. It also tells the worker whether Redis is
  reachable: if not, the worker is ``degraded`` (calls in progress go on; new offers get
  ``503 cluster_unavailable``) until a beat succeeds again, which refills a restarted Redis.
- **listener**: the worker's channel ``<prefix>:ch:<worker>``, where other workers ask it
  to end a call (``hang_up``, ``take_over``) and answer its own requests. Resubscribes by
  itself after Redis comes back.
- **writer**: conversation snapshots, coalesced per session, written as they change.

Every Redis command is bounded by ``[cluster] redis_timeout_s`` and redis-py does not
retry, so nothing waits on an unreachable Redis for longer than that.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import secrets
import socket
import time
from typing import Any

import redis.asyncio as aioredis
from redis.backoff import NoBackoff
from redis.exceptions import RedisError
from redis.retry import Retry

from ..config import Config
from ..errors import CapacityError
from . import scripts
from .errors import ClusterUnavailable, SessionBusy
from .limits import RedisLimitStore
from .prometheus import merge
from .snapshot import Snapshot
from .stores import RedisConversationStore
from .tokens import ResumeTokens
from .view import ClusterView, Owner, WorkerView

log = logging.getLogger("sandra.cluster")

REDIS_ERRORS = (RedisError, OSError, TimeoutError)


def redis_client(url: str, timeout_s: float) -> aioredis.Redis:
    return aioredis.Redis.from_url(
        url, socket_timeout=timeout_s, socket_connect_timeout=timeout_s, retry=Retry(NoBackoff(), 0),
        decode_responses=True,
    )


def _describe(exc: BaseException) -> str:
    text = str(exc).split("\n")[0][:160]
    return f"Redis unreachable ({type(exc).__name__}{': ' + text if text else ''})"


class RedisCluster:
    redis = True

    def __init__(self, config: Config, *, worker_id: str | None = None) -> None:
        c = config.cluster
        self.config = config
        self.worker_id = worker_id or f"{socket.gethostname()}:{os.getpid()}"
        self._c = c
        self._p = c.key_prefix
        self._redis = redis_client(c.redis_url, c.redis_timeout_s)
        self.conversations = RedisConversationStore(self._redis, self._p)
        self.limits = RedisLimitStore(self._redis, prefix=self._p, worker_id=self.worker_id, timeout_s=c.redis_timeout_s)
        self._admit = self._redis.register_script(scripts.ADMIT)
        self._release = self._redis.register_script(scripts.RELEASE)
        self._heartbeat = self._redis.register_script(scripts.HEARTBEAT)
        self._view = self._redis.register_script(scripts.VIEW)
        self._owner_of = self._redis.register_script(scripts.OWNER)
        self._owner: Owner | None = None
        self.healthy = False
        self.reason: str | None = "not connected to Redis yet"
        self._tasks: set[asyncio.Task[Any]] = set()
        self._pending: dict[str, tuple[Snapshot, float]] = {}
        self._wake_writer = asyncio.Event()
        self._released: set[str] = set()
        self._replies: dict[str, asyncio.Future[bool]] = {}
        self._secret: str | None = config.secrets.resume_secret
        self._tokens: ResumeTokens | None = None
        self._started = time.time()
        self._subscribed = asyncio.Event()

    # --- keys --------------------------------------------------------------------------

    def _k(self, *parts: str) -> str:
        return ":".join((self._p, *parts))

    def channel(self, worker_id: str) -> str:
        return self._k("ch", worker_id)

    async def _cmd(self, awaitable: Any) -> Any:
        try:
            return await asyncio.wait_for(awaitable, self._c.redis_timeout_s)
        except REDIS_ERRORS as exc:
            self._degraded(exc)
            raise ClusterUnavailable(_describe(exc)) from exc

    def _degraded(self, exc: BaseException) -> None:
        if self.healthy:
            log.warning("cluster: %s; calls in progress go on, new offers are refused", _describe(exc))
        self.healthy = False
        self.reason = _describe(exc)

    # --- lifetime ----------------------------------------------------------------------

    async def start(self, owner: Owner) -> None:
        self._owner = owner
        await self._beat_once()
        for coro, name in ((self._heartbeat_loop(), "heartbeat"), (self._listen(), "listener"),
                           (self._write_loop(), "writer")):
            task = asyncio.get_running_loop().create_task(coro, name=f"cluster-{name}")
            self._tasks.add(task)
        with contextlib.suppress(TimeoutError):  # so that a hang-up sent now finds us listening
            await asyncio.wait_for(self._subscribed.wait(), self._c.redis_timeout_s * 2)

    async def aclose(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks.clear()
        with contextlib.suppress(*REDIS_ERRORS):
            await asyncio.wait_for(self._write_pending(), self._c.redis_timeout_s)
        with contextlib.suppress(*REDIS_ERRORS):  # leave at once rather than after the TTL
            await asyncio.wait_for(self._leave(), self._c.redis_timeout_s)
        await self._redis.aclose()

    async def _leave(self) -> None:
        assert self._owner is not None
        ids = list(self._released | set(self._owner.session_ids()))
        if ids:
            await self._release(keys=[self._k("wsessions", self.worker_id)], args=[self._p, self.worker_id, *ids])
        await self._redis.zrem(self._k("workers"), self.worker_id)
        await self._redis.delete(self._k("worker", self.worker_id), self._k("wsessions", self.worker_id))

    # --- heartbeat ---------------------------------------------------------------------

    async def _heartbeat_loop(self) -> None:
        while True:
            await asyncio.sleep(self._c.heartbeat_s)
            await self._beat_once()

    async def _beat_once(self) -> None:
        try:
            await asyncio.wait_for(self._beat(), self._c.redis_timeout_s * 2)
        except REDIS_ERRORS as exc:
            self._degraded(exc)
            return
        if not self.healthy:
            log.info("cluster: Redis reachable, worker %s registered", self.worker_id)
        self.healthy, self.reason = True, None

    async def _beat(self) -> None:
        assert self._owner is not None
        c = self._c
        released = list(self._released)
        if released:
            await self._release(keys=[self._k("wsessions", self.worker_id)], args=[self._p, self.worker_id, *released])
            self._released.difference_update(released)
        info = json.dumps({"pid": os.getpid(), "host": socket.gethostname(), "started": self._started,
                           "sessions": self._owner.summary()})
        worker_ttl_ms = int(c.heartbeat_ttl_s * 1000)
        await self._heartbeat(
            keys=[self._k("workers"), self._k("wsessions", self.worker_id), self._k("worker", self.worker_id),
                  self._k("secret")],
            args=[self._p, self.worker_id, worker_ttl_ms, worker_ttl_ms * 10, self._session_ttl_ms(), info,
                  self._owner.prometheus().decode(), self._secret or "", *self._owner.session_ids()],
        )

    def _session_ttl_ms(self) -> int:
        return int((self.config.server.session_ttl_s + 60) * 1000)

    # --- admission ---------------------------------------------------------------------

    async def admit(self, session_id: str, max_sessions: int) -> None:
        """Count ``session_id`` in the cluster, or raise CapacityError / ClusterUnavailable."""
        worker_ttl_ms = int(self._c.heartbeat_ttl_s * 1000)
        total = await self._cmd(self._admit(
            keys=[self._k("workers"), self._k("wsessions", self.worker_id), self._k("session", session_id)],
            args=[self._p, self.worker_id, session_id, max_sessions, self._session_ttl_ms(), worker_ttl_ms,
                  worker_ttl_ms * 10],
        ))
        if int(total) == -2:
            raise SessionBusy("that conversation went on on another connection meanwhile")
        if int(total) < 0:
            raise CapacityError(f"the cluster is serving {max_sessions} calls, the most it can")

    async def release(self, session_id: str) -> None:
        """The call ended (or was never answered). Retried by the heartbeat if Redis is away."""
        self._released.add(session_id)
        try:
            await self._cmd(self._release(keys=[self._k("wsessions", self.worker_id)],
                                          args=[self._p, self.worker_id, session_id]))
        except ClusterUnavailable:
            return
        self._released.discard(session_id)

    # --- ending calls anywhere ---------------------------------------------------------

    async def owner_of(self, session_id: str) -> str | None:
        owner = await self._cmd(self._owner_of(keys=[self._k("workers"), self._k("session", session_id)], args=[]))
        return owner or None

    async def hang_up(self, session_id: str) -> bool:
        """End a call held by another worker; True once it has ended, False if nobody holds it."""
        return await self._end_remote(session_id, "hang_up")

    async def take_over(self, session_id: str) -> None:
        """Close the old connection of a session about to be resumed here (wherever it is)."""
        await self._end_remote(session_id, "take_over")

    async def _end_remote(self, session_id: str, op: str) -> bool:
        owner = await self.owner_of(session_id)
        if owner is None:
            return False
        if owner == self.worker_id:
            assert self._owner is not None
            return await self._owner.end_call(session_id, _REASONS[op])
        request_id = secrets.token_hex(8)
        reply: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        self._replies[request_id] = reply
        message = json.dumps({"op": op, "session_id": session_id, "id": request_id, "from": self.worker_id})
        try:
            if not await self._cmd(self._redis.publish(self.channel(owner), message)):
                # Nobody listens there: the worker died (its heartbeat has not lapsed yet) or
                # is cut off. Its call cannot be reached; let the session go on elsewhere.
                await self._cmd(self._release(keys=[self._k("wsessions", owner)], args=[self._p, owner, session_id]))
                return False
            return await asyncio.wait_for(reply, self._c.hang_up_timeout_s)
        except TimeoutError as exc:
            raise ClusterUnavailable(f"worker {owner} did not answer within {self._c.hang_up_timeout_s:g} s") from exc
        finally:
            self._replies.pop(request_id, None)

    async def _listen(self) -> None:
        while True:
            pubsub = self._redis.pubsub()
            try:
                await asyncio.wait_for(pubsub.subscribe(self.channel(self.worker_id)), self._c.redis_timeout_s)
                self._subscribed.set()
                while True:
                    message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=1.0)
                    if message is not None and message.get("type") == "message":
                        self._on_request(message["data"])
            except REDIS_ERRORS as exc:
                self._subscribed.clear()
                log.debug("cluster: listener lost Redis (%s); resubscribing", type(exc).__name__)
            except Exception:  # whatever broke the connection, the listener must come back
                self._subscribed.clear()
                log.exception("cluster: the hang-up listener failed; resubscribing")
            finally:
                with contextlib.suppress(Exception):
                    await pubsub.aclose()
            await asyncio.sleep(0.5)

    def _on_request(self, data: str) -> None:
        try:
            message = json.loads(data)
            op = message["op"]
        except (ValueError, KeyError, TypeError):
            log.warning("cluster: unreadable message on %s dropped", self.channel(self.worker_id))
            return
        if op == "reply":
            reply = self._replies.get(message.get("id"))
            if reply is not None and not reply.done():
                reply.set_result(bool(message.get("ok")))
        elif op in _REASONS:
            task = asyncio.get_running_loop().create_task(self._serve(message), name=f"cluster-{op}")
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _serve(self, message: dict[str, Any]) -> None:
        assert self._owner is not None
        ok = await self._owner.end_call(str(message.get("session_id")), _REASONS[message["op"]])
        reply = json.dumps({"op": "reply", "id": message.get("id"), "ok": ok})
        with contextlib.suppress(ClusterUnavailable):
            await self._cmd(self._redis.publish(self.channel(str(message.get("from"))), reply))

    # --- conversations -----------------------------------------------------------------

    async def tokens(self) -> ResumeTokens:
        if self._tokens is None:
            if self._secret is None:
                candidate = secrets.token_urlsafe(32)
                old = await self._cmd(self._redis.set(self._k("secret"), candidate, nx=True, get=True))
                self._secret = old or candidate
            self._tokens = ResumeTokens(self._secret.encode(), self.config.server.session_ttl_s)
        return self._tokens

    def changed(self, session_id: str, snapshot: Snapshot, ttl_s: float) -> None:
        self._pending[session_id] = (snapshot, ttl_s)
        self._wake_writer.set()

    async def flush(self, session_id: str) -> None:
        """Write this session's latest snapshot now (its call is closing)."""
        item = self._pending.pop(session_id, None)
        if item is not None:
            try:
                await self._cmd(self.conversations.save(session_id, *item))
            except ClusterUnavailable:
                self._pending.setdefault(session_id, item)

    async def forget_conversation(self, session_id: str) -> None:
        self._pending.pop(session_id, None)
        with contextlib.suppress(ClusterUnavailable):
            await self._cmd(self.conversations.delete(session_id))

    async def _write_loop(self) -> None:
        while True:
            await self._wake_writer.wait()
            self._wake_writer.clear()
            try:
                await asyncio.wait_for(self._write_pending(), self._c.redis_timeout_s)
            except REDIS_ERRORS:
                await asyncio.sleep(0.5)
                self._wake_writer.set()

    async def _write_pending(self) -> None:
        batch, self._pending = self._pending, {}
        if not batch:
            return
        try:
            async with self._redis.pipeline(transaction=False) as pipe:
                for session_id, (snapshot, ttl_s) in batch.items():
                    pipe.set(self.conversations.key(session_id), snapshot.to_json(), px=max(1, int(ttl_s * 1000)))
                await pipe.execute()
        except BaseException:
            for session_id, item in batch.items():
                self._pending.setdefault(session_id, item)
            raise

    # --- views -------------------------------------------------------------------------

    def _me(self) -> WorkerView:
        assert self._owner is not None
        summary = self._owner.summary()
        return WorkerView(self.worker_id, summary["total"], summary, os.getpid(), socket.gethostname(), True)

    async def _workers(self, field: str) -> list[tuple[str, int, str]] | None:
        if not self.healthy:
            return None
        try:
            flat = await self._cmd(self._view(keys=[self._k("workers")], args=[self._p, field]))
        except ClusterUnavailable:
            return None
        return [(flat[i], int(flat[i + 1]), flat[i + 2]) for i in range(0, len(flat), 3)]

    async def view(self) -> ClusterView:
        me = self._me()
        workers = await self._workers("info")
        if workers is None:
            return ClusterView("degraded", self.reason, (me,))
        out = [me]
        for worker_id, held, raw in workers:
            if worker_id == self.worker_id:
                continue
            try:
                info = json.loads(raw) if raw else {}
            except ValueError:
                info = {}
            sessions = dict(info.get("sessions") or {})
            sessions["total"] = held
            sessions["activeLastMinute"] = max(held, int(sessions.get("activeLastMinute", 0)))
            out.append(WorkerView(worker_id, held, sessions, info.get("pid"), info.get("host")))
        return ClusterView("ok", None, tuple(sorted(out, key=lambda w: w.id)))

    async def prometheus(self, local: bytes) -> bytes:
        texts = {self.worker_id: local.decode()}
        for worker_id, _, text in await self._workers("prom") or []:
            if worker_id != self.worker_id and text:
                texts[worker_id] = text
        return merge(texts).encode()


_REASONS = {"hang_up": "hung up by the server API", "take_over": "resumed elsewhere"}
