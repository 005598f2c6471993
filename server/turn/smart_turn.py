"""Smart Turn v3.2: an audio model that says whether a spoken turn sounds finished.

The model (``smart-turn-v3.2-cpu.onnx``, 8.7 MB, BSD-2-Clause, from the pinned pipecat-ai
wheel by ``scripts/fetch-smart-turn.py``) reads Whisper log-mel features of the last 8 s
of a turn at 16 kHz and returns the probability that the turn is complete.

Features, as the model was trained on them: the last 8 s of audio, zero-padded at the
front to 128000 samples, the whole window normalised to zero mean and unit variance, then
Whisper's 80-bin log-mel (faster-whisper's numpy :class:`FeatureExtractor`, which matches
the reference extractor to 1.5e-7), ``[1, 80, 800]`` float32.

:class:`SmartTurnModel` is thread-safe: onnxruntime's ``InferenceSession.run`` may be
called from several executor threads at once, each inference on one intra-op thread.
Everything here is blocking CPU work (about 40-90 ms a call): run it off the event loop.
"""

from __future__ import annotations

import functools
from pathlib import Path

import numpy as np

from ..errors import ConfigError

RATE = 16000
WINDOW_SAMPLES = 8 * RATE
MEL_BINS = 80
FRAMES = 800
FETCH_HINT = "run `make run` or `python scripts/fetch-smart-turn.py` to fetch it, or set [turn] detector = \"silence\""
_NORM_EPS = 1e-7


@functools.cache
def _extractor():  # type: ignore[no-untyped-def]
    from faster_whisper.feature_extractor import FeatureExtractor

    return FeatureExtractor(feature_size=MEL_BINS, sampling_rate=RATE, chunk_length=WINDOW_SAMPLES // RATE)


def window(pcm16k: bytes) -> np.ndarray:
    """The last 8 s of 16 kHz mono s16le ``pcm16k`` as float32, zero-padded at the front."""
    samples = np.frombuffer(pcm16k[: len(pcm16k) // 2 * 2], dtype="<i2")[-WINDOW_SAMPLES:]
    audio = np.zeros(WINDOW_SAMPLES, dtype=np.float32)
    if samples.size:
        audio[-samples.size :] = samples.astype(np.float32) / 32768.0
    return audio


def features(pcm16k: bytes) -> np.ndarray:
    """``input_features`` for the model: float32 ``[1, 80, 800]``."""
    audio = window(pcm16k)
    audio = (audio - audio.mean()) / np.sqrt(audio.var() + _NORM_EPS)
    log_mel = _extractor()(audio, padding=0)
    return log_mel[np.newaxis].astype(np.float32)


def check_model(path: Path, where: str) -> Path:
    """``path`` if it is a file, else a :class:`ConfigError` that says how to get it."""
    if not path.is_file():
        raise ConfigError(f"{where}: no Smart Turn model at {path}; {FETCH_HINT}")
    return path


@functools.cache
def _session(path: str, threads: int):  # type: ignore[no-untyped-def]
    """One onnxruntime session per model file and thread count, shared by the whole process."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.inter_op_num_threads = 1
    options.intra_op_num_threads = threads
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.log_severity_level = 3
    return ort.InferenceSession(path, sess_options=options, providers=["CPUExecutionProvider"])


class SmartTurnModel:
    """The loaded model. Construct it off the event loop (about 0.1-0.3 s the first time)."""

    def __init__(self, path: Path, *, threads: int = 1, where: str = "[turn] model") -> None:
        check_model(path, where)
        try:
            self._session = _session(str(path.resolve()), threads)
        except Exception as exc:  # onnxruntime raises its own exception types for a bad file
            raise ConfigError(f"{where}: {path} is not a loadable ONNX model: {exc}") from None
        inputs = self._session.get_inputs()
        if [i.name for i in inputs] != ["input_features"] or list(inputs[0].shape[1:]) != [MEL_BINS, FRAMES]:
            raise ConfigError(f"{where}: {path} does not take input_features [batch, 80, 800]: not Smart Turn v3")
        self.path = path

    def probability(self, pcm16k: bytes) -> float:
        """Probability that the turn ending with ``pcm16k`` is complete (thread-safe, blocking)."""
        (out,) = self._session.run(None, {"input_features": features(pcm16k)})
        return float(np.asarray(out).reshape(-1)[0])
