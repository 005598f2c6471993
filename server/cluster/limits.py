"""A rate-limit store in Redis, shared by every worker. Atomic (one Lua script per call).

The same interface as ``server.security.limits.MemoryLimitStore`` (issue 11), so either
can be plugged in::

    class LimitStore(Protocol):
        async def take(self, key: str, rate_per_s: float, burst: float) -> float: ...
        async def acquire(self, key: str, member: str, limit: int) -> bool: ...
        async def release(self, key: str, member: str) -> None: ...
        async def count(self, key: str) -> int: ...

``take`` is a token bucket (``0.0``: allowed, one token taken; else the seconds until one
is available). ``acquire`` adds ``member`` to a set capped at ``limit`` (a guest link's
``max_calls``); each member remembers the worker that added it and counts only while that
worker's heartbeat is alive, so a killed worker's members expire with it. Keys live under
``<prefix>:limit:``. Redis errors surface as :class:`ClusterUnavailable`.
"""

from __future__ import annotations

import asyncio
from typing import Any

from .errors import ClusterUnavailable

_NOW_S = """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
"""

# KEYS: bucket; ARGV: rate per s, burst -> seconds to wait (string), '0' when a token was taken
TAKE = _NOW_S + """
local rate, burst = tonumber(ARGV[1]), tonumber(ARGV[2])
local b = redis.call('HMGET', KEYS[1], 'tokens', 'ts')
local tokens = tonumber(b[1]) or burst
local ts = tonumber(b[2]) or now
if now > ts then tokens = math.min(burst, tokens + (now - ts) * rate) end
local wait = 0
if tokens >= 1 then tokens = tokens - 1 else wait = (1 - tokens) / rate end
redis.call('HSET', KEYS[1], 'tokens', string.format('%.17g', tokens), 'ts', string.format('%.17g', math.max(now, ts)))
redis.call('PEXPIRE', KEYS[1], math.ceil(burst / rate * 1000) + 1000)
return string.format('%.17g', wait)
"""

# Drop members whose worker is dead; `live` = members left.
_LIVE = _NOW_S + """
local now_ms = now * 1000
local live = 0
local fields = redis.call('HGETALL', KEYS[1])
for i = 1, #fields, 2 do
  local w = fields[i + 1]
  local expiry = (w == ARGV[1]) and (now_ms + 1) or tonumber(redis.call('ZSCORE', KEYS[2], w))
  if expiry and expiry > now_ms then live = live + 1 else redis.call('HDEL', KEYS[1], fields[i]) end
end
"""

# KEYS: capped set (hash member -> worker), workers zset; ARGV: worker, member, limit -> 1 | 0
ACQUIRE = _LIVE + """
if redis.call('HEXISTS', KEYS[1], ARGV[2]) == 1 then return 1 end
if live >= tonumber(ARGV[3]) then return 0 end
redis.call('HSET', KEYS[1], ARGV[2], ARGV[1])
return 1
"""

# KEYS: capped set, workers zset; ARGV: worker -> live members
COUNT = _LIVE + """
return live
"""


class RedisLimitStore:
    def __init__(self, redis: Any, *, prefix: str, worker_id: str, timeout_s: float = 1.0) -> None:
        self._redis = redis
        self._prefix = prefix
        self._worker = worker_id
        self._timeout = timeout_s
        self._workers = f"{prefix}:workers"
        self._take = redis.register_script(TAKE)
        self._acquire = redis.register_script(ACQUIRE)
        self._count = redis.register_script(COUNT)

    def _key(self, kind: str, key: str) -> str:
        return f"{self._prefix}:limit:{kind}:{key}"

    async def _run(self, call: Any) -> Any:
        from redis.exceptions import RedisError

        try:
            return await asyncio.wait_for(call, self._timeout)
        except (RedisError, OSError, TimeoutError) as exc:
            raise ClusterUnavailable(f"Redis did not answer: {type(exc).__name__}") from exc

    async def take(self, key: str, rate_per_s: float, burst: float) -> float:
        if rate_per_s <= 0 or burst < 1:
            raise ValueError("a token bucket needs rate_per_s > 0 and burst >= 1")
        wait = await self._run(self._take(keys=[self._key("bucket", key)], args=[rate_per_s, burst]))
        return max(0.0, float(wait))

    async def acquire(self, key: str, member: str, limit: int) -> bool:
        keys = [self._key("set", key), self._workers]
        return bool(await self._run(self._acquire(keys=keys, args=[self._worker, member, limit])))

    async def release(self, key: str, member: str) -> None:
        await self._run(self._redis.hdel(self._key("set", key), member))

    async def count(self, key: str) -> int:
        return int(await self._run(self._count(keys=[self._key("set", key), self._workers], args=[self._worker])))
