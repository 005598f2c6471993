"""End-of-turn evidence (issue 10): text cues, backchannels, Smart Turn features, model, detectors."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest

from server import config as configuration
from server.app import create_app
from server.errors import ConfigError
from server.turn import SilenceDetector, SmartDetector, Verdict, create, decide, interrupts, is_backchannel, unfinished
from server.turn.smart_turn import RATE, WINDOW_SAMPLES, SmartTurnModel, features, window

ROOT = Path(__file__).resolve().parent.parent


def pcm_of(samples: np.ndarray) -> bytes:
    return np.asarray(samples, dtype="<i2").tobytes()


def chirp(seconds: float, amplitude: float = 8000.0, seed: int = 0) -> np.ndarray:
    """Speech-like test audio: a gliding tone with noise, varying in loudness."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(RATE * seconds)) / RATE
    tone = np.sin(2 * np.pi * (150 + 100 * t) * t) * (0.5 + 0.5 * np.sin(2 * np.pi * 3 * t))
    return (amplitude * tone + 300 * rng.standard_normal(t.size)).astype(np.int16)


# ---------- words


@pytest.mark.parametrize(
    ("text", "language", "reason"),
    [
        ("I would like to know the", "en", "ends with 'the'"),
        ("I would like to know the.", "en", "ends with 'the'"),
        ("Is there a supermarket and?", "en", "ends with 'and'"),
        ("Can I have a late checkout for...", "en", "ends with 'for'"),
        ("I was wondering if", "en", "ends with 'if'"),
        ("Where can I park my", "en", "ends with 'my'"),
        ("Quisiera saber la", "es", "ends with 'la'"),
        ("¿Hay un supermercado y?", "es", "ends with 'y'"),
        ("Me gustaría reservar una mesa para.", "es", "ends with 'para'"),
        ("Quería preguntar si", "es", "ends with 'si'"),
        ("No sé porque", "es", "ends with 'porque'"),
        ("La habitación de", "es", "ends with 'de'"),
        ("Wait.", "en", "only an opener"),
        ("Hold on,", "en", "only an opener"),
        ("Um, sorry.", "en", "only an opener"),
        ("Espera.", "es", "only an opener"),
        ("Perdona, a ver...", "es", "only an opener"),
        ("What time is?", "en", "a question that stops at 'is'"),
        ("Where can I?", "en", "a question that stops at 'can i'"),
        ("How do I", "en", "a question that stops at 'do i'"),
        ("¿Dónde puedo?", "es", "a question that stops at 'puedo'"),
    ],
)
def test_an_utterance_ending_in_a_function_word_is_unfinished(text: str, language: str, reason: str) -> None:
    assert unfinished(text, language) == reason


@pytest.mark.parametrize(
    ("text", "language"),
    [
        ("What time is check-in?", "en"),
        ("What time can I check in?", "en"),
        ("Where are you from?", "en"),
        ("Is breakfast included", "en"),
        ("What is it about?", "en"),
        ("¿Por qué?", "es"),
        ("Sí.", "es"),
        ("¿A qué hora es el desayuno?", "es"),
        ("Quisiera reservar una mesa para dos.", "es"),
        ("Sorry?", "en"),  # asks her to say it again
        ("¿Perdón?", "es"),
        ("Wait, is there parking?", "en"),
        ("What time is it?", "en"),
        ("Do you know where it is?", "en"),
        ("What do you think it is?", "en"),
        ("Can I?", "en"),
        ("¿Qué hora es?", "es"),
        ("No puedo.", "es"),
        ("", "en"),
        (None, "es"),
    ],
)
def test_a_finished_utterance_has_no_text_cue(text: str | None, language: str) -> None:
    assert unfinished(text, language) is None


def test_text_cues_follow_the_language() -> None:
    assert unfinished("Quiero un taxi para la", "en") is None  # not English words
    assert unfinished("I would like the", "es") is None
    assert unfinished("I would like the", "fr") is None  # no list: the words never veto


@pytest.mark.parametrize(
    ("text", "language"),
    [
        ("Uh-huh.", "en"), ("Uh huh", "en"), ("uhhuh", "en"), ("Mm-hmm.", "en"), ("Mhm.", "en"), ("Mmm.", "en"),
        ("Yeah.", "en"), ("Yes.", "en"), ("OK.", "en"), ("Okay, okay.", "en"), ("Right.", "en"), ("Sure.", "en"),
        ("I see.", "en"), ("Oh, I see.", "en"), ("Yeah, yeah, right.", "en"),
        ("Vale.", "es"), ("Vale, vale.", "es"), ("VALE VALE VALE", "es"), ("Sí.", "es"), ("Si, si.", "es"),
        ("Ajá.", "es"), ("Aja", "es"), ("Claro.", "es"), ("Ya.", "es"), ("Ya, ya.", "es"), ("Mhm.", "es"),
        ("Entiendo.", "es"), ("Sí, claro.", "es"), ("De acuerdo.", "es"), ("Vale, entiendo.", "es"),
    ],
)
def test_backchannels_in_both_languages(text: str, language: str) -> None:
    assert is_backchannel(text, language)
    assert not interrupts(text, language)


