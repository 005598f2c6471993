"""Beyond one process: the cluster's view of calls, shared limits, resumable conversations.

``create(config)`` gives this worker's cluster: :class:`~.local.LocalCluster` (one
process, memory: today's behaviour) or, with ``[cluster] redis_url`` / ``REDIS_URL``,
:class:`~.redis_cluster.RedisCluster`. ``server.sessions.Sessions`` is its only user and
its :class:`~.view.Owner`. Both offer::

    worker_id: str; redis: bool; conversations: ConversationStore
    async start(owner) / aclose()
    async admit(session_id, max_sessions)      # CapacityError | SessionBusy | ClusterUnavailable
    async release(session_id)                  # never raises; retried by the heartbeat
    async hang_up(session_id) -> bool          # a call held by another worker
    async take_over(session_id)                # close a resumed session's old connection
    async tokens() -> ResumeTokens             # sign / verify resume tokens
    changed(session_id, snapshot, ttl_s)       # a conversation changed (sync, coalesced)
    async flush(session_id) / forget_conversation(session_id)
    async view() -> ClusterView                # /api/health, /api/metrics
    async prometheus(local_text) -> bytes      # /metrics, every worker labelled

Also here: :class:`~.limits.RedisLimitStore` (issue 11's ``LimitStore`` in Redis),
:mod:`~.snapshot` (the conversation snapshot and the bridge to the call core),
:mod:`~.supervisor` (``--workers N``: the parent process).
"""

from __future__ import annotations

from ..config import Config
from .errors import ClusterUnavailable, ResumeError, SessionBusy
from .local import LocalCluster
from .snapshot import Snapshot, of_call, restore
from .tokens import ResumeTokens
from .view import ClusterView, Owner, WorkerView

# Close reasons after which a conversation cannot be resumed (the others — a lost
# connection, a silent peer, a server shutting down, a takeover — leave it waiting).
FINAL_REASONS = frozenset({"caller hung up", "hung up by the server API", "session ttl"})

__all__ = [
    "FINAL_REASONS", "ClusterUnavailable", "ClusterView", "LocalCluster", "Owner", "ResumeError", "ResumeTokens",
    "SessionBusy", "Snapshot", "WorkerView", "create", "of_call", "restore",
]


def create(config: Config):  # type: ignore[no-untyped-def]
    """This worker's cluster, from ``[cluster]``."""
    if config.cluster.active:
        from .redis_cluster import RedisCluster

        return RedisCluster(config)
    return LocalCluster(config)
