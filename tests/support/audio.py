"""Test audio: real speech from espeak-ng, resampled to what a browser sends (48 kHz)."""

from __future__ import annotations

import functools
import subprocess
import tempfile
import wave
from fractions import Fraction
from pathlib import Path

import av
import numpy as np

RATE = 48000


def resample(pcm: bytes, in_rate: int, out_rate: int = RATE) -> bytes:
    resampler = av.AudioResampler(format="s16", layout="mono", rate=out_rate)
    samples = np.frombuffer(pcm, dtype=np.int16).reshape(1, -1)
    frame = av.AudioFrame.from_ndarray(samples, format="s16", layout="mono")
    frame.sample_rate = in_rate
    frame.pts = 0
    frame.time_base = Fraction(1, in_rate)
    out = [f for f in resampler.resample(frame)] + [f for f in resampler.resample(None)]
    return b"".join(bytes(f.planes[0])[: f.samples * 2] for f in out)


@functools.lru_cache(maxsize=16)
def speech(text: str, voice: str = "en-us", rate: int = RATE, peak: float = 0.7) -> bytes:
    """``text`` spoken by espeak-ng, as mono s16 PCM at ``rate``, normalised to ``peak``."""
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "speech.wav"
        subprocess.run(["espeak-ng", "-v", voice, "-s", "160", "-w", str(path), text], check=True)
        with wave.open(str(path)) as w:
            pcm, in_rate = w.readframes(w.getnframes()), w.getframerate()
    samples = np.frombuffer(resample(pcm, in_rate, rate), dtype=np.int16).astype(np.float32)
    samples *= peak * 32767 / max(1.0, float(np.abs(samples).max()))
    return samples.astype(np.int16).tobytes()


def silence(ms: int, rate: int = RATE) -> bytes:
    return bytes(rate * ms // 1000 * 2)


def write_wav(path: Path, pcm: bytes, rate: int = RATE) -> Path:
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(pcm)
    return path


def rms(pcm: bytes) -> float:
    samples = np.frombuffer(pcm, dtype=np.int16).astype(np.float32)
    return float(np.sqrt(np.mean(samples * samples))) if samples.size else 0.0


def tone16k(seconds: float, hz: float = 220.0, amplitude: int = 8000) -> bytes:
    """A steady tone as 16 kHz mono s16le, what the call feeds STT providers."""
    t = np.arange(int(16000 * seconds)) / 16000
    return (np.sin(2 * np.pi * hz * t) * amplitude).astype("<i2").tobytes()
