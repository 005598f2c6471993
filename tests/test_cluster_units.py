"""The cluster's pure parts, its Redis stores and scripts against a real redis-server, and
resuming a conversation in one process without Redis. (Several workers: test_cluster.py.)"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
import redis.asyncio as aioredis
from prometheus_client.parser import text_string_to_metric_families

from server import config as configuration
from server.cluster import ResumeError, ResumeTokens, SessionBusy, Snapshot
from server.cluster.limits import RedisLimitStore
from server.cluster.prometheus import merge
from server.cluster.redis_cluster import RedisCluster
from server.cluster.snapshot import Said
from server.cluster.supervisor import PrivateRedis
from server.errors import CapacityError, ConfigError
from server.metrics import Metrics
from tests.conftest import make_config

ROOT = Path(__file__).resolve().parent.parent


# --- pure ------------------------------------------------------------------------------


def test_resume_tokens_are_bound_to_the_session_and_expire():
    tokens = ResumeTokens(b"0123456789abcdef-secret", ttl_s=60)
    token = tokens.issue("sess-1", now=1000.0)
    assert tokens.verify(token, now=1059.0).session_id == "sess-1"
    assert "sess-1" not in token  # opaque
    with pytest.raises(ResumeError, match="expired"):
        tokens.verify(token, now=1060.0)
    payload, _, signature = token.partition(".")
    forged = ResumeTokens(b"0123456789abcdef-secret", ttl_s=60).issue("sess-2", now=1000.0).partition(".")[0]
    with pytest.raises(ResumeError, match="signature"):
        tokens.verify(f"{forged}.{signature}", now=1001.0)  # another session, the first one's signature
    with pytest.raises(ResumeError, match="signature"):
        ResumeTokens(b"another-secret-0123456789", ttl_s=60).verify(token, now=1001.0)
    for junk in ("", "abc", "a.b", "." * 600):
        with pytest.raises(ResumeError):
            tokens.verify(junk, now=1001.0)
    again = tokens.issue("sess-1", now=1030.0, expires_ms=tokens.verify(token, now=1001.0).expires_ms)
    with pytest.raises(ResumeError, match="expired"):
        tokens.verify(again, now=1060.0)  # a resumed session keeps its first expiry


def test_snapshots_round_trip_and_reject_junk():
    snap = Snapshot("es", (Said("user", "Hola, soy Ana"), Said("assistant", "Hola Ana, ¿qué", True)), 4, "guest-7")
    assert Snapshot.from_json(snap.to_json()) == snap
    for junk in ("[]", '{"language": 3}', '{"language": "en", "history": [{"role": "system"}]}',
                 '{"language": "en", "turn_id": -1}', "not json"):
        with pytest.raises(ValueError):
            Snapshot.from_json(junk)


def test_prometheus_merge_labels_every_worker_and_stays_parseable():
    texts = {}
    for worker, turns in (("a:1", 2), ("b:2", 5)):
        metrics = Metrics()
        for _ in range(turns):
            metrics.turns.labels("voice").inc()
        metrics.observe_turn({"stt_ms": 12.0 * turns})
        metrics.connections.set(turns)
        texts[worker] = metrics.prometheus().decode()
    merged = merge(texts)
    families = {f.name: f for f in text_string_to_metric_families(merged)}
    turns = {s.labels["worker"]: s.value for s in families["sandra_turns"].samples if s.name == "sandra_turns_total"}
    assert turns == {"a:1": 2.0, "b:2": 5.0}
    gauges = {s.labels["worker"]: s.value for s in families["sandra_connections"].samples}
    assert gauges == {"a:1": 2.0, "b:2": 5.0}
    stt = [s for s in families["sandra_stt_milliseconds"].samples if s.name.endswith("_count")]
    assert sorted(s.value for s in stt) == [1.0, 1.0]
    assert merged.count("# TYPE sandra_turns_total counter") == 1


def test_cluster_configuration():
    assert configuration.load(None, {}).cluster.active is False
    cfg = configuration.load(ROOT / "config.toml", {"REDIS_URL": "redis://127.0.0.1:6390/2"})
    assert cfg.cluster.redis_url == "redis://127.0.0.1:6390/2" and cfg.cluster.active
    off = configuration.load(None, {"REDIS_URL": "redis://127.0.0.1:6390/2", "REDIS_ENABLED": "False"})
    assert off.cluster.active is False
    assert configuration.load(None, {"SANDRA_RESUME_SECRET": "s3cret-value"}).secrets.resume_secret == "s3cret-value"
    assert "s3cret" not in repr(configuration.load(None, {"SANDRA_RESUME_SECRET": "s3cret-value"}))
    with pytest.raises(ConfigError, match="REDIS_URL"):
        configuration.load(None, {"REDIS_ENABLED": "true"})
    with pytest.raises(ConfigError, match="redis_url"):
        configuration.load(None, {"REDIS_URL": "http://127.0.0.1:6379"})
    with pytest.raises(ConfigError, match="heartbeat_ttl_s"):
        configuration.load(None, {}, cluster={"heartbeat_s": 3, "heartbeat_ttl_s": 2})


def test_workers_without_redis_are_refused_clearly():
    done = subprocess.run(
        [sys.executable, "-m", "server", "--workers", "2", "--port", "1", "--config", str(ROOT / "config.toml")],
        cwd=ROOT, capture_output=True, text=True, timeout=60,
        env={"PATH": "/usr/bin:/bin", "REDIS_ENABLED": "false", "SANDRA_STT_PROVIDER": "scripted",
             "SANDRA_LLM_PROVIDER": "scripted", "SANDRA_TTS_PROVIDER": "scripted"},
    )
    assert done.returncode == 2, done.stderr
    assert "--workers > 1 needs Redis" in done.stderr and "Traceback" not in done.stderr


# --- against a real redis-server --------------------------------------------------------


@pytest.fixture(scope="module")
def redis_server() -> Iterator[PrivateRedis]:
    with PrivateRedis() as server:
        yield server


@pytest.fixture
async def redis(redis_server: PrivateRedis) -> AsyncIterator[aioredis.Redis]:
    client = aioredis.Redis.from_url(redis_server.url, decode_responses=True)
    await client.flushdb()
    yield client
    await client.aclose()


async def test_token_bucket_is_atomic_under_concurrency(redis):
    stores = [RedisLimitStore(redis, prefix="t", worker_id=f"w{i}", timeout_s=10) for i in range(3)]
    waits = await asyncio.gather(*(stores[i % 3].take("ip:1", rate_per_s=0.5, burst=10) for i in range(40)))
    assert sum(1 for w in waits if w == 0.0) == 10
    refused = [w for w in waits if w > 0]
    assert len(refused) == 30 and all(0 < w <= 2.0 for w in refused)  # one token every 2 s
    assert await stores[0].take("ip:2", rate_per_s=0.5, burst=10) == 0.0  # buckets are per key
    fast = RedisLimitStore(redis, prefix="t", worker_id="w9", timeout_s=10)
    assert await fast.take("ip:3", rate_per_s=50, burst=1) == 0.0
    wait = await fast.take("ip:3", rate_per_s=50, burst=1)
    assert 0 < wait <= 0.02
    await asyncio.sleep(wait + 0.01)
    assert await fast.take("ip:3", rate_per_s=50, burst=1) == 0.0
    with pytest.raises(ValueError):
        await fast.take("ip:4", rate_per_s=0, burst=1)


async def test_capped_sets_hold_their_limit_and_forget_dead_workers(redis):
    alive = RedisLimitStore(redis, prefix="t", worker_id="alive", timeout_s=10)
    doomed = RedisLimitStore(redis, prefix="t", worker_id="doomed", timeout_s=10)
    results = await asyncio.gather(*(doomed.acquire("guest:7", f"call-{i}", 3) for i in range(20)))
    assert results.count(True) == 3
    assert await alive.count("guest:7") == 0  # "doomed" never sent a heartbeat: its members don't count
    await redis.flushdb()
    t = await redis.time()
    now_ms = t[0] * 1000 + t[1] // 1000
    await redis.zadd("t:workers", {"doomed": now_ms + 400})  # a heartbeat that lapses in 0.4 s
    assert await doomed.acquire("guest:7", "call-a", 2) and await doomed.acquire("guest:7", "call-b", 2)
    assert await alive.acquire("guest:7", "call-c", 2) is False
    assert await alive.count("guest:7") == 2
    assert await doomed.acquire("guest:7", "call-a", 2) is True  # already in: still True
    await asyncio.sleep(0.5)
    assert await alive.count("guest:7") == 0  # the worker died: its calls no longer count
    assert await alive.acquire("guest:7", "call-c", 2) is True
    await alive.release("guest:7", "call-c")
    assert await alive.count("guest:7") == 0


class _Owner:
    def __init__(self) -> None:
        self.ids: list[str] = []
        self.ended: list[tuple[str, str]] = []

    def session_ids(self) -> list[str]:
        return list(self.ids)

    def summary(self) -> dict[str, int]:
        n = len(self.ids)
        return {"total": n, "authenticated": 0, "activeCalls": n, "activeLastMinute": n}

    def prometheus(self) -> bytes:
        return Metrics().prometheus()

    async def end_call(self, session_id: str, reason: str) -> bool:
        if session_id not in self.ids:
            return False
        self.ids.remove(session_id)
        self.ended.append((session_id, reason))
        return True


async def test_admission_never_over_admits_across_workers(redis_server, redis):
    config = make_config(cluster={"redis_url": redis_server.url, "heartbeat_s": 0.5, "heartbeat_ttl_s": 5, "redis_timeout_s": 5})
    workers = [RedisCluster(config, worker_id=f"w{i}") for i in range(3)]
    owners = [_Owner() for _ in workers]
    for worker, owner in zip(workers, owners):
        await worker.start(owner)
    try:
        async def offer(i: int) -> str:
            worker = workers[i % 3]
            try:
                await worker.admit(f"s{i}", 7)
            except CapacityError:
                return "full"
            owners[i % 3].ids.append(f"s{i}")
            return "in"

        outcomes = await asyncio.gather(*(offer(i) for i in range(30)))
        assert outcomes.count("in") == 7
        view = await workers[0].view()
        assert view.status == "ok" and view.connections == 7 and len(view.workers) == 3
        # a hang-up through another worker reaches the owner
        victim = owners[1].ids[0]
        assert await workers[2].hang_up(victim) is True
        assert owners[1].ended == [(victim, "hung up by the server API")]
        await workers[1].release(victim)
        assert await workers[0].hang_up(victim) is False
        assert (await workers[0].view()).connections == 6
        # one live connection per session: a session held by a live worker cannot be admitted again
        with pytest.raises(SessionBusy):
            await workers[1].admit(owners[0].ids[0], 100)
        # ... unless that worker no longer listens (killed, its heartbeat not lapsed yet): a
        # take-over finds nobody to ask, and lets the session go on elsewhere
        ghost = RedisCluster(config, worker_id="ghost")
        await ghost.admit("g1", 100)
        with pytest.raises(SessionBusy):
            await workers[0].admit("g1", 100)
        await workers[0].take_over("g1")
        await workers[0].admit("g1", 100)
        await workers[0].release("g1")
        await ghost._redis.aclose()
        # a worker that leaves takes its sessions with it, freeing their slots
        gone = len(owners[2].ids)
        await workers[2].aclose()
        workers.pop()
        assert (await workers[0].view()).connections == 6 - gone
        await workers[0].admit("late", 7)
    finally:
        for worker in workers:
            await worker.aclose()


async def test_resume_tokens_share_one_secret_across_workers(redis_server, redis):
    config = make_config(cluster={"redis_url": redis_server.url})
    a, b = RedisCluster(config, worker_id="a"), RedisCluster(config, worker_id="b")
    try:
        token = (await a.tokens()).issue("s1", now=1000.0)
        assert (await b.tokens()).verify(token, now=1001.0).session_id == "s1"
        assert "s1" not in json.dumps(await redis.keys("*:secret"))
    finally:
        await a._redis.aclose()
        await b._redis.aclose()


# --- one process, no Redis ---------------------------------------------------------------


async def test_resume_in_one_process_continues_the_conversation(server_factory, peer_factory):
    from tests.test_cluster import offer_with  # the same offer helper as the cluster tests

    async with server_factory(scripted={"reply": "Vale, Ana."}) as server:
        await _resume_in_one_process(server, peer_factory, offer_with)


async def _resume_in_one_process(server, peer_factory, offer_with) -> None:  # type: ignore[no-untyped-def]
    first = await peer_factory(server)
    first.send({"type": "call:start", "language": "es", "id": 1})
    started = await first.wait_for("call:started")
    assert started.get("resumed") is None and started["resume_token"]
    first.send({"type": "message", "text": "Me llamo Ana"})  # cuts the greeting short
    done = await first.wait_for("response:done", lambda e: e["text"] == "Vale, Ana.")
    history = [(m.role, m.text) for m in server.sessions.calls[first.session_id].history]
    first_created = server.sessions.calls[first.session_id].created_at
    await asyncio.sleep(1.0)  # so that a reconnect's fresh clock would show

    second = await offer_with(server.url, resume_token=started["resume_token"])
    try:
        assert second.session_id == first.session_id
        await first.wait_for("call:ended")  # one live connection per session
        second.send({"type": "call:start", "id": 2})
        again = await second.wait_for("call:started")
        assert again["resumed"] is True and again["language"] == "es"
        call = server.sessions.calls[second.session_id]
        assert [(m.role, m.text) for m in call.history] == history
        assert abs(call.created_at - first_created) < 0.5  # session_ttl_s counts from the first call
        second.send({"type": "message", "text": "¿Cómo me llamo?"})
        await second.wait_for("response:done")
        turns = [e["turn_id"] for e in second.events if e["type"] == "response:done"]
        assert turns == [done["turn_id"] + 1]  # no second greeting; numbering goes on
        second.send({"type": "call:end"})
        await second.wait_for("call:ended")
    finally:
        await second.close()
    status, body = await _post(server.url, {"sdp": "v=0", "type": "offer", "resume_token": started["resume_token"]})
    assert status == 400 and body["error"]["code"] == "invalid_resume_token"  # the caller hung up: over
    status, body = await _post(server.url, {"sdp": "v=0", "type": "offer", "resume_token": "forged.token"})
    assert status == 400 and body["error"]["code"] == "invalid_resume_token"


async def _post(url: str, body: dict) -> tuple[int, dict]:
    import aiohttp

    async with aiohttp.ClientSession() as http, http.post(f"{url}/api/offer", json=body) as r:
        return r.status, await r.json()
