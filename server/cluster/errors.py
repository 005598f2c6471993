"""The cluster's errors (both :class:`~server.errors.SandraError`)::

    SandraError
    ├── ClusterUnavailable   Redis cannot be reached in time (HTTP 503 cluster_unavailable)
    ├── ResumeError          a resume token that is bad, expired or whose conversation is gone
    │                        (HTTP 400 invalid_resume_token)
    └── SessionBusy          the session went live on another connection meanwhile (HTTP 409)
"""

from __future__ import annotations

from ..errors import SandraError


class ClusterUnavailable(SandraError):
    pass


class ResumeError(SandraError):
    pass


class SessionBusy(SandraError):
    pass
