"""How fast and how big the embedded offline providers are on this machine.

    .venv/bin/python -m bench.offline_providers [--repeat N]

Prints one table: Whisper (``[stt] model``, default tiny.en int8) time per utterance and
real-time factor, espeak-ng time to first chunk, the concierge's reply time, and the
process's resident memory before and after loading the model. Utterances are spoken by
espeak-ng and resampled to 16 kHz with PyAV, as the call does with browser audio.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time
from collections.abc import Awaitable, Callable
from pathlib import Path


from bench.common import save, table
from server import config as config_module
from server.providers.base import STT_RATE, ChatMessage, LLMRequest
from server.providers.concierge import ConciergeLLM
from server.providers.espeak_tts import EspeakTTS
from server.providers.local_stt import LocalWhisperSTT
from tests.support.audio import resample

UTTERANCES = [
    "What time is check-in?",
    "Is there a supermarket nearby?",
    "Where can I park the car?",
    "Hi Sandra, we have just arrived. Could you tell me the password for the internet, "
    "and where we can leave the car tonight?",
]
TYPICAL_SENTENCE = "Check-in is from 3 pm, and you can leave your luggage in the flat from noon."


def rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


async def timed(make: Callable[[], Awaitable[object]], repeat: int) -> tuple[float, object]:
    """Median seconds over ``repeat`` runs, and the last result."""
    times, result = [], None
    for _ in range(repeat):
        t0 = time.perf_counter()
        result = await make()
        times.append(time.perf_counter() - t0)
    return statistics.median(times), result


async def main(repeat: int) -> None:
    config = config_module.load(config_module.ROOT / "config.toml")
    rows: list[tuple[str, str]] = []
    rows.append(("RSS: Python + imports (faster-whisper, av)", f"{rss_mb():.0f} MB"))

    # espeak-ng
    tts = EspeakTTS(config)
    t0 = time.perf_counter()
    await tts.start()
    rows.append(("espeak: start (init + voices)", f"{(time.perf_counter() - t0) * 1000:.1f} ms"))
    async def speak(text: str, language: str) -> tuple[float, float, float]:
        """Seconds to the first chunk, seconds to the last, seconds of audio."""
        t0 = time.perf_counter()
        first, samples, rate = 0.0, 0, 1
        async for chunk in tts.synthesize(text, language):
            first = first or time.perf_counter() - t0
            samples += len(chunk.pcm) // 2
            rate = chunk.sample_rate
        return first, time.perf_counter() - t0, samples / rate

    same = [await speak(TYPICAL_SENTENCE, "en") for _ in range(max(repeat, 5))]
    switching = []
    for _ in range(max(repeat, 5)):
        await speak("Hola.", "es")
        switching.append(await speak(TYPICAL_SENTENCE, "en"))
    first_ms = statistics.median(r[0] for r in same) * 1000
    switch_ms = statistics.median(r[0] for r in switching) * 1000
    total_s, audio_s = statistics.median(r[1] for r in same), same[-1][2]
    rows.append((f"espeak: first chunk ({len(TYPICAL_SENTENCE.split())} words, en)", f"{first_ms:.2f} ms"))
    rows.append(("espeak: first chunk, after a Spanish sentence", f"{switch_ms:.2f} ms (voice switch)"))
    rows.append(("espeak: whole sentence", f"{total_s * 1000:.2f} ms for {audio_s:.2f} s of audio "
                 f"({audio_s / total_s:.0f}x real time)"))

    # concierge
    llm = ConciergeLLM(config)
    request = LLMRequest([ChatMessage("user", "hi um what time is checking")], "en")

    async def reply() -> str:
        return "".join([piece async for piece in llm.reply(request)])

    seconds, _ = await timed(reply, max(repeat, 20))
    rows.append(("concierge: whole reply (search + stream)", f"{seconds * 1000:.2f} ms"))

    # Whisper
    speech = []
    for text in UTTERANCES:
        chunks = [c async for c in tts.synthesize(text, "en")]
        speech.append((text, resample(b"".join(c.pcm for c in chunks), chunks[0].sample_rate, STT_RATE)))
    before = rss_mb()
    stt = LocalWhisperSTT(config)
    t0 = time.perf_counter()
    await stt.start()
    rows.append((f"whisper: load {config.stt.model} {config.stt.compute_type}, {config.stt.cpu_threads} threads",
                 f"{time.perf_counter() - t0:.2f} s"))
    rows.append(("RSS: + Whisper model loaded", f"{rss_mb():.0f} MB (+{rss_mb() - before:.0f} MB)"))
    await stt.transcribe(speech[0][1], "en")  # warm-up
    total_audio = total_time = 0.0
    for text, pcm in speech:
        seconds_audio = len(pcm) / 2 / STT_RATE
        seconds, transcript = await timed(lambda pcm=pcm: stt.transcribe(pcm, "en"), repeat)
        total_audio += seconds_audio
        total_time += seconds
        heard = getattr(transcript, "text", "")
        result = f"{seconds * 1000:.0f} ms, RTF {seconds / seconds_audio:.2f}  heard {heard[:48]!r}"
        rows.append((f"whisper: {seconds_audio:.1f} s utterance", result))
    rows.append(("whisper: overall", f"{total_time / total_audio:.2f} s per second of speech"))
    rows.append(("RSS: after transcribing", f"{rss_mb():.0f} MB"))
    await stt.aclose()

    print(table([{"measure": name, "value": value} for name, value in rows], ["measure", "value"]))
    path = save("offline_providers", {"repeat": repeat, "rows": [{"measure": n, "value": v} for n, v in rows]})
    print(f"wrote {path}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=3, help="runs per measurement (median)")
    asyncio.run(main(parser.parse_args().repeat))
