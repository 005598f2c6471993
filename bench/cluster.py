"""The cluster's costs (issue 12): registry CPU per call, admission under concurrent offers,
time to resume a conversation.

    .venv/bin/python -m bench.cluster [--calls 10] [--offers 50] [--max-sessions 20] [--resumes 5]

1. **Registry CPU** (in this process, a real redis-server): a call's whole life in the
   registry — admission, ``--snapshots`` conversation snapshots written, release — and a
   heartbeat carrying ``--calls`` sessions, timed on this process's CPU clock plus the
   redis-server's CPU (/proc). Per call-second = heartbeat share + the life spread over
   ``--call-s`` seconds; compared with what a call costs Sandra (``--call-cpu``, % of a
   core per call, README's capacity table: 5.6-8.3 %).
2. **Admission**: ``python -m server --workers 2`` with Redis and ``MAX_SESSIONS =
   --max-sessions``; ``--offers`` offers at once, each on a fresh connection (spread by
   SO_REUSEPORT): how many were admitted (never more than max_sessions), by which worker,
   and the offer -> answer time. The admitted sessions are then hung up.
3. **Resume**: a real aiortc call on that cluster, then a new peer connection offering the
   call's resume_token: offer sent -> ``call:started {resumed: true}``, against offer sent
   -> ``call:started`` of a fresh call.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import time
from collections import Counter
from pathlib import Path
from typing import Any

import aiohttp

from server.media.ice import restrict_host_addresses
from server import config as configuration
from server.cluster.redis_cluster import RedisCluster
from server.cluster.snapshot import Said, Snapshot
from server.cluster.supervisor import PrivateRedis
from server.metrics import Metrics
from tests.support.peer import ClientPeer

from .common import get_json, percentiles, save, server_process, table


def _proc_cpu(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class _Owner:
    def __init__(self, n: int) -> None:
        self.ids = [f"held-{i}" for i in range(n)]
        self.metrics = Metrics()

    def session_ids(self) -> list[str]:
        return self.ids

    def summary(self) -> dict[str, int]:
        n = len(self.ids)
        return {"total": n, "authenticated": n, "activeCalls": n, "activeLastMinute": n}

    def prometheus(self) -> bytes:
        return self.metrics.prometheus()

    async def end_call(self, session_id: str, reason: str) -> bool:
        return False


async def registry_cpu(redis: PrivateRedis, calls: int, lives: int, snapshots: int) -> dict[str, Any]:
    config = configuration.load(None, {}, cluster={"redis_url": redis.url})
    cluster = RedisCluster(config, worker_id="bench")
    owner = _Owner(calls)
    cluster._owner = owner
    history = tuple(Said("user" if i % 2 else "assistant", "What time is check-in? " * 3) for i in range(12))
    snap = Snapshot("en", history, 12)
    await cluster._beat()  # warm up scripts
    redis_pid = redis._proc.pid  # type: ignore[union-attr]

    cpu0, rcpu0, wall0 = time.process_time(), _proc_cpu(redis_pid), time.perf_counter()
    for i in range(lives):
        session = f"life-{i}"
        await cluster.admit(session, 10_000)
        for _ in range(snapshots):
            cluster.changed(session, snap, 3600)
            await cluster._write_pending()
        await cluster.release(session)
    life_cpu = (time.process_time() - cpu0) / lives
    life_redis = (_proc_cpu(redis_pid) - rcpu0) / lives
    life_wall = (time.perf_counter() - wall0) / lives

    beats = 200
    cpu0, rcpu0 = time.process_time(), _proc_cpu(redis_pid)
    for _ in range(beats):
        await cluster._beat()
    beat_cpu = (time.process_time() - cpu0) / beats
    beat_redis = (_proc_cpu(redis_pid) - rcpu0) / beats
    await cluster._redis.aclose()
    return {"calls_held": calls, "lives": lives, "snapshots_per_life": snapshots,
            "life_cpu_ms": round(life_cpu * 1000, 3), "life_redis_cpu_ms": round(life_redis * 1000, 3),
            "life_wall_ms": round(life_wall * 1000, 2),
            "heartbeat_cpu_ms": round(beat_cpu * 1000, 3), "heartbeat_redis_cpu_ms": round(beat_redis * 1000, 3)}


async def _offer(url: str, sdp: str) -> tuple[int, dict[str, Any], float]:
    t0 = time.perf_counter()
    async with aiohttp.ClientSession() as http, http.post(f"{url}/api/offer", json={"sdp": sdp, "type": "offer"}) as r:
        return r.status, await r.json(), (time.perf_counter() - t0) * 1000


async def admission(url: str, offers: int, redis: PrivateRedis) -> dict[str, Any]:
    import redis.asyncio as aioredis

    peer = ClientPeer(url)
    restrict_host_addresses(["127.0.0.1"])  # loopback candidates only (the server keeps no other)
    await peer.pc.setLocalDescription(await peer.pc.createOffer())
    sdp = peer.pc.localDescription.sdp
    await peer.close()
    results = await asyncio.gather(*(_offer(url, sdp) for _ in range(offers)))
    admitted = [body["session_id"] for status, body, _ in results if status == 200]
    refused = Counter(body["error"]["code"] for status, body, _ in results if status != 200)
    client = aioredis.Redis.from_url(redis.url, decode_responses=True)
    owners = Counter([await client.hget(f"sandra:session:{s}", "worker") for s in admitted])
    health = get_json(f"{url}/api/health")
    await client.aclose()
    async with aiohttp.ClientSession() as http:
        for session in admitted:
            async with http.delete(f"{url}/api/sessions/{session}") as r:
                await r.read()
    return {"offers": offers, "admitted": len(admitted), "refused": dict(refused),
            "by_worker": dict(owners), "connections_seen": health["webrtc"]["connections"],
            "answer_ms": percentiles([ms for _, _, ms in results])}


async def _call_started(peer: ClientPeer, http: aiohttp.ClientSession, token: str | None) -> tuple[float, dict]:
    t0 = time.perf_counter()
    restrict_host_addresses(["127.0.0.1"])  # loopback candidates only (the server keeps no other)
    await peer.pc.setLocalDescription(await peer.pc.createOffer())
    body = {"sdp": peer.pc.localDescription.sdp, "type": "offer", **({"resume_token": token} if token else {})}
    async with http.post(f"{peer.base_url}/api/offer", json=body) as r:
        answer = await r.json()
        assert r.status == 200, answer
    from aiortc import RTCSessionDescription

    await peer.pc.setRemoteDescription(RTCSessionDescription(sdp=answer["sdp"], type="answer"))
    peer.session_id = answer["session_id"]
    await asyncio.wait_for(peer._open.wait(), 10)
    peer.send({"type": "call:start", "id": 1})
    started = await peer.wait_for("call:started")
    return (time.perf_counter() - t0) * 1000, started


async def resumes(url: str, n: int) -> dict[str, Any]:
    fresh, resumed = [], []
    async with aiohttp.ClientSession() as http:
        for _ in range(n):
            first = ClientPeer(url)
            ms, started = await _call_started(first, http, None)
            fresh.append(ms)
            first.send({"type": "message", "text": "Hello"})
            await first.wait_for("response:delta")
            second = ClientPeer(url)
            ms, again = await _call_started(second, http, started["resume_token"])
            assert again.get("resumed") is True and second.session_id == first.session_id
            resumed.append(ms)
            second.send({"type": "call:end"})
            await second.wait_for("call:ended")
            await first.close()
            await second.close()
    return {"fresh_call_started_ms": percentiles(fresh), "resume_call_started_ms": percentiles(resumed)}


async def _two_workers(url: str) -> None:
    for _ in range(300):
        with contextlib.suppress(OSError, KeyError):
            if len(get_json(f"{url}/api/health")["cluster"]["workers"]) == 2:
                return
        await asyncio.sleep(0.1)
    raise RuntimeError("the second worker never registered")


async def main_async(args: argparse.Namespace) -> dict[str, Any]:
    with PrivateRedis() as redis:
        cpu = await registry_cpu(redis, args.calls, args.lives, args.snapshots)
        per_call_s_ms = cpu["heartbeat_cpu_ms"] + cpu["heartbeat_redis_cpu_ms"]  # one beat a second, all calls
        per_call_s_ms = per_call_s_ms / max(1, args.calls)
        per_call_s_ms += (cpu["life_cpu_ms"] + cpu["life_redis_cpu_ms"]) / args.call_s
        call_ms_per_s = args.call_cpu * 10  # % of a core -> ms of CPU per second
        cpu["registry_ms_per_call_second"] = round(per_call_s_ms, 4)
        cpu["call_ms_per_second"] = call_ms_per_s
        cpu["registry_share_of_call_pct"] = round(100 * per_call_s_ms / call_ms_per_s, 3)
        env = {"REDIS_URL": redis.url, "SANDRA_SERVER_MAX_SESSIONS": str(args.max_sessions)}
        with server_process(env, args=["--workers", "2"]) as server:
            await _two_workers(server.url)
            admit = await admission(server.url, args.offers, redis)
            resume = await resumes(server.url, args.resumes)
    return {"registry": cpu, "admission": {**admit, "max_sessions": args.max_sessions}, "resume": resume}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--calls", type=int, default=10, help="sessions a worker holds while beating")
    parser.add_argument("--lives", type=int, default=200, help="call lives timed in the registry")
    parser.add_argument("--snapshots", type=int, default=20, help="snapshots written per call life")
    parser.add_argument("--call-s", type=float, default=60.0, help="length of a call, to spread its life over")
    parser.add_argument("--call-cpu", type=float, default=5.6, help="a call's CPU, %% of a core (README)")
    parser.add_argument("--offers", type=int, default=50)
    parser.add_argument("--max-sessions", type=int, default=20)
    parser.add_argument("--resumes", type=int, default=5)
    args = parser.parse_args()
    out = asyncio.run(main_async(args))
    reg, adm, res = out["registry"], out["admission"], out["resume"]
    print(table([reg], ["life_cpu_ms", "life_redis_cpu_ms", "life_wall_ms", "heartbeat_cpu_ms",
                        "heartbeat_redis_cpu_ms", "registry_ms_per_call_second", "registry_share_of_call_pct"]))
    print(f"\nadmission: {adm['offers']} offers at once, max_sessions {adm['max_sessions']}: "
          f"{adm['admitted']} admitted {adm['by_worker']}, refused {adm['refused']}, "
          f"health saw {adm['connections_seen']}; answer ms {adm['answer_ms']}")
    print(f"resume: offer -> call:started {{resumed}} {res['resume_call_started_ms']}; "
          f"fresh call {res['fresh_call_started_ms']}")
    path = save("cluster", {"args": vars(args), **out})
    print(f"\nwrote {path}")


if __name__ == "__main__":
    main()
