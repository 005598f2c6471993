"""Capacity: N simultaneous full-duplex calls, Sandra against a bare aiortc echo server.

    .venv/bin/python -m bench.load [--calls 1,5,10,20,40] [--duration 10] [--workers 1] [--servers echo,sandra]

For each N, client processes (real aiortc peers; one process up to 8 calls, two beyond)
connect N calls, wait for a common start time, and measure for ``--duration`` seconds.
Sandra's callers loop: speak, hear the reply, and every third turn interrupt it by
voice. The echo server's callers loop the same speech (it comes straight back). The
same run measures, for both servers:

- server CPU per call (process tree, /proc), event-loop lag p99 (``/api/metrics``);
- at the clients, the inter-arrival of the server's audio frames (p99, gaps > 100 ms)
  and late frames (arriving > 40 ms after the previous one), and the clients' own loop
  lag (a client that falls behind makes the server look worse).

A configuration is real time when inter-arrival p99 < 30 ms, no gap > 100 ms and the
server's loop lag p99 < 20 ms. On 2 cores, server and clients share the machine.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import subprocess
import sys
import time
from typing import Any

from server.metrics import LoopMonitor
from tests.support.audio import silence
from tests.support.peer import ClientPeer

from .common import ROOT, get_json, percentiles, save, server_process, table
from .latency import utterance

REPLY = "Check-in is from three in the afternoon."
PEERS_PER_PROCESS = 8


# --- client process -------------------------------------------------------------------


async def _drive_sandra(peer: ClientPeer, stop: asyncio.Event, rng: random.Random) -> None:
    speech, short = utterance(900), utterance(500)
    turn = 0
    while not stop.is_set():
        turn += 1
        mark = len(peer.events)
        peer.mic.play(speech + silence(600))
        try:
            await peer.wait_for("state", lambda e: e["state"] == "speaking", after=mark, timeout=10)
            if turn % 3 == 0:
                await asyncio.sleep(0.4)
                peer.mic.play(short + silence(600))  # talk over her: a barge-in, then a new turn
                await peer.wait_for("barge-in", after=mark, timeout=10)
            mark = len(peer.events)
            await peer.wait_for("state", lambda e: e["state"] == "listening", after=mark, timeout=15)
        except AssertionError:
            pass  # a slow turn under load: keep going, the frame stats tell the story
        await asyncio.sleep(rng.uniform(0.2, 0.8))


async def _drive_echo(peer: ClientPeer, stop: asyncio.Event, rng: random.Random) -> None:
    speech = utterance(900)
    while not stop.is_set():
        peer.mic.play(speech + silence(600))
        await peer.mic.idle.wait()
        await asyncio.sleep(1.5 + rng.uniform(0.2, 0.8))


async def client(url: str, peers: int, mode: str, start_at: float, duration: float, seed: int) -> dict[str, Any]:
    rng = random.Random(seed)
    monitor = LoopMonitor()
    monitor_task = asyncio.get_running_loop().create_task(monitor.run())
    connected: list[ClientPeer] = []
    failures = 0
    for _ in range(peers):
        peer = ClientPeer(url, datachannel=mode == "sandra", fast_receive=True)
        try:
            await peer.connect()
            connected.append(peer)
        except Exception as exc:  # noqa: BLE001 - a refused call is a result, reported below
            failures += 1
            print(f"connect failed: {exc}", file=sys.stderr)
            await peer.close()
        await asyncio.sleep(0.05)
    stop = asyncio.Event()
    drive = _drive_sandra if mode == "sandra" else _drive_echo
    drivers = [asyncio.get_running_loop().create_task(drive(p, stop, rng)) for p in connected]
    await asyncio.sleep(max(0.0, start_at - time.time()))
    t0 = time.monotonic()
    await asyncio.sleep(duration)
    t1 = time.monotonic()
    lag = monitor.summary(duration)
    stop.set()
    gaps: list[float] = []
    frames = 0
    for peer in connected:
        arrivals = [h.at for h in peer.heard if t0 <= h.at <= t1]
        frames += len(arrivals)
        gaps += [(b - a) * 1000 for a, b in zip(arrivals, arrivals[1:])]
    for task in drivers:
        task.cancel()
    await asyncio.gather(*drivers, return_exceptions=True)
    await asyncio.gather(*(p.close() for p in connected))
    monitor_task.cancel()
    return {"connected": len(connected), "failed": failures, "frames": frames, "gaps": [round(g, 2) for g in gaps],
            "client_loop_lag_ms": lag}


# --- orchestration --------------------------------------------------------------------


def measure(url: str, server: Any, calls: int, mode: str, duration: float) -> dict[str, Any]:
    processes = 1 if calls <= PEERS_PER_PROCESS else 2
    shares = [calls // processes + (1 if i < calls % processes else 0) for i in range(processes)]
    start_at = time.time() + 3.0 + calls * 0.12
    procs = [
        subprocess.Popen(
            [sys.executable, "-m", "bench.load", "client", "--url", url, "--peers", str(n), "--mode", mode,
             "--start-at", str(start_at), "--duration", str(duration), "--seed", str(i)],
            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )
        for i, n in enumerate(shares)
    ]
    time.sleep(max(0.0, start_at - time.time()))
    cpu0, t0 = server.cpu_seconds(), time.monotonic()
    time.sleep(duration)
    cpu1, t1 = server.cpu_seconds(), time.monotonic()
    metrics = get_json(f"{url}/api/metrics?window_s={duration}")
    results = []
    for proc in procs:
        out, err = proc.communicate(timeout=120)
        if proc.returncode != 0:
            raise RuntimeError(f"client failed: {err[-2000:]}")
        results.append(json.loads(out.strip().splitlines()[-1]))
    gaps = [g for r in results for g in r["gaps"]]
    connected = sum(r["connected"] for r in results)
    expected = connected * duration / 0.02
    inter = percentiles(gaps)
    row = {
        "server": mode,
        "calls": calls,
        "connected": connected,
        "cpu_pct_per_call": round((cpu1 - cpu0) / (t1 - t0) * 100 / max(1, connected), 2),
        "server_cpu_pct": round((cpu1 - cpu0) / (t1 - t0) * 100, 1),
        "loop_lag_p99_ms": metrics["process"]["loop_lag_ms"]["p99"],
        "interarrival_p99_ms": inter["p99"],
        "max_gap_ms": inter["max"],
        "gaps_over_100ms": sum(1 for g in gaps if g > 100),
        "late_frames": sum(1 for g in gaps if g > 40),
        "frames_missing_pct": round(max(0.0, (expected - sum(r["frames"] for r in results)) / max(1, expected) * 100), 2),
        "client_lag_p99_ms": max((r["client_loop_lag_ms"]["p99"] or 0) for r in results),
    }
    row["real_time"] = bool(
        connected == calls and inter["p99"] is not None and inter["p99"] < 30 and (inter["max"] or 0) <= 100
        and (row["loop_lag_p99_ms"] or 0) < 20
    )
    return row


def run(calls: list[int], duration: float, workers: int, servers: tuple[str, ...] = ("echo", "sandra")) -> dict[str, Any]:
    rows = []
    for mode in servers:
        env = {"SANDRA_SCRIPTED_REPLY": REPLY}
        kwargs: dict[str, Any] = {"module": "bench.echo_server"} if mode == "echo" else {
            "args": ["--workers", str(workers)] if workers > 1 else []}
        with server_process(env, **kwargs) as server:
            for n in calls:
                row = measure(server.url, server, n, mode, duration)
                rows.append(row)
                print(f"  {mode} x{n}: " + ", ".join(f"{k}={row[k]}" for k in COLUMNS[2:]), flush=True)
    summary = {}
    for mode in servers:
        ok = [r["calls"] for r in rows if r["server"] == mode and r["real_time"]]
        summary[f"{mode}_max_real_time_calls"] = max(ok) if ok else 0
    pairs = [(e, s) for e in rows for s in rows if e["server"] == "echo" and s["server"] == "sandra"
             and e["calls"] == s["calls"] and e["calls"] >= 5]
    if pairs:
        summary["cpu_per_call_ratio_sandra_to_echo"] = {
            str(e["calls"]): round(s["cpu_pct_per_call"] / max(0.01, e["cpu_pct_per_call"]), 2) for e, s in pairs}
    if summary.get("echo_max_real_time_calls"):
        summary["max_calls_ratio_sandra_to_echo"] = round(
            summary["sandra_max_real_time_calls"] / summary["echo_max_real_time_calls"], 2)
    return {"duration_s": duration, "workers": workers, "rows": rows, "summary": summary}


COLUMNS = ["server", "calls", "connected", "cpu_pct_per_call", "server_cpu_pct", "loop_lag_p99_ms",
           "interarrival_p99_ms", "max_gap_ms", "gaps_over_100ms", "late_frames", "frames_missing_pct",
           "client_lag_p99_ms", "real_time"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command")
    c = sub.add_parser("client")
    c.add_argument("--url", required=True)
    c.add_argument("--peers", type=int, required=True)
    c.add_argument("--mode", choices=["sandra", "echo"], required=True)
    c.add_argument("--start-at", type=float, required=True)
    c.add_argument("--duration", type=float, required=True)
    c.add_argument("--seed", type=int, default=0)
    parser.add_argument("--calls", default="1,5,10,20,40")
    parser.add_argument("--duration", type=float, default=10.0)
    parser.add_argument("--workers", type=int, default=1, help="Sandra server processes (SO_REUSEPORT)")
    parser.add_argument("--servers", default="echo,sandra", help="which to measure: echo, sandra or both")
    args = parser.parse_args()
    if args.command == "client":
        result = asyncio.run(client(args.url, args.peers, args.mode, args.start_at, args.duration, args.seed))
        print(json.dumps(result))
        return
    calls = [int(n) for n in args.calls.split(",")]
    out = run(calls, args.duration, args.workers, tuple(args.servers.split(",")))
    print(table(out["rows"], COLUMNS))
    name = "load" if args.workers == 1 else f"load_workers{args.workers}"
    path = save(name, out)
    print(json.dumps(out["summary"], indent=2))
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
