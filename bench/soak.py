"""Soak: many short calls in a row; nothing may grow without bound.

    .venv/bin/python -m bench.soak [--calls 300]

Each call: connect (real aiortc peer), a typed question and its (short) spoken answer,
``call:end``, wait for the server to drop the session. The server's RSS, open file
descriptors, asyncio tasks and threads (``/api/metrics``) are read after ``--warmup``
calls (20) and at the end.
"""

from __future__ import annotations

import argparse
import asyncio
import time
from typing import Any

from tests.support.peer import ClientPeer

from .common import get_json, save, server_process, table



async def one_call(url: str) -> None:
    peer = ClientPeer(url)
    try:
        await peer.connect()
        peer.send({"type": "message", "text": "What time is check-in?"})
        await peer.wait_for("response:done", timeout=15)
        peer.send({"type": "call:end"})
        await peer.wait_for("call:ended", timeout=10)
    finally:
        await peer.close()


async def wait_idle(url: str) -> dict[str, Any]:
    for _ in range(100):
        metrics = get_json(f"{url}/api/metrics")
        if metrics["connections"] == 0:
            return metrics["process"]
        await asyncio.sleep(0.1)
    raise RuntimeError("the server kept sessions after every call ended")


async def run(calls: int, warmup: int) -> dict[str, Any]:
    with server_process({"SANDRA_SCRIPTED_REPLY": "At three."}) as server:
        before = None
        checkpoints = []
        started = time.monotonic()
        for i in range(calls):
            await one_call(server.url)
            if i + 1 == warmup:
                before = await wait_idle(server.url)
            if i + 1 >= warmup and (i + 1 - warmup) % 50 == 0 or i + 1 == calls:
                stats = await wait_idle(server.url)
                checkpoints.append({"calls": i + 1, **{k: stats.get(k) for k in ("rss_mb", "fds", "tasks", "threads")}})
        after = await wait_idle(server.url)
        elapsed = time.monotonic() - started
    assert before is not None
    rows = [{"measure": k, "after_warmup": before.get(k), "after_all": after.get(k),
             "growth": round(after.get(k, 0) - before.get(k, 0), 1)} for k in ("rss_mb", "fds", "tasks", "threads")]
    return {"calls": calls, "warmup": warmup, "seconds": round(elapsed, 1), "rows": rows, "checkpoints": checkpoints}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--calls", type=int, default=300)
    parser.add_argument("--warmup", type=int, default=20, help="calls before the first reading")
    args = parser.parse_args()
    if not 0 < args.warmup < args.calls:
        parser.error("--warmup must be at least 1 and fewer than --calls")
    out = asyncio.run(run(args.calls, args.warmup))
    path = save("soak", out)
    print(table(out["rows"], ["measure", "after_warmup", "after_all", "growth"]))
    print(table(out["checkpoints"], ["calls", "rss_mb", "fds", "tasks", "threads"]))
    print(f"{out['calls']} calls in {out['seconds']} s; wrote {path}")


if __name__ == "__main__":
    main()
