"""Voice-to-voice overhead, barge-in time and inbound latency, measured at a real client.

    .venv/bin/python -m bench.latency [--turns 20] [--barge-ins 10] [--onsets 10]

The server runs in its own process with the scripted providers and zero provider delays,
so the numbers are Sandra's own overhead. The client is a real aiortc peer whose receive
jitter buffer is Sandra's (no 80 ms playout buffer), so timings measure the server, not
the measuring client; a browser adds its own playout delay on top.

1. voice-to-voice: the client speaks (a voiced synthetic utterance, then silence); time
   from its last voiced frame sent to the first reply frame with energy received, minus
   ``vad.end_silence_ms``. Beside it, the server's own per-turn ``metrics``.
2. barge-in: while reply audio arrives, the client starts speaking (or sends a
   ``barge-in`` message); time from its first voiced frame (or the message) to the
   received audio going silent.
3. inbound: time from the client sending the first voiced frame of a burst to the
   server's VAD seeing it (the ``vad`` event's ``onset_ms``, same machine clock), before
   and after a lost packet, with Sandra's jitter buffer and with aiortc's stock one.
"""

from __future__ import annotations

import argparse
import asyncio
import time
from typing import Any

from server.providers.scripted import synthetic_voice
from tests.support.audio import resample, silence
from tests.support.peer import ClientPeer

from .common import percentiles, save, server_process, table

END_SILENCE_MS = 500
REPLY = "Check-in is from three in the afternoon, and check-out is at eleven in the morning."


def utterance(ms: int = 900) -> bytes:
    """A voiced synthetic utterance at 48 kHz: every frame voiced, a sharp end."""
    chars = max(1, int(ms / 55))
    return resample(synthetic_voice("x" * chars, 24000).tobytes(), 24000)


async def _settle(peer: ClientPeer, after: int) -> None:
    """Wait for Sandra to be listening with nothing playing."""
    await peer.wait_until(
        lambda: any(e["type"] == "state" and e["state"] == "listening" for e in peer.events[after:]),
        timeout=30, what="listening",
    )
    await asyncio.sleep(0.3)


async def voice_to_voice(url: str, turns: int) -> dict[str, Any]:
    peer = ClientPeer(url, fast_receive=True)
    await peer.connect()
    overheads, server_metrics = [], []
    try:
        peer.send({"type": "ping", "t": 0})
        await asyncio.sleep(1.0)
        for _ in range(turns):
            mark = len(peer.events)
            peer.mic.play(utterance() + silence(END_SILENCE_MS + 1500))
            done = await peer.wait_for("response:done", after=mark, timeout=30)
            last_voiced = peer.mic.sent_voiced[-1]
            first_reply = peer.first_loud_after(last_voiced)
            if first_reply is not None:
                overheads.append((first_reply - last_voiced) * 1000 - END_SILENCE_MS)
            metrics = await peer.wait_for("metrics", lambda e: e["turn_id"] == done["turn_id"], after=mark)
            server_metrics.append(metrics)
            await peer.mic.idle.wait()
            await _settle(peer, mark)
    finally:
        await peer.close()
    server = {k: percentiles([m[k] for m in server_metrics if k in m])
              for k in ("eos_ms", "stt_ms", "llm_ttft_ms", "tts_ttfb_ms", "voice_to_voice_ms")}
    return {"client_overhead_ms": percentiles(overheads), "server_metrics": server}


async def barge_in(url: str, count: int) -> dict[str, Any]:
    peer = ClientPeer(url, fast_receive=True)
    await peer.connect()
    voice, client, server_side = [], [], []
    try:
        await asyncio.sleep(0.5)
        for i in range(count * 2):
            by_voice = i % 2 == 0
            mark = len(peer.events)
            peer.send({"type": "message", "text": "Tell me about check-in"})
            speaking = await peer.wait_for("state", lambda e: e["state"] == "speaking", after=mark, timeout=20)
            await peer.wait_until(lambda: (peer.first_loud_after(speaking["_at"]) or 1e18) < time.monotonic() - 0.6,
                                  what="reply audio")
            if by_voice:
                sent_before = len(peer.mic.sent_voiced)
                peer.mic.play(utterance(600) + silence(800))
                await peer.wait_until(lambda: len(peer.mic.sent_voiced) > sent_before, what="speech sent")
                started = peer.mic.sent_voiced[sent_before]
            else:
                started = time.monotonic()
                peer.send({"type": "barge-in"})
            await peer.wait_for("barge-in", after=mark, timeout=10)
            quiet = await peer.wait_until(lambda: peer.quiet_since(started, run=5), what="silence")
            (voice if by_voice else client).append((quiet - started) * 1000)
            metrics = await peer.wait_for("metrics", lambda e: "barge_in_ms" in e, after=mark, timeout=10)
            if by_voice:
                server_side.append(metrics["barge_in_ms"])
            await peer.mic.idle.wait()
            await _settle(peer, mark)
            if by_voice:  # the interruption was answered: let that reply finish too
                await _settle(peer, len(peer.events) - 1)
    finally:
        await peer.close()
    return {"voice_ms": percentiles(voice), "client_message_ms": percentiles(client),
            "server_barge_in_ms": percentiles(server_side)}