@pytest.mark.parametrize(
    ("text", "language"),
    [
        ("Wait, is there parking?", "en"),
        ("Yeah, but what time?", "en"),
        ("Okay, and the wifi password?", "en"),
        ("No.", "en"),
        ("Stop.", "en"),
        ("Espera, ¿hay aparcamiento?", "es"),
        ("Vale, pero ¿a qué hora?", "es"),
        ("Sí, quiero un taxi.", "es"),
        ("No, mañana.", "es"),
    ],
)
def test_real_interruptions_are_not_backchannels(text: str, language: str) -> None:
    assert not is_backchannel(text, language)
    assert interrupts(text, language)


def test_no_words_is_neither_a_backchannel_nor_an_interruption() -> None:
    for text in ("", "...", None, "  "):
        assert not is_backchannel(text, "en")
        assert not interrupts(text, "en")


def test_backchannel_lists_follow_the_language() -> None:
    assert not is_backchannel("Vale.", "en")
    assert not is_backchannel("I see.", "es")
    assert is_backchannel("Vale.", "de") and is_backchannel("I see.", "de")  # unknown language: any list


# ---------- features


def test_features_are_80_mel_bins_by_800_frames_of_the_last_8_seconds() -> None:
    out = features(pcm_of(chirp(1.5)))
    assert out.shape == (1, 80, 800) and out.dtype == np.float32
    assert np.isfinite(out).all()
    # Whisper's scaling: log10 mel clipped 8 below the peak, then (x + 4) / 4.
    assert out.max() - out.min() <= 2.0 + 1e-6


def test_short_audio_is_zero_padded_at_the_front() -> None:
    speech = chirp(2.0)
    assert np.array_equal(window(pcm_of(speech))[-speech.size :], speech / 32768.0)
    assert not window(pcm_of(speech))[: WINDOW_SAMPLES - speech.size].any()
    padded = np.concatenate([np.zeros(RATE * 3, dtype=np.int16), speech])
    assert np.array_equal(features(pcm_of(speech)), features(pcm_of(padded)))


def test_only_the_last_8_seconds_count() -> None:
    long = chirp(11.0, seed=1)
    assert np.array_equal(features(pcm_of(long)), features(pcm_of(long[-WINDOW_SAMPLES:])))
    assert not np.array_equal(features(pcm_of(long)), features(pcm_of(long[:WINDOW_SAMPLES])))


def test_the_waveform_is_normalised_before_the_spectrogram() -> None:
    quiet, loud = chirp(2.0, amplitude=1000.0), chirp(2.0, amplitude=1000.0).astype(np.int32) * 8
    assert np.allclose(features(pcm_of(quiet)), features(pcm_of(loud.astype(np.int16))), atol=2e-3)


# ---------- configuration and model loading


def test_turn_config_defaults_and_validation() -> None:
    turn = configuration.load(ROOT / "config.toml", env={}).turn
    assert (turn.detector, turn.min_silence_ms, turn.max_silence_ms, turn.confirm_ms, turn.resume_ms) == (
        "smart", 200, 2000, 1200, 400)
    env = configuration.load(env={"SANDRA_TURN_DETECTOR": "silence", "SANDRA_TURN_THRESHOLD": "0.6"}).turn
    assert (env.detector, env.threshold) == ("silence", 0.6)
    bad = [
        ({"detector": "vad"}, 'detector must be "smart" or "silence"'),
        ({"min_silence_ms": 210}, "min_silence_ms must be a non-negative multiple of 20 ms"),
        ({"min_silence_ms": 2200}, "must be less than max_silence_ms"),
        ({"sound_end_ms": 0}, "must be positive"),
        ({"confirm_ms": -20}, "confirm_ms must be a non-negative multiple of 20 ms"),
        ({"threshold": 1.5}, "threshold must be between 0 and 1"),
        ({"threads": 0}, "threads must be between 1 and 16"),
        ({"patience": 3}, "unknown key"),
    ]
    for values, message in bad:
        with pytest.raises(ConfigError, match=message):
            configuration.load(turn=values)


