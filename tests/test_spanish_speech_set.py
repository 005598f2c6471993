"""The speech set (tests/speech): human recordings with their texts, and synthetic voices."""

from __future__ import annotations

import wave
from collections import Counter

from server import knowledge
from server.config import ROOT
from tests.speech import build, speech_set
from tests.support.audio import rms


def test_the_set_has_human_and_synthetic_speakers_in_both_languages() -> None:
    utterances = speech_set()
    voices = Counter((u.voice, u.language) for u in utterances)
    assert voices[("human-en", "en")] >= build.PROMPTS_PER_LANGUAGE
    assert voices[("human-es", "es")] >= build.PROMPTS_PER_LANGUAGE
    for voice, (language, _) in build.ESPEAK_VOICES.items():
        assert voices[(voice, language)] == build.QUESTIONS_PER_VOICE
    assert voices[("piper-joe", "en")] == build.QUESTIONS_PER_VOICE
    assert len({u.id for u in utterances}) == len(utterances)
    kb = knowledge.load(ROOT / "knowledge.toml")
    for u in utterances:
        assert u.text.strip(), u.id
        if u.kind == "question":
            kb.get(u.entry)  # a real entry


def test_every_recording_is_48k_mono_speech_and_prompts_carry_the_package_text() -> None:
    texts = {lang: build.prompt_texts(lang) for lang in build.SPEAKERS}
    for u in speech_set():
        with wave.open(str(u.wav_path)) as w:
            assert (w.getframerate(), w.getnchannels(), w.getsampwidth()) == (48000, 1, 2), u.id
            assert 0.3 < w.getnframes() / 48000 < 10, u.id
        assert rms(u.pcm48k()) > 1000, u.id
        if u.kind == "prompt":
            assert texts[u.language][u.id.removeprefix(f"human-{u.language}-")] == u.text
