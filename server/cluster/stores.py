"""Conversation stores: where a call's :class:`Snapshot` waits for a reconnect.

One interface, two homes: :class:`MemoryConversationStore` (one process) and
:class:`RedisConversationStore` (``<prefix>:conv:<session>``, expiring with the session)::

    class ConversationStore(Protocol):
        async def save(self, session_id: str, snapshot: Snapshot, ttl_s: float) -> None: ...
        async def load(self, session_id: str) -> Snapshot | None: ...
        async def delete(self, session_id: str) -> None: ...
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any, Protocol

from .errors import ClusterUnavailable
from .snapshot import Snapshot

log = logging.getLogger("sandra.cluster")


class ConversationStore(Protocol):
    async def save(self, session_id: str, snapshot: Snapshot, ttl_s: float) -> None: ...
    async def load(self, session_id: str) -> Snapshot | None: ...
    async def delete(self, session_id: str) -> None: ...


class MemoryConversationStore:
    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._items: dict[str, tuple[float, Snapshot]] = {}

    def put(self, session_id: str, snapshot: Snapshot, ttl_s: float) -> None:
        now = self._clock()
        if len(self._items) > 64:
            self._items = {k: v for k, v in self._items.items() if v[0] > now}
        self._items[session_id] = (now + ttl_s, snapshot)

    async def save(self, session_id: str, snapshot: Snapshot, ttl_s: float) -> None:
        self.put(session_id, snapshot, ttl_s)

    async def load(self, session_id: str) -> Snapshot | None:
        item = self._items.get(session_id)
        if item is None or item[0] <= self._clock():
            self._items.pop(session_id, None)
            return None
        return item[1]

    async def delete(self, session_id: str) -> None:
        self._items.pop(session_id, None)


class RedisConversationStore:
    def __init__(self, redis: Any, prefix: str) -> None:
        self._redis = redis
        self._prefix = prefix

    def key(self, session_id: str) -> str:
        return f"{self._prefix}:conv:{session_id}"

    async def save(self, session_id: str, snapshot: Snapshot, ttl_s: float) -> None:
        await self._redis.set(self.key(session_id), snapshot.to_json(), px=max(1, int(ttl_s * 1000)))

    async def load(self, session_id: str) -> Snapshot | None:
        from redis.exceptions import RedisError

        try:
            raw = await self._redis.get(self.key(session_id))
        except (RedisError, OSError) as exc:
            raise ClusterUnavailable(f"Redis did not answer: {type(exc).__name__}") from exc
        if raw is None:
            return None
        try:
            return Snapshot.from_json(raw)
        except ValueError:
            log.warning("conversation %s: unreadable snapshot dropped", session_id)
            return None

    async def delete(self, session_id: str) -> None:
        await self._redis.delete(self.key(session_id))
