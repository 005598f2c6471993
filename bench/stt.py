"""Offline speech recognition on human and synthetic voices: accuracy and speed per model.

    .venv/bin/python -m bench.stt [--models tiny.en,base,small] [--windows short,full] [--repeat N] [--quick]

For each Whisper model (int8, ``[stt] cpu_threads`` = 2 threads, greedy decoding, exactly
as ``server/providers/local_stt.py`` runs it), each ``[stt] window`` (``short``: the
utterance plus 4 s, ``full``: Whisper's 30 s; language detection always uses the full one)
and each language it can hear, on the speech
set of ``tests/speech`` (built on first use): the word error rate and the median time per
utterance, for the human recordings and for each synthetic voice separately; for the guest
questions, the knowledge-base top-1 accuracy (the transcript through the offline
concierge, ``server/providers/concierge.py``: the right entry's answer, not "I don't
know"); and for multilingual models, language detection (``transcribe(pcm, None)``) on
every utterance (once). Each utterance is transcribed ``--repeat`` times in its own
language; times are medians.
A model whose files are missing or incomplete is reported as such and skipped.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time
from collections import defaultdict
from dataclasses import dataclass, replace

from bench.common import save, table
from server import config as config_module
from server import knowledge
from server.errors import ConfigError
from server.providers.base import STT_RATE, ChatMessage
from server.providers.concierge import Concierge
from server.providers.local_stt import LocalWhisperSTT
from tests.speech import Utterance, speech_set

MODELS = ("tiny.en", "base", "small")


def words(text: str) -> list[str]:
    """Lower case, accents and punctuation folded away (the Spanish reference texts have no accents)."""
    return knowledge.tokens(text.replace("'", ""))


def edit_distance(ref: list[str], hyp: list[str]) -> int:
    row = list(range(len(hyp) + 1))
    for i, r in enumerate(ref, 1):
        prev, row[0] = row[0], i
        for j, h in enumerate(hyp, 1):
            prev, row[j] = row[j], min(row[j] + 1, row[j - 1] + 1, prev + (r != h))
    return row[-1]


def group_of(u: Utterance) -> str:
    if u.human:
        return "human"
    return "piper" if u.voice.startswith("piper") else "espeak"


@dataclass
class Tally:
    n: int = 0
    errors: int = 0
    ref_words: int = 0
    questions: int = 0
    right: int = 0
    seconds: list[float] | None = None
    rtf: list[float] | None = None

    def add(self, u: Utterance, heard: str, seconds: float, audio_s: float, entry: str | None) -> None:
        ref = words(u.text)
        self.n += 1
        self.errors += edit_distance(ref, words(heard))
        self.ref_words += len(ref)
        self.seconds = (self.seconds or []) + [seconds]
        self.rtf = (self.rtf or []) + [seconds / audio_s]
        if u.entry is not None:
            self.questions += 1
            self.right += entry == u.entry

    def row(self) -> dict[str, object]:
        return {
            "n": self.n,
            "wer_%": round(100 * self.errors / max(1, self.ref_words), 1),
            "ms_per_utt": round(statistics.median(self.seconds or [0]) * 1000),
            "rtf": round(statistics.median(self.rtf or [0]), 2),
            "kb_top1": f"{self.right}/{self.questions}" if self.questions else "-",
        }


async def timed(stt: LocalWhisperSTT, pcm: bytes, language: str | None, repeat: int):  # type: ignore[no-untyped-def]
    times, transcript = [], None
    for _ in range(repeat):
        t0 = time.perf_counter()
        transcript = await stt.transcribe(pcm, language)
        times.append(time.perf_counter() - t0)
    return statistics.median(times), transcript


async def measure(name: str, window: str, utterances: list[Utterance], concierge: Concierge, repeat: int
                  ) -> dict[str, object]:
    config = config_module.load(config_module.ROOT / "config.toml")
    config = replace(config, stt=replace(config.stt, provider="local", model=name, compute_type="int8", cpu_threads=2,
                                         window=window))
    try:
        stt = LocalWhisperSTT(config)
        t0 = time.perf_counter()
        await stt.start()
    except ConfigError as exc:
        return {"model": name, "error": str(exc)}
    load_s = time.perf_counter() - t0
    multilingual = name != "tiny.en" and not name.endswith(".en")
    languages = ("en", "es") if multilingual else ("en",)
    rows, detection, heard = [], [], []
    await stt.transcribe(utterances[0].pcm16k(), "en")  # warm-up
    for language in languages:
        tallies: dict[str, Tally] = defaultdict(Tally)
        for u in (u for u in utterances if u.language == language):
            pcm = u.pcm16k()
            seconds, transcript = await timed(stt, pcm, language, repeat)
            reply = concierge.reply([ChatMessage("user", transcript.text)], language)
            entry = reply.entry_id if reply.kind == "answer" else None
            heard.append({"id": u.id, "language": language, "heard": transcript.text, "entry": entry})
            tallies[group_of(u)].add(u, transcript.text, seconds, len(pcm) / 2 / STT_RATE, entry)
            tallies[u.voice if not u.human else "human " + u.kind].add(u, transcript.text, seconds,
                                                                        len(pcm) / 2 / STT_RATE, entry)
        for group in sorted(tallies, key=lambda g: (g not in ("human", "espeak", "piper"), g)):
            rows.append({"model": name, "window": window, "language": language, "voices": group, **tallies[group].row()})
    if multilingual and window == "full":  # detection does not depend on the window
        for group in ("human", "espeak", "piper"):
            chosen = [u for u in utterances if group_of(u) == group]
            right, times = 0, []
            for u in chosen:
                seconds, transcript = await timed(stt, u.pcm16k(), None, 1)
                right += transcript.language == u.language
                times.append(seconds)
            if chosen:
                detection.append({"model": name, "voices": group, "detected_right": f"{right}/{len(chosen)}",
                                  "ms_per_utt": round(statistics.median(times) * 1000)})
    await stt.aclose()
    return {"model": name, "window": window, "load_s": round(load_s, 2), "rows": rows, "detection": detection, "heard": heard}


async def main(models: list[str], windows: list[str], repeat: int, quick: bool) -> None:
    utterances = speech_set()
    if quick:  # a few of each voice
        seen: dict[str, int] = defaultdict(int)
        kept = []
        for u in utterances:
            if seen[u.voice] < (2 if u.human else 1):
                seen[u.voice] += 1
                kept.append(u)
        utterances = kept
    kb = knowledge.load(config_module.ROOT / "knowledge.toml")
    concierge = Concierge(kb)
    results = []
    for name in models:
        for window in windows:
            print(f"measuring {name}, {window} window ...", flush=True)
            results.append(await measure(name, window, utterances, concierge, repeat))
    rows = [r for res in results for r in res.get("rows", [])]
    print(table(rows, ["model", "window", "language", "voices", "n", "wer_%", "ms_per_utt", "rtf", "kb_top1"]))
    detection = [d for res in results for d in res.get("detection", [])]
    if detection:
        print("\nlanguage detection (transcribe with no language):")
        print(table(detection, ["model", "voices", "detected_right", "ms_per_utt"]))
    for res in results:
        if "error" in res:
            print(f"\n{res['model']}: not measured: {res['error']}")
        else:
            print(f"{res['model']} ({res['window']} window): load {res['load_s']} s")
    load = open("/proc/loadavg").read().split()[:3]
    print(f"\nload average at the end: {' '.join(load)} (a shared 2-core machine)")
    path = save("stt" if not quick else "stt_quick", {"repeat": repeat, "quick": quick, "loadavg": load,
                                                      "utterances": len(utterances), "results": results})
    print(f"wrote {path}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default=",".join(MODELS), help="comma-separated model names")
    parser.add_argument("--windows", default="short,full", help="comma-separated [stt] window values")
    parser.add_argument("--repeat", type=int, default=3, help="transcriptions per utterance (median time)")
    parser.add_argument("--quick", action="store_true", help="a few utterances per voice, once")
    args = parser.parse_args()
    asyncio.run(main(args.models.split(","), args.windows.split(","), 1 if args.quick else args.repeat, args.quick))
