"""The baseline: a bare aiortc echo server, measured the same way as Sandra.

    .venv/bin/python -m bench.echo_server --port 8081

No VAD, no pipeline: each call's inbound audio track is relayed straight back (decoded
and re-encoded by aiortc, as Sandra's audio is). Same signaling (``POST /api/offer``),
same ICE restrictions (127.0.0.1, no STUN/TURN), and the same ``/api/metrics`` process
and loop-lag figures, so the load benchmark can compare the two.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
from collections.abc import AsyncIterator

from aiohttp import web
from aiortc import RTCConfiguration, RTCPeerConnection, RTCSessionDescription

from server.media.ice import restrict_host_addresses
from server.metrics import LoopMonitor, process_stats

PCS = web.AppKey("pcs", set)
LOOP = web.AppKey("loop", LoopMonitor)


async def offer(request: web.Request) -> web.Response:
    body = await request.json()
    pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    request.app[PCS].add(pc)

    @pc.on("track")
    def on_track(track):  # type: ignore[no-untyped-def]
        pc.addTrack(track)

    @pc.on("connectionstatechange")
    async def on_state() -> None:
        if pc.connectionState in ("failed", "closed"):
            request.app[PCS].discard(pc)
            await pc.close()

    await pc.setRemoteDescription(RTCSessionDescription(sdp=body["sdp"], type="offer"))
    await pc.setLocalDescription(await pc.createAnswer())
    return web.json_response({"sdp": pc.localDescription.sdp, "type": "answer", "session_id": str(id(pc))})


async def health(request: web.Request) -> web.Response:
    return web.json_response({"status": "ok", "service": "aiortc echo"})


async def metrics(request: web.Request) -> web.Response:
    window = float(request.query["window_s"]) if "window_s" in request.query else None
    return web.json_response(
        {
            "connections": len(request.app[PCS]),
            "process": {**process_stats(), "loop_lag_ms": request.app[LOOP].summary(window), "pid": os.getpid()},
        }
    )


def create_app() -> web.Application:
    app = web.Application()
    app[PCS] = set()
    app[LOOP] = LoopMonitor()

    async def lifetime(app: web.Application) -> AsyncIterator[None]:
        restrict_host_addresses(["127.0.0.1"])
        monitor = asyncio.get_running_loop().create_task(app[LOOP].run())
        yield
        monitor.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await monitor
        await asyncio.gather(*(pc.close() for pc in app[PCS]))

    app.cleanup_ctx.append(lifetime)
    app.router.add_post("/api/offer", offer)
    app.router.add_get("/api/health", health)
    app.router.add_get("/api/metrics", metrics)
    return app


def main() -> None:
    parser = argparse.ArgumentParser(description="bare aiortc echo server (benchmark baseline)")
    parser.add_argument("--port", type=int, default=8081)
    args = parser.parse_args()
    web.run_app(create_app(), host="127.0.0.1", port=args.port, print=None, access_log=None)


if __name__ == "__main__":
    main()
