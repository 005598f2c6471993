"""One process, no Redis: today's behaviour. Capacity is the process's own
``max_sessions`` (checked by Sessions), hang-ups reach only local calls, conversations
wait for a reconnect in memory, resume tokens are signed with a per-process secret
unless ``SANDRA_RESUME_SECRET`` is set."""

from __future__ import annotations

import os
import secrets
import socket
import time

from ..config import Config
from .snapshot import Snapshot
from .stores import MemoryConversationStore
from .tokens import ResumeTokens
from .view import ClusterView, Owner, WorkerView


class LocalCluster:
    redis = False

    def __init__(self, config: Config) -> None:
        self.worker_id = f"{socket.gethostname()}:{os.getpid()}"
        self.conversations = MemoryConversationStore()
        secret = config.secrets.resume_secret
        self._tokens = ResumeTokens(secret.encode() if secret else secrets.token_bytes(32), config.server.session_ttl_s)
        self._owner: Owner | None = None

    async def start(self, owner: Owner) -> None:
        self._owner = owner

    async def aclose(self) -> None:
        pass

    async def admit(self, session_id: str, max_sessions: int) -> None:
        pass  # Sessions already holds this process to max_sessions

    async def release(self, session_id: str) -> None:
        pass

    async def hang_up(self, session_id: str) -> bool:
        return False  # no other worker: Sessions looked at its own calls already

    async def take_over(self, session_id: str) -> None:
        pass

    async def tokens(self) -> ResumeTokens:
        return self._tokens

    def changed(self, session_id: str, snapshot: Snapshot, ttl_s: float) -> None:
        self.conversations.put(session_id, snapshot, ttl_s)

    async def flush(self, session_id: str) -> None:
        pass

    async def forget_conversation(self, session_id: str) -> None:
        await self.conversations.delete(session_id)

    async def view(self) -> ClusterView:
        assert self._owner is not None
        summary = self._owner.summary()
        me = WorkerView(self.worker_id, summary["total"], summary, os.getpid(), socket.gethostname(), True)
        return ClusterView("ok", None, (me,), redis=False)

    async def prometheus(self, local: bytes) -> bytes:
        return local

    def now(self) -> float:
        return time.time()
