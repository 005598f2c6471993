"""Two workers behind one port (``python -m server --workers 2``) sharing a real
redis-server: cluster totals from every worker, hang-ups through every worker,
cluster-wide ``max_sessions``, a conversation resumed on the other worker, a worker
killed with SIGKILL, Redis restarted, Redis down.

SO_REUSEPORT spreads connections, not requests: :func:`pinned` opens connections until
one lands on the wanted worker (its ``/api/health`` says ``self``) and keeps using it.
The LLM is the Anthropic wire fake (tests/fakes), so what the LLM was sent can be read.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import redis.asyncio as aioredis
from aiortc import RTCSessionDescription

from bench.common import SCRIPTED_ENV, free_port
from server.media.ice import restrict_host_addresses
from server.cluster.supervisor import PrivateRedis
from tests.browser.conftest import close_page, events, now, open_page, wait_event
from tests.browser.conftest import fake_mics  # noqa: F401 (a fixture)
from tests.browser.engines import launch_chromium
from tests.fakes import anthropic_fake
from tests.fakes.vendors import FakeVendors
from tests.support.peer import ClientPeer

ROOT = Path(__file__).resolve().parent.parent
MAX_SESSIONS = 4
HEARTBEAT_TTL_S = 2.0


class OfferRefused(Exception):
    def __init__(self, status: int, body: dict[str, Any]) -> None:
        super().__init__(f"{status} {body}")
        self.status = status
        self.code = body.get("error", {}).get("code")


async def offer_with(url: str, *, resume_token: str | None = None,
                     http: aiohttp.ClientSession | None = None) -> ClientPeer:
    """A connected :class:`ClientPeer` whose offer went through ``http`` (a pinned
    connection) and carried ``resume_token``. Raises OfferRefused."""
    peer = ClientPeer(url)
    restrict_host_addresses(["127.0.0.1"])  # loopback candidates only (the server keeps no other)
    await peer.pc.setLocalDescription(await peer.pc.createOffer())
    body: dict[str, Any] = {"sdp": peer.pc.localDescription.sdp, "type": "offer"}
    if resume_token is not None:
        body["resume_token"] = resume_token
    session = http or aiohttp.ClientSession()
    try:
        async with session.post(f"{url}/api/offer", json=body) as response:
            status, answer = response.status, await response.json()
    finally:
        if http is None:
            await session.close()
    if status != 200:
        await peer.close()
        raise OfferRefused(status, answer)
    await peer.pc.setRemoteDescription(RTCSessionDescription(sdp=answer["sdp"], type="answer"))
    peer.session_id = answer["session_id"]
    await asyncio.wait_for(peer._open.wait(), 10)
    return peer


def blocking(coro: Any) -> Any:
    """Run ``coro`` to its end on a fresh event loop in another thread (callable from sync
    code even where a loop is already running, e.g. Playwright's sync API)."""
    outcome: dict[str, Any] = {}

    def run() -> None:
        try:
            outcome["value"] = asyncio.run(coro)
        except BaseException as exc:  # handed to the caller below
            outcome["error"] = exc

    thread = threading.Thread(target=run)
    thread.start()
    thread.join()
    if "error" in outcome:
        raise outcome["error"]
    return outcome["value"]


class ThreadedFakes:
    """The fake vendors on their own event loop in a thread, for a module-scoped cluster."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()

        async def start() -> FakeVendors:
            return await FakeVendors().__aenter__()

        self.fake = asyncio.run_coroutine_threadsafe(start(), self.loop).result(10)

    def stop(self) -> None:
        asyncio.run_coroutine_threadsafe(self.fake.__aexit__(None, None, None), self.loop).result(10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)
        self.loop.close()


@dataclass
class Cluster:
    url: str
    redis: PrivateRedis
    fakes: FakeVendors
    proc: subprocess.Popen[bytes]
    log: Path

    async def health(self, http: aiohttp.ClientSession | None = None) -> dict[str, Any]:
        return await self.get("/api/health", http)

    async def get(self, path: str, http: aiohttp.ClientSession | None = None) -> Any:
        session = http or aiohttp.ClientSession()
        try:
            async with session.get(f"{self.url}{path}", timeout=aiohttp.ClientTimeout(total=5)) as r:
                return await (r.text() if path == "/metrics" else r.json())
        finally:
            if http is None:
                await session.close()

    async def workers(self) -> list[str]:
        return [w["id"] for w in (await self.health())["cluster"]["workers"]]

    async def pinned(self, worker_id: str) -> aiohttp.ClientSession:
        """A client session whose one keep-alive connection is served by ``worker_id``."""
        for _ in range(80):
            http = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=1))
            try:
                health = await self.health(http)
                if any(w["self"] and w["id"] == worker_id for w in health.get("cluster", {}).get("workers", [])):
                    return http
            except aiohttp.ClientError:
                pass
            await http.close()
        raise AssertionError(f"no connection landed on worker {worker_id}")

    async def owner(self, session_id: str) -> str | None:
        client = aioredis.Redis.from_url(self.redis.url, decode_responses=True)
        try:
            return await client.hget(f"sandra:session:{session_id}", "worker")
        finally:
            await client.aclose()

    async def until(self, check: Any, timeout: float = 10.0, what: str = "condition") -> Any:
        deadline = time.monotonic() + timeout
        last: Any = None
        while time.monotonic() < deadline:
            try:
                last = await check()
                if last:
                    return last
            except (aiohttp.ClientError, OSError, KeyError, asyncio.TimeoutError) as exc:
                last = exc
            await asyncio.sleep(0.1)
        raise AssertionError(f"timed out waiting for {what} (last: {last!r})")


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    redis = PrivateRedis().start()
    fakes = ThreadedFakes()
    port = free_port()
    log = tmp_path_factory.mktemp("cluster") / "server.log"
    env = {
        **os.environ, **SCRIPTED_ENV,
        "SANDRA_LLM_PROVIDER": "anthropic",
        "ANTHROPIC_API_KEY": anthropic_fake.API_KEY,
        "ANTHROPIC_BASE_URL": fakes.fake.anthropic_url,
        "REDIS_URL": redis.url,
        "SANDRA_SERVER_MAX_SESSIONS": str(MAX_SESSIONS),
        "SANDRA_CLUSTER_HEARTBEAT_S": "0.5",
        "SANDRA_CLUSTER_HEARTBEAT_TTL_S": str(HEARTBEAT_TTL_S),
        "SANDRA_CLUSTER_REDIS_TIMEOUT_S": "2",  # a loaded test machine is slow, not broken
        "SANDRA_SERVER_LOG_LEVEL": "WARNING",
    }
    for key in ("CARTESIA_API_KEY", "CARTESIA_VOICE_ID", "STT_API_KEY", "OPENAI_API_KEY", "SANDRA_RESUME_SECRET"):
        env.pop(key, None)
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "server", "--workers", "2", "--port", str(port), "--config", str(ROOT / "config.toml")],
            cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT,
        )
    running = Cluster(f"http://127.0.0.1:{port}", redis, fakes.fake, proc, log)
    try:
        blocking(running.until(lambda: _two_workers(running), timeout=60, what="two workers"))
        yield running
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        redis.stop()
        fakes.stop()


async def _two_workers(cluster: Cluster) -> bool:
    health = await cluster.health()
    return health["status"] == "ok" and len(health["cluster"]["workers"]) == 2


@pytest.fixture
async def calls(cluster: Cluster) -> AsyncIterator[list[ClientPeer]]:
    """Peers opened by the test; all hung up afterwards, and the cluster seen empty again."""
    await cluster.until(lambda: _empty(cluster), what="an empty, healthy cluster")
    peers: list[ClientPeer] = []
    yield peers
    for peer in peers:
        if peer.channel is not None and peer.channel.readyState == "open":
            peer.send({"type": "call:end"})
    await asyncio.sleep(0.2)
    for peer in peers:
        await peer.close()


async def _empty(cluster: Cluster) -> bool:
    health = await cluster.health()
    return health["status"] == "ok" and health["webrtc"]["connections"] == 0 and len(health["cluster"]["workers"]) == 2


async def _open_on(cluster: Cluster, worker: str, peers: list[ClientPeer], n: int = 1) -> list[ClientPeer]:
    http = await cluster.pinned(worker)
    try:
        opened = [await offer_with(cluster.url, http=http) for _ in range(n)]
    finally:
        await http.close()
    peers.extend(opened)
    for peer in opened:
        assert await cluster.owner(peer.session_id) == worker
    return opened


async def test_every_worker_reports_the_cluster_totals(cluster, calls):
    a, b = await cluster.workers()
    await _open_on(cluster, a, calls, 2)
    await _open_on(cluster, b, calls, 1)
    for worker in (a, b):
        http = await cluster.pinned(worker)
        try:
            health = await cluster.health(http)
            metrics = await cluster.get("/api/metrics", http)
        finally:
            await http.close()
        assert health["status"] == "ok" and health["webrtc"]["connections"] == 3
        by_worker = {w["id"]: w["connections"] for w in health["cluster"]["workers"]}
        assert by_worker == {a: 2, b: 1}
        assert metrics["connections"] == 3 and metrics["sessions"]["total"] == 3
        assert {w["id"]: w["sessions"]["total"] for w in metrics["cluster"]["workers"]} == {a: 2, b: 1}

    async def gauges() -> dict[str, float] | None:
        text = await cluster.get("/metrics")  # any worker; the other's text is a heartbeat old
        found = {}
        for line in text.splitlines():
            if line.startswith("sandra_connections{"):
                worker = line.split('worker="', 1)[1].split('"', 1)[0]
                found[worker] = float(line.rsplit(" ", 1)[1])
        return found if found == {a: 2.0, b: 1.0} else None

    await cluster.until(gauges, timeout=5, what="sandra_connections of both workers in /metrics")


async def test_a_hang_up_through_any_worker_ends_the_call(cluster, calls):
    a, b = await cluster.workers()
    on_a = await _open_on(cluster, a, calls, 1)
    on_b = await _open_on(cluster, b, calls, 1)
    for peer, via in ((on_a[0], b), (on_b[0], a), ):
        http = await cluster.pinned(via)  # not the owner
        try:
            async with http.delete(f"{cluster.url}/api/sessions/{peer.session_id}") as r:
                assert (r.status, await r.json()) == (200, {"status": "closed"})
            # answered only once the call has ended: the registry no longer holds it
            assert await cluster.owner(peer.session_id) is None
            await peer.wait_for("call:ended", timeout=2)
            async with http.delete(f"{cluster.url}/api/sessions/{peer.session_id}") as r:
                assert r.status == 404 and (await r.json())["error"]["code"] == "no_such_session"
        finally:
            await http.close()
    for via in (a, b):
        http = await cluster.pinned(via)
        try:
            async with http.delete(f"{cluster.url}/api/sessions/nobody-has-this") as r:
                assert r.status == 404
        finally:
            await http.close()


async def test_max_sessions_holds_across_workers_under_concurrent_offers(cluster, calls):
    a, b = await cluster.workers()
    pins = [await cluster.pinned(a if i % 2 else b) for i in range(10)]
    try:
        outcomes = await asyncio.gather(*(offer_with(cluster.url, http=http) for http in pins), return_exceptions=True)
    finally:
        for http in pins:
            await http.close()
    admitted = [o for o in outcomes if isinstance(o, ClientPeer)]
    calls.extend(admitted)
    refused = [o for o in outcomes if isinstance(o, OfferRefused)]
    assert len(admitted) == MAX_SESSIONS, outcomes
    assert len(refused) == 10 - MAX_SESSIONS and {(r.status, r.code) for r in refused} == {(503, "at_capacity")}
    assert (await cluster.health())["webrtc"]["connections"] == MAX_SESSIONS


async def test_a_conversation_resumes_on_the_other_worker(cluster, calls):
    a, b = await cluster.workers()
    [first] = await _open_on(cluster, a, calls, 1)
    first.send({"type": "call:start", "language": "es", "id": "start"})
    started = await first.wait_for("call:started")
    cluster.fakes.anthropic.default_reply = anthropic_fake.Reply("Encantada, Ana.")
    first.send({"type": "message", "text": "Me llamo Ana y llego el martes"})  # cuts the greeting short
    told = await first.wait_for("response:done", lambda e: "Ana" in e["text"])

    http = await cluster.pinned(b)
    try:
        t0 = time.monotonic()
        second = await offer_with(cluster.url, resume_token=started["resume_token"], http=http)
    finally:
        await http.close()
    calls.append(second)
    assert second.session_id == first.session_id and await cluster.owner(second.session_id) == b
    ended = await first.wait_for("call:ended", timeout=2)  # one live connection per session
    assert ended["reason"] == "resumed elsewhere"
    second.send({"type": "call:start", "id": "again"})
    again = await second.wait_for("call:started")
    resumed_ms = (time.monotonic() - t0) * 1000
    assert again["resumed"] is True and again["language"] == "es" and again["resume_token"]
    assert resumed_ms < 10_000
    asked = len(cluster.fakes.anthropic.requests)
    second.send({"type": "message", "text": "¿Qué día llego?"})
    answer = await second.wait_for("response:done")
    assert answer["turn_id"] == told["turn_id"] + 1  # numbering goes on, and no second greeting
    assert [e["type"] for e in second.events].count("response:done") == 1
    request = cluster.fakes.anthropic.requests[asked].body
    texts = [(m["role"], m["content"] if isinstance(m["content"], str) else m["content"][0]["text"])
             for m in request["messages"]]
    assert ("user", "Me llamo Ana y llego el martes") in texts and ("assistant", "Encantada, Ana.") in texts
    assert texts[-1] == ("user", "¿Qué día llego?")
    assert (await cluster.health())["webrtc"]["connections"] == 1


async def test_two_resumes_at_once_leave_one_live_connection(cluster, calls):
    a, b = await cluster.workers()
    [first] = await _open_on(cluster, a, calls, 1)
    first.send({"type": "call:start", "id": 1})
    token = (await first.wait_for("call:started"))["resume_token"]
    pins = [await cluster.pinned(a), await cluster.pinned(b)]
    try:
        outcomes = await asyncio.gather(*(offer_with(cluster.url, resume_token=token, http=http) for http in pins),
                                        return_exceptions=True)
    finally:
        for http in pins:
            await http.close()
    peers = [o for o in outcomes if isinstance(o, ClientPeer)]
    calls.extend(peers)
    assert peers and all(p.session_id == first.session_id for p in peers), outcomes
    assert all(isinstance(o, ClientPeer) or (o.status, o.code) == (409, "session_busy") for o in outcomes), outcomes
    await first.wait_for("call:ended", timeout=3)

    async def one_live() -> bool:
        open_ = [p for p in peers if not any(e["type"] == "call:ended" for e in p.events)]
        health = await cluster.health()
        return len(open_) == 1 and health["webrtc"]["connections"] == 1

    await cluster.until(one_live, timeout=5, what="exactly one live connection for the session")


async def test_bad_and_spent_resume_tokens_are_refused(cluster, calls):
    [peer] = await _open_on(cluster, (await cluster.workers())[0], calls, 1)
    peer.send({"type": "call:start", "id": 1})
    token = (await peer.wait_for("call:started"))["resume_token"]
    for bad in ("not-a-token", token[:-2] + "xx"):
        with pytest.raises(OfferRefused) as refused:
            await offer_with(cluster.url, resume_token=bad)
        assert (refused.value.status, refused.value.code) == (400, "invalid_resume_token")
    peer.send({"type": "call:end"})
    await peer.wait_for("call:ended")
    await cluster.until(lambda: _empty(cluster), what="the call to leave the registry")
    with pytest.raises(OfferRefused) as refused:
        await offer_with(cluster.url, resume_token=token)  # the caller hung up: that conversation is over
    assert (refused.value.status, refused.value.code) == (400, "invalid_resume_token")


async def test_a_killed_workers_calls_leave_and_the_worker_is_replaced(cluster, calls):
    a, b = await cluster.workers()
    await _open_on(cluster, a, calls, 2)
    [survivor] = await _open_on(cluster, b, calls, 1)
    pid = next(w["pid"] for w in (await cluster.health())["cluster"]["workers"] if w["id"] == a)
    killed_at = time.monotonic()
    os.kill(pid, signal.SIGKILL)

    async def only_b_left() -> bool:
        # (its replacement may already have joined: only the dead one must be gone)
        health = await cluster.health()
        ids = [w["id"] for w in health["cluster"]["workers"]]
        return a not in ids and b in ids and health["webrtc"]["connections"] == 1

    await cluster.until(only_b_left, timeout=HEARTBEAT_TTL_S + 3, what="the killed worker's calls to leave")
    gone_s = time.monotonic() - killed_at
    assert gone_s < HEARTBEAT_TTL_S + 2
    replaced = await cluster.until(lambda: _replacement(cluster, a, b), timeout=30, what="a new worker")
    assert replaced != a
    survivor.send({"type": "message", "text": "Still there?"})
    await survivor.wait_for("response:done")  # the other worker's call never noticed
    print(f"\nkilled worker's sessions gone after {gone_s:.2f} s")


async def _replacement(cluster: Cluster, dead: str, alive: str) -> str | None:
    workers = await cluster.workers()
    new = [w for w in workers if w not in (dead, alive)]
    return new[0] if len(workers) == 2 and new else None


async def test_workers_reconnect_after_redis_restarts(cluster, calls):
    a, b = await cluster.workers()
    [peer] = await _open_on(cluster, a, calls, 1)
    cluster.redis.stop()
    cluster.redis.start()  # same port, empty: no persistence

    async def refilled() -> bool:
        health = await cluster.health()
        return (health["status"] == "ok" and len(health["cluster"]["workers"]) == 2
                and health["webrtc"]["connections"] == 1)

    await cluster.until(refilled, timeout=10, what="the registry refilled after the restart")
    assert await cluster.owner(peer.session_id) == a
    calls.extend(await _open_on(cluster, b, [], 1))  # admission works again
    http = await cluster.pinned(b)  # hang-ups across workers work again (resubscribed)
    try:
        async def hung_up() -> bool:
            async with http.delete(f"{cluster.url}/api/sessions/{peer.session_id}") as r:
                return r.status == 200
        # The listener resubscribes after its connection breaks (0.5 s apart, bounded waits).
        await cluster.until(hung_up, timeout=12, what="a hang-up through the other worker")
    finally:
        await http.close()
    await peer.wait_for("call:ended")


async def test_redis_down_degrades_without_touching_calls(cluster, calls):
    a, _ = await cluster.workers()
    [peer] = await _open_on(cluster, a, calls, 1)
    peer.send({"type": "call:start", "id": 1})
    await peer.wait_for("call:started")
    cluster.redis.stop()
    try:
        t0 = time.monotonic()
        with pytest.raises(OfferRefused) as refused:
            await offer_with(cluster.url)
        refused_s = time.monotonic() - t0
        assert (refused.value.status, refused.value.code) == (503, "cluster_unavailable")
        assert refused_s < 2.5

        async def degraded() -> dict[str, Any] | None:
            health = await cluster.health()
            return health if health["status"] == "degraded" else None

        t0 = time.monotonic()
        health = await cluster.until(degraded, timeout=3, what="a degraded health")
        assert "Redis" in health["reason"] and time.monotonic() - t0 < 3
        cluster.fakes.anthropic.default_reply = anthropic_fake.Reply("Still here.")
        peer.send({"type": "message", "text": "Are you still there?"})
        done = await peer.wait_for("response:done", lambda e: e["text"] == "Still here.", timeout=10)
        assert not done["interrupted"]
    finally:
        cluster.redis.start()
    await cluster.until(lambda: _health_ok(cluster), timeout=10, what="ok again")
    assert "Traceback" not in cluster.log.read_text(errors="replace")


async def _health_ok(cluster: Cluster) -> bool:
    health = await cluster.health()
    return health["status"] == "ok" and len(health["cluster"]["workers"]) == 2


# --- the call page (real Chromium) ------------------------------------------------------


@pytest.fixture(scope="module")
def quiet_browser(fake_mics: dict[str, Any]) -> Iterator[Any]:
    """Chromium of this module's own, closed with it (its sync Playwright loop must not
    outlive the module: the asyncio tests after it need the main thread)."""
    from playwright import sync_api

    with sync_api.sync_playwright() as playwright:
        browser = launch_chromium(playwright, fake_mics["silence"])
        yield browser
        browser.close()


def test_the_page_resumes_its_conversation_when_its_worker_dies(quiet_browser: Any, cluster: Any) -> None:
    blocking(cluster.until(lambda: _empty(cluster), timeout=30, what="an empty cluster of two workers"))
    page, errors = open_page(quiet_browser, f"{cluster.url}/", viewport={"width": 1280, "height": 800})
    # Notice the dead worker within 4 s (not less: on a loaded machine pongs come late).
    page.evaluate("Object.assign(window.sandra.options, {deadAfterMs: 4000, reconnectAttempts: 6})")
    page.click("#call")
    started = wait_event(page, "call:started")
    assert started["resume_token"]
    wait_event(page, "response:done")  # the greeting
    session = page.evaluate("window.sandra.sessionId")
    owner = blocking(cluster.owner(session))
    health = blocking(cluster.health())
    pid = next(w["pid"] for w in health["cluster"]["workers"] if w["id"] == owner)
    os.kill(pid, signal.SIGKILL)

    reconnected = wait_event(page, "reconnected", timeout=30_000)
    at = next(e["at"] for e in events(page, "reconnected"))
    assert reconnected["session_id"] == session  # the same conversation
    assert blocking(cluster.owner(session)) not in (None, owner)  # on another worker
    resumed = [e for e in events(page, "call:started") if e["at"] <= at + 1 and e.get("resumed")]
    assert len(resumed) == 1, events(page, "call:started")
    page.wait_for_timeout(1500)
    assert [e for e in events(page, "response:delta") if e["at"] > at] == []  # not greeted again
    asked = now(page)
    page.fill("#text", "Are you still there?")
    page.press("#text", "Enter")
    done = wait_event(page, "response:done", since=asked, timeout=20_000)
    first_turn = next(e for e in events(page, "response:done"))["turn_id"]
    assert done["turn_id"] > first_turn  # numbering went on from the first worker's turns
    assert page.evaluate("window.sandra.getStatus().callActive")
    close_page(page, errors)
