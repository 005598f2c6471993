"""Rate limits: token buckets and capped sets behind one small storage interface.

:class:`LimitStore` is what the HTTP edge uses (offers per client IP, concurrent calls per
guest ``sub``); :class:`MemoryLimitStore` keeps them in this process, a Redis-backed store
implements the same four methods for a cluster. :class:`MessageLimits` is the per-call,
in-process limit on datachannel messages (pure: the time is passed in).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol


class LimitStore(Protocol):
    async def take(self, key: str, rate_per_s: float, burst: float) -> float:
        """Token bucket: 0.0 = allowed (one token taken), else seconds until one is available."""
        ...

    async def acquire(self, key: str, member: str, limit: int) -> bool:
        """Add ``member`` to the set ``key`` capped at ``limit``; False if full (True if already in)."""
        ...

    async def release(self, key: str, member: str) -> None: ...

    async def count(self, key: str) -> int: ...


@dataclass
class TokenBucket:
    """``burst`` tokens at most, refilled at ``rate_per_s``; starts full at ``at``."""

    rate_per_s: float
    burst: float
    tokens: float
    at: float

    @classmethod
    def full(cls, rate_per_s: float, burst: float, at: float) -> TokenBucket:
        return cls(rate_per_s, burst, burst, at)

    def _refill(self, now: float) -> None:
        if now > self.at:
            self.tokens = min(self.burst, self.tokens + (now - self.at) * self.rate_per_s)
            self.at = now

    def take(self, now: float) -> float:
        """0.0 and one token taken, or the seconds until a token is available."""
        self._refill(now)
        if self.tokens >= 1.0:
            self.tokens -= 1.0
            return 0.0
        if self.rate_per_s <= 0:
            return float("inf")
        return (1.0 - self.tokens) / self.rate_per_s

    def idle(self, now: float) -> bool:
        """Full again: forgetting it changes nothing."""
        self._refill(now)
        return self.tokens >= self.burst


class MemoryLimitStore:
    """:class:`LimitStore` in this process. Buckets that have refilled are forgotten (swept
    every ``sweep_s``), empty sets are dropped, so memory follows the active keys only."""

    def __init__(self, clock: Callable[[], float] = time.monotonic, sweep_s: float = 60.0) -> None:
        self._clock = clock
        self._sweep_s = sweep_s
        self._swept_at = clock()
        self._buckets: dict[str, TokenBucket] = {}
        self._sets: dict[str, set[str]] = {}

    def __len__(self) -> int:
        return len(self._buckets) + len(self._sets)

    def _sweep(self, now: float) -> None:
        if now - self._swept_at >= self._sweep_s:
            self._swept_at = now
            self._buckets = {k: b for k, b in self._buckets.items() if not b.idle(now)}

    async def take(self, key: str, rate_per_s: float, burst: float) -> float:
        now = self._clock()
        self._sweep(now)
        bucket = self._buckets.get(key)
        if bucket is None or bucket.rate_per_s != rate_per_s or bucket.burst != burst:
            bucket = self._buckets[key] = TokenBucket.full(rate_per_s, burst, now)
        return bucket.take(now)

    async def acquire(self, key: str, member: str, limit: int) -> bool:
        members = self._sets.setdefault(key, set())
        if member in members:
            return True
        if len(members) >= limit:
            return False
        members.add(member)
        return True

    async def release(self, key: str, member: str) -> None:
        members = self._sets.get(key)
        if members is not None:
            members.discard(member)
            if not members:
                del self._sets[key]

    async def count(self, key: str) -> int:
        return len(self._sets.get(key, ()))


class MessageLimits:
    """Datachannel limits of one call: every message (``per_second``, burst twice that) and
    typed messages (``typed_per_minute``). ``flooding_since`` is when the current flood began:
    drops with less than ``gap_s`` between them are one flood; :meth:`flooded` says when it
    has lasted ``close_after_s``."""

    def __init__(
        self, now: float, *, per_second: float = 20.0, typed_per_minute: float = 12.0, close_after_s: float = 10.0,
        gap_s: float = 1.0,
    ) -> None:
        self._messages = TokenBucket.full(per_second, 2 * per_second, now)
        self._typed = TokenBucket.full(typed_per_minute / 60.0, typed_per_minute, now)
        self.close_after_s = close_after_s
        self.gap_s = gap_s
        self.flooding_since: float | None = None
        self._last_drop: float | None = None
        self.dropped = 0

    def allow_message(self, at: float) -> bool:
        if self._messages.take(at) == 0.0:
            if self._last_drop is not None and at - self._last_drop > self.gap_s:
                self.flooding_since = None
            return True
        self.dropped += 1
        if self.flooding_since is None or self._last_drop is None or at - self._last_drop > self.gap_s:
            self.flooding_since = at
        self._last_drop = at
        return False

    def allow_typed(self, at: float) -> bool:
        return self._typed.take(at) == 0.0

    def flooded(self, at: float) -> bool:
        return self.flooding_since is not None and at - self.flooding_since >= self.close_after_s
