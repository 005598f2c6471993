"""What /api/health and /api/metrics show of the cluster. Pure values."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol

SUMMARY_KEYS = ("total", "authenticated", "activeCalls", "activeLastMinute")


class Owner(Protocol):
    """What the cluster needs from this worker's calls (``server.sessions.Sessions``)."""

    def session_ids(self) -> list[str]: ...
    def summary(self) -> dict[str, int]: ...
    def prometheus(self) -> bytes: ...
    async def end_call(self, session_id: str, reason: str) -> bool: ...


@dataclass(frozen=True)
class WorkerView:
    id: str
    connections: int
    sessions: dict[str, int] = field(default_factory=dict)
    pid: int | None = None
    host: str | None = None
    this: bool = False  # the worker answering the request

    def to_json(self) -> dict[str, Any]:
        return {"id": self.id, "pid": self.pid, "host": self.host, "connections": self.connections,
                "sessions": self.sessions, "self": self.this}


@dataclass(frozen=True)
class ClusterView:
    status: str  # "ok" | "degraded"
    reason: str | None
    workers: tuple[WorkerView, ...]
    redis: bool = True

    @property
    def connections(self) -> int:
        return sum(w.connections for w in self.workers)

    def sessions(self) -> dict[str, int]:
        return {key: sum(w.sessions.get(key, 0) for w in self.workers) for key in SUMMARY_KEYS}

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"status": self.status, "workers": [w.to_json() for w in self.workers]}
        if self.reason:
            out["reason"] = self.reason
        return out