async def inbound(url: str, onsets: int) -> dict[str, Any]:
    peer = ClientPeer(url, fast_receive=True)
    await peer.connect()
    result: dict[str, list[float]] = {"before_loss": [], "after_loss": []}
    try:
        peer.send({"type": "call:start"})  # the greeting teaches the echo guard this line
        await peer.wait_for("response:done", timeout=20)
        await asyncio.sleep(0.7)
        for phase in ("before_loss", "after_loss"):
            if phase == "after_loss":
                peer.mic.play(silence(200))
                peer.drop_rtp(1)  # one packet lost in the network
                await peer.mic.idle.wait()
                await asyncio.sleep(0.5)
            for _ in range(onsets):
                mark = len(peer.events)
                sent_before = len(peer.mic.sent_voiced_wall)
                peer.mic.play(utterance(200) + silence(700))
                vad = await peer.wait_for("vad", lambda e: e["speaking"], after=mark, timeout=10)
                sent = peer.mic.sent_voiced_wall[sent_before]
                result[phase].append(vad["onset_ms"] - sent * 1000)
                await peer.mic.idle.wait()
                await peer.wait_for("vad", lambda e: not e["speaking"], after=mark, timeout=10)
                peer.send({"type": "barge-in"})  # the short bursts are turns too: cut the replies
                await asyncio.sleep(0.3)
    finally:
        await peer.close()
    return {k: percentiles(v) for k, v in result.items()}


async def run(turns: int, barge_ins: int, onsets: int) -> dict[str, Any]:
    out: dict[str, Any] = {"end_silence_ms": END_SILENCE_MS}
    env = {"SANDRA_SCRIPTED_REPLY": REPLY, "SANDRA_VAD_END_SILENCE_MS": str(END_SILENCE_MS)}
    with server_process(env) as server:
        out["voice_to_voice"] = await voice_to_voice(server.url, turns)
        out["barge_in"] = await barge_in(server.url, barge_ins)
        out["inbound_sandra"] = await inbound(server.url, onsets)
    with server_process({**env, "SANDRA_WEBRTC_JITTER_MAX_GAP": "0"}) as server:
        out["inbound_stock_aiortc"] = await inbound(server.url, onsets)
    return out


def report(out: dict[str, Any]) -> str:
    rows = [
        {"measure": "voice-to-voice overhead (client)", **out["voice_to_voice"]["client_overhead_ms"]},
        *({"measure": f"  server {k}", **v} for k, v in out["voice_to_voice"]["server_metrics"].items()),
        {"measure": "barge-in by voice (client)", **out["barge_in"]["voice_ms"]},
        {"measure": "  server barge_in_ms", **out["barge_in"]["server_barge_in_ms"]},
        {"measure": "barge-in by message (client)", **out["barge_in"]["client_message_ms"]},
        {"measure": "inbound, Sandra's buffer", **out["inbound_sandra"]["before_loss"]},
        {"measure": "  after a lost packet", **out["inbound_sandra"]["after_loss"]},
        {"measure": "inbound, stock aiortc buffer", **out["inbound_stock_aiortc"]["before_loss"]},
        {"measure": "  after a lost packet", **out["inbound_stock_aiortc"]["after_loss"]},
    ]
    return table(rows, ["measure", "n", "p50", "p95", "max"]) + "\n(milliseconds)"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--turns", type=int, default=20)
    parser.add_argument("--barge-ins", type=int, default=10, help="of each kind")
    parser.add_argument("--onsets", type=int, default=10, help="per phase")
    args = parser.parse_args()
    out = asyncio.run(run(args.turns, args.barge_ins, args.onsets))
    path = save("latency", out)
    print(report(out))
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