def test_a_missing_model_is_a_startup_error_that_says_how_to_get_it(tmp_path: Path) -> None:
    config = configuration.load(turn={"model": str(tmp_path / "nowhere.onnx")}, stt={"provider": "scripted"},
                                llm={"provider": "scripted"}, tts={"provider": "scripted"})
    for build in (lambda: create(config), lambda: create_app(config)):
        with pytest.raises(ConfigError, match=r"\[turn\] model = .*nowhere.onnx.*scripts/fetch-smart-turn.py.*\"silence\""):
            build()
    silence = configuration.load(turn={"model": str(tmp_path / "nowhere.onnx"), "detector": "silence"})
    assert isinstance(create(silence), SilenceDetector)


def test_a_file_that_is_not_the_model_is_a_clear_error(tmp_path: Path) -> None:
    junk = tmp_path / "smart-turn.onnx"
    junk.write_bytes(b"not an onnx model")
    with pytest.raises(ConfigError, match="is not a loadable ONNX model"):
        SmartTurnModel(junk)


# ---------- detectors


def test_decide_lets_the_words_veto_and_the_audio_decide() -> None:
    assert decide(0.9, "What time is check-in?", "en", 0.5) == Verdict(True, 0.9, ("audio 0.90 >= 0.5",))
    assert decide(0.2, "What time is check-in?", "en", 0.5) == Verdict(False, 0.2, ("audio 0.20 < 0.5",))
    assert decide(0.95, "I would like to know the.", "en", 0.5) == Verdict(
        False, 0.95, ("audio 0.95 >= 0.5", "words: ends with 'the'"))
    assert decide(None, "Quisiera saber si", "es", 0.5) == Verdict(False, None, ("words: ends with 'si'",))
    assert decide(None, None, "en", 0.5) == Verdict(True, None, ())


def test_the_silence_detector_always_ends_the_turn() -> None:
    assert SilenceDetector().judge(b"", "I would like to know the", "en") == Verdict(True, None, ("silence",))


@pytest.fixture(scope="module")
def smart() -> SmartDetector:
    detector = create(configuration.load(ROOT / "config.toml"))
    assert isinstance(detector, SmartDetector)
    return detector


@pytest.fixture(scope="module")
def piper() -> dict[str, bytes]:
    from bench.eot import piper_speech

    silence = bytes(RATE * 2 // 5)  # 200 ms: what the core holds when it first asks
    return {text: piper_speech(text, deterministic=True) + silence for text in (
        "Is there a supermarket near the hotel?", "Could you call me a taxi, please?",
        "Is there a supermarket and", "I was wondering if")}


def test_smart_detector_on_a_neural_voice(smart: SmartDetector, piper: dict[str, bytes]) -> None:
    verdicts = {text: smart.judge(pcm, None, "en") for text, pcm in piper.items()}
    assert [v.complete for v in verdicts.values()] == [True, True, False, False], verdicts
    # Words the audio did not catch still veto.
    pcm = piper["Could you call me a taxi, please?"]
    assert smart.judge(pcm, "Could you call me a taxi, please?", "en").complete
    assert not smart.judge(pcm, "Could you call me a", "en").complete


def test_concurrent_judgements_agree_with_sequential_ones(smart: SmartDetector, piper: dict[str, bytes]) -> None:
    clips = list(piper.values())
    alone = [smart.probability(pcm) for pcm in clips]
    with ThreadPoolExecutor(max_workers=len(clips)) as pool:
        together = list(pool.map(smart.probability, clips))
    assert together == pytest.approx(alone, abs=1e-5)


# ---------- scripts/fetch-smart-turn.py


def _fetch_script():  # type: ignore[no-untyped-def]
    import importlib.util

    spec = importlib.util.spec_from_file_location("fetch_smart_turn", ROOT / "scripts" / "fetch-smart-turn.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_fetch_script_refuses_a_model_whose_sha256_is_not_the_pinned_one(tmp_path: Path) -> None:
    import zipfile

    fetch = _fetch_script()
    wheel = tmp_path / "pipecat_ai-1.14.0-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as archive:
        archive.writestr(fetch.MEMBER, b"a tampered model")
    dest = tmp_path / "data" / "smart-turn-v3.2-cpu.onnx"
    with pytest.raises(SystemExit, match=f"has sha256 .*, expected {fetch.SHA256}"):
        fetch.install_from_wheel(wheel, dest)
    assert not dest.exists() and not dest.with_suffix(".partial").exists()
    with zipfile.ZipFile(wheel, "w") as archive:
        archive.writestr("pipecat/other.py", b"")
    with pytest.raises(SystemExit, match="holds no pipecat/audio/turn/smart_turn/data/smart-turn-v3.2-cpu.onnx"):
        fetch.install_from_wheel(wheel, dest)
