"""What the security edge costs: ``python -m bench.security [--n 20000] [--flood 2000]``

Per operation (µs): verifying a guest JWT, making TURN credentials, one token-bucket take
in the MemoryLimitStore, one datachannel message through MessageLimits; and over HTTP, how
many offers a second a flooding client gets refused (429) by one Sandra process.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time

import aiohttp

from server.security import guest
from server.security.limits import MemoryLimitStore, MessageLimits
from server.security.turn import credentials
from tests.conftest import make_config, run_server

from .common import RESULTS

SECRET = "a-bench-secret-that-is-long-enough-0123"


def per_op_us(fn, n: int) -> float:  # type: ignore[no-untyped-def]
    start = time.perf_counter()
    for i in range(n):
        fn(i)
    return round((time.perf_counter() - start) / n * 1e6, 2)


async def main_async(n: int, flood: int) -> dict[str, float]:
    now = time.time()
    token = guest.issue(SECRET, sub="b-1", exp=int(now) + 3600, name="Ana", lang="es", now=now)
    limits = MessageLimits(0.0)
    store = MemoryLimitStore()
    results = {
        "jwt_verify_us": per_op_us(lambda i: guest.verify(token, SECRET, now), n),
        "turn_credentials_us": per_op_us(lambda i: credentials("s", ("turn:x",), ident="b", ttl_s=600, now=now), n),
        "message_limit_us": per_op_us(lambda i: limits.allow_message(i * 0.001), n),
    }
    start = time.perf_counter()
    for i in range(n):
        await store.take(f"offers:{i % 1000}", 0.5, 30)
    results["bucket_take_us"] = round((time.perf_counter() - start) / n * 1e6, 2)
    async with run_server(make_config(limits={"offers_per_minute": 1})) as srv:
        async with aiohttp.ClientSession() as http:
            refused = 0
            start = time.perf_counter()
            for _ in range(flood):
                async with http.post(f"{srv.url}/api/offer", data="{}") as r:
                    refused += r.status == 429
            elapsed = time.perf_counter() - start
    results["flood_refused"] = refused
    results["flood_offers_per_s"] = round(flood / elapsed)
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=20000)
    parser.add_argument("--flood", type=int, default=2000)
    args = parser.parse_args()
    results = asyncio.run(main_async(args.n, args.flood))
    print(json.dumps(results, indent=2))
    RESULTS.mkdir(parents=True, exist_ok=True)
    out = RESULTS / "security.json"
    out.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
