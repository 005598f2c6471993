"""What recording a call costs: CPU per minute of call and bytes per minute on disk.

    .venv/bin/python -m bench.recording [--minutes 2] [--calls 4] [--server-calls 5 --duration 10]

1. In process: feeds ``--calls`` :class:`server.recording.Recorder`s at once with the frames of a
typical call (the guest speaks 30 % of the time, Sandra 50 %, both channels every 20 ms,
aiortc-shaped 48 kHz stereo s16 inbound frames), on a simulated clock as fast as the
recorders' threads keep up, then closes them. Prints, per minute of call: CPU seconds on
the event loop (enqueueing), CPU seconds in total (the encoder threads included, the benchmark's own frame making not) and the
Ogg's bytes; and the share of one core that a live call's recording takes.

2. End to end (``--server-calls N``, 0 to skip): the same ``N`` calls as ``bench.load``
(real aiortc callers that speak, hear the reply and interrupt every third turn) against a
Sandra server with recording off, then on; prints the server's CPU per call, its loop lag
and the Ogg bytes per minute of call. Server and callers share the machine.
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import time
from fractions import Fraction
from pathlib import Path

import av
import numpy as np

from bench.common import save, server_process, table
from server.recording import Recorder
from tests.support.audio import speech

RATE, FRAME = 48000, 960


def frames(pcm: bytes) -> list[bytes]:
    usable = len(pcm) // (FRAME * 2) * FRAME * 2
    return [pcm[i : i + FRAME * 2] for i in range(0, usable, FRAME * 2)]


def stereo_frame(mono: bytes, pts: int) -> av.AudioFrame:
    m = np.frombuffer(mono, np.int16)
    frame = av.AudioFrame.from_ndarray(np.column_stack([m, m]).reshape(1, -1), format="s16", layout="stereo")
    frame.sample_rate, frame.pts, frame.time_base = RATE, pts, Fraction(1, RATE)
    return frame


async def run(minutes: float, calls: int) -> dict[str, float]:
    guest = frames(speech("What time is check-in? And where can I park the car tonight?"))
    sandra = frames(speech("Check-in is from three in the afternoon. There is free parking in the street behind the flat.",
                           voice="en-gb"))
    silent = bytes(FRAME * 2)
    total = int(minutes * 60 * 50)
    clock = [1000.0]
    with tempfile.TemporaryDirectory() as tmp:
        recorders = [Recorder(f"bench{i}", root=Path(tmp), clock=lambda: clock[0]) for i in range(calls)]
        loop_cpu = build_cpu = 0.0  # the benchmark's own frame making is not the recorder's cost
        cpu0, wall0 = time.process_time(), time.perf_counter()
        for n in range(total):
            at = 1000.0 + n * 0.02
            clock[0] = at
            g = guest[n % len(guest)] if (n // 50) % 10 < 3 else silent  # 3 s in 10
            s = sandra[n % len(sandra)] if (n // 50) % 10 >= 5 else None  # 5 s in 10
            t0 = time.thread_time()
            caller = stereo_frame(g, n * FRAME)
            build_cpu += time.thread_time() - t0
            t0 = time.thread_time()
            for rec in recorders:
                rec.caller_frame(caller, at)
                rec.sandra_frame(s, at)
            loop_cpu += time.thread_time() - t0
            if n % 50 == 49:  # let the threads keep up (a real call gives them 1 s per second)
                while any(not r._queue.empty() for r in recorders):
                    await asyncio.sleep(0.002)
        clock[0] = 1000.0 + total * 0.02
        await asyncio.gather(*(r.close("bench") for r in recorders))
        cpu, wall = time.process_time() - cpu0 - build_cpu, time.perf_counter() - wall0
        sizes = [r.ogg_path.stat().st_size for r in recorders if r.ogg_path]
        dropped = sum(r.dropped for r in recorders)
    call_minutes = minutes * calls
    return {
        "calls": calls,
        "minutes_per_call": minutes,
        "loop_us_per_frame": round(loop_cpu / (total * calls * 2) * 1e6, 1),
        "loop_cpu_ms_per_call_minute": round(loop_cpu / call_minutes * 1000, 1),
        "total_cpu_ms_per_call_minute": round(cpu / call_minutes * 1000),
        "core_share_per_live_call_pct": round(cpu / call_minutes / 60 * 100, 2),
        "kbytes_per_call_minute": round(sum(sizes) / call_minutes / 1000, 1),
        "frames_dropped": dropped,
        "wall_s": round(wall, 2),
    }


def end_to_end(calls: int, duration: float) -> list[dict[str, object]]:
    import json

    from bench.load import REPLY, measure

    rows = []
    for on in (False, True):
        with tempfile.TemporaryDirectory() as tmp:
            env = {"SANDRA_SCRIPTED_REPLY": REPLY, "SANDRA_RECORDING_ENABLED": "true" if on else "false",
                   "SANDRA_RECORDING_DIR": tmp}
            with server_process(env) as server:
                row = measure(server.url, server, calls, "sandra", duration)
            oggs = list(Path(tmp).glob("*/*.ogg"))
            seconds = sum(json.loads(p.with_suffix(".json").read_text())["duration_s"] for p in oggs)
            rows.append({
                "recording": on, "calls": calls, "connected": row["connected"],
                "cpu_pct_per_call": row["cpu_pct_per_call"], "server_cpu_pct": row["server_cpu_pct"],
                "loop_lag_p99_ms": row["loop_lag_p99_ms"], "interarrival_p99_ms": row["interarrival_p99_ms"],
                "files": len(oggs),
                "kbytes_per_call_minute": round(sum(p.stat().st_size for p in oggs) / 1000 / (seconds / 60), 1) if seconds else None,
            })
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=2.0, help="minutes of call per recorder")
    parser.add_argument("--calls", type=int, default=4, help="recorders at once")
    parser.add_argument("--server-calls", type=int, default=5, help="end to end: calls at once (0: skip)")
    parser.add_argument("--duration", type=float, default=10.0, help="end to end: seconds measured")
    args = parser.parse_args()
    result: dict[str, object] = asyncio.run(run(args.minutes, args.calls))
    print(table([{"measure": k, "value": v} for k, v in result.items()], ("measure", "value")))
    if args.server_calls:
        rows = end_to_end(args.server_calls, args.duration)
        print(table(rows, list(rows[0])))
        result["end_to_end"] = rows
    save("recording", result)


if __name__ == "__main__":
    main()
