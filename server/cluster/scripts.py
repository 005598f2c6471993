"""The Lua scripts that make the registry atomic. Each runs inside Redis as one step, on
Redis's own clock (``TIME``), so workers on different machines agree on what is alive.

Keys (``P`` = ``[cluster] key_prefix``)::

    P:workers            zset   worker id -> heartbeat expiry (ms); alive while > now
    P:worker:<w>         hash   info (JSON summary), prom (Prometheus text); expires
    P:wsessions:<w>      set    session ids held by worker w (counted only while w is alive)
    P:session:<s>        hash   worker, created
    P:conv:<s>           string conversation snapshot (JSON), expires with the session
    P:secret             string the cluster's resume-token secret (when none is configured)
    P:limit:*            rate-limit buckets and capped sets (limits.py)
    channel P:ch:<w>     worker w's requests (hang_up, take_over) and replies

Scripts name keys they build from ``P`` themselves (a dead worker's set): fine on one
Redis or a primary with replicas, not on Redis Cluster (sharded), which Sandra does not use.
"""

from __future__ import annotations

_NOW = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
"""

# Forget dead workers: their session sets go, so their slots are free again.
_SWEEP = """
local dead = redis.call('ZRANGEBYSCORE', workers, '-inf', now)
for _, w in ipairs(dead) do
  redis.call('DEL', prefix .. ':wsessions:' .. w)
  redis.call('ZREM', workers, w)
end
"""

# KEYS: workers, own set, session hash
# ARGV: prefix, worker, session, max_sessions, session ttl ms, worker ttl ms, set ttl ms
# -> sessions in the cluster with this one, -1 when full, -2 when another live worker holds it
ADMIT = _NOW + """
local workers, prefix = KEYS[1], ARGV[1]
""" + _SWEEP + """
redis.call('ZADD', workers, now + tonumber(ARGV[6]), ARGV[2])
local holder = redis.call('HGET', KEYS[3], 'worker')
if holder and holder ~= ARGV[2] and redis.call('SISMEMBER', prefix .. ':wsessions:' .. holder, ARGV[3]) == 1 then
  local expiry = redis.call('ZSCORE', workers, holder)
  if expiry and tonumber(expiry) > now then return -2 end  -- live elsewhere: one connection per session
end
local total = 0
for _, w in ipairs(redis.call('ZRANGE', workers, 0, -1)) do
  total = total + redis.call('SCARD', prefix .. ':wsessions:' .. w)
end
if redis.call('SISMEMBER', KEYS[2], ARGV[3]) == 1 then return total end
if total >= tonumber(ARGV[4]) then return -1 end
redis.call('SADD', KEYS[2], ARGV[3])
redis.call('PEXPIRE', KEYS[2], ARGV[7])
redis.call('HSET', KEYS[3], 'worker', ARGV[2], 'created', now)
redis.call('PEXPIRE', KEYS[3], ARGV[5])
return total + 1
"""

# KEYS: own set; ARGV: prefix, worker, session ids...  (a session moved elsewhere stays there)
RELEASE = """
for i = 3, #ARGV do
  redis.call('SREM', KEYS[1], ARGV[i])
  local key = ARGV[1] .. ':session:' .. ARGV[i]
  if redis.call('HGET', key, 'worker') == ARGV[2] then redis.call('DEL', key) end
end
return 1
"""

# KEYS: workers, own set, own info hash, secret
# ARGV: prefix, worker, worker ttl ms, set ttl ms, session ttl ms, info json, prom text,
#       secret ('' for none), then the live session ids
# Re-asserts everything this worker holds, so a restarted (empty) Redis is refilled.
HEARTBEAT = _NOW + """
local workers, prefix = KEYS[1], ARGV[1]
""" + _SWEEP + """
redis.call('ZADD', workers, now + tonumber(ARGV[3]), ARGV[2])
redis.call('HSET', KEYS[3], 'info', ARGV[6], 'prom', ARGV[7])
redis.call('PEXPIRE', KEYS[3], ARGV[3])
for i = 9, #ARGV do
  local key = prefix .. ':session:' .. ARGV[i]
  local owner = redis.call('HGET', key, 'worker')
  if not owner then
    redis.call('HSET', key, 'worker', ARGV[2], 'created', now)
    redis.call('PEXPIRE', key, ARGV[5])
    owner = ARGV[2]
  end
  if owner == ARGV[2] then redis.call('SADD', KEYS[2], ARGV[i]) end
end
redis.call('PEXPIRE', KEYS[2], ARGV[4])
if ARGV[8] ~= '' then redis.call('SET', KEYS[4], ARGV[8], 'NX') end
return now
"""

# KEYS: workers; ARGV: prefix, field ('info' or 'prom')
# -> flat list: worker, sessions held, field value, ...
VIEW = _NOW + """
local out = {}
for _, w in ipairs(redis.call('ZRANGEBYSCORE', KEYS[1], '(' .. now, '+inf')) do
  out[#out + 1] = w
  out[#out + 1] = redis.call('SCARD', ARGV[1] .. ':wsessions:' .. w)
  out[#out + 1] = redis.call('HGET', ARGV[1] .. ':worker:' .. w, ARGV[2]) or ''
end
return out
"""

# KEYS: workers, session hash -> the live worker holding the session, or false
OWNER = _NOW + """
local w = redis.call('HGET', KEYS[2], 'worker')
if not w then return false end
local expiry = redis.call('ZSCORE', KEYS[1], w)
if expiry and tonumber(expiry) > now then return w end
return false
"""
