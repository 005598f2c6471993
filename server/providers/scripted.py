"""Scripted providers: fixed transcript and reply, synthetic voice, configurable delays.

They ship in the package (not only in tests) because benchmarks and load tests need a
pipeline whose cost is known: with zero delays, what is measured is Sandra's own overhead.

Fault injection (``[scripted] fault`` on the caller's turns ``fault_turns``, counted from
1 by the call, see :data:`~server.providers.base.CALLER_TURN`): ``"stt"``, ``"llm"`` or
``"tts"`` make that provider raise its :class:`ProviderError`; ``"bug"`` makes the LLM
raise a plain ``RuntimeError`` after its first piece, as an unexpected defect would.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator

import numpy as np

from .. import visemes
from ..config import Config, ScriptedConfig
from ..errors import ProviderError
from .base import CALLER_TURN, LLM, STT_RATE, BatchSTT, LLMRequest, SentenceTTS, Transcript, TTSChunk

MS_PER_CHAR = 55.0
TTS_RATE = 24000
CHUNK_MS = 200


async def _sleep_ms(ms: float) -> None:
    if ms > 0:
        await asyncio.sleep(ms / 1000)


def _faulty(config: ScriptedConfig, fault: str) -> bool:
    return config.fault == fault and CALLER_TURN.get() in config.fault_turns


class ScriptedSTT(BatchSTT):
    name = "scripted"

    def __init__(self, config: Config) -> None:
        self._config = config.scripted

    async def transcribe(self, pcm: bytes, language: str) -> Transcript:
        await _sleep_ms(self._config.stt_ms)
        if _faulty(self._config, "stt"):
            raise ProviderError("scripted", f"injected STT fault on turn {CALLER_TURN.get()}")
        if len(pcm) / 2 / STT_RATE * 1000 < self._config.short_ms:
            text = self._config.short_transcript
            return Transcript(text, no_speech_prob=0.0 if text else 0.95, language=language)
        return Transcript(self._config.transcript, no_speech_prob=0.0, language=language)


class ScriptedLLM(LLM):
    name = "scripted"

    def __init__(self, config: Config) -> None:
        self._config = config.scripted

    async def reply(self, request: LLMRequest) -> AsyncIterator[str]:
        await _sleep_ms(self._config.llm_first_ms)
        if _faulty(self._config, "llm"):
            raise ProviderError("scripted", f"injected LLM fault on turn {CALLER_TURN.get()}")
        words = self._config.reply.split(" ")
        for i, word in enumerate(words):
            if i:
                await _sleep_ms(self._config.llm_piece_ms)
                if _faulty(self._config, "bug"):
                    raise RuntimeError(f"injected defect on turn {CALLER_TURN.get()}")
            yield word if i == len(words) - 1 else word + " "


def synthetic_voice_chunks(text: str, rate: int = TTS_RATE, chunk_ms: int = CHUNK_MS) -> Iterator[np.ndarray]:
    """A voiced, syllable-modulated waveform, ``MS_PER_CHAR`` ms per character (int16),
    made chunk by chunk, as a streaming synthesiser would deliver it."""
    n = max(1, int(len(text) * MS_PER_CHAR * rate / 1000))
    end = (n - 1) / rate
    step = rate * chunk_ms // 1000
    phase0 = 0.0
    for lo in range(0, n, step):
        t = np.arange(lo, min(n, lo + step)) / rate
        pitch = 160 + 20 * np.sin(2 * np.pi * 0.7 * t)
        phase = phase0 + 2 * np.pi * np.cumsum(pitch) / rate
        phase0 = float(phase[-1])
        wave = np.sin(phase) + 0.5 * np.sin(2 * phase) + 0.25 * np.sin(3 * phase)
        envelope = 0.55 + 0.45 * np.sin(2 * np.pi * 4.0 * t)
        ramp = np.minimum(1.0, np.minimum(t, end - t) / 0.01)  # 10 ms fade in/out
        yield (wave * envelope * ramp * 6000).astype(np.int16)


def synthetic_voice(text: str, rate: int = TTS_RATE) -> np.ndarray:
    return np.concatenate(list(synthetic_voice_chunks(text, rate)))


class ScriptedTTS(SentenceTTS):
    name = "scripted"

    def __init__(self, config: Config) -> None:
        self._config = config.scripted

    async def synthesize(self, text: str, language: str) -> AsyncIterator[TTSChunk]:
        await _sleep_ms(self._config.tts_first_ms)
        if _faulty(self._config, "tts"):
            raise ProviderError("scripted", f"injected TTS fault on turn {CALLER_TURN.get()}")
        words = text.split()
        # Word timings proportional to their length in characters, like the audio.
        starts, ends, pos = [], [], 0
        for word in words:
            start = text.index(word, pos)
            pos = start + len(word)
            starts.append(start * MS_PER_CHAR / 1000)
            ends.append(pos * MS_PER_CHAR / 1000)
        all_visemes = visemes.from_words(words, starts, ends)
        chunks = synthetic_voice_chunks(text, TTS_RATE)
        offset = 0
        chunk = next(chunks)
        while chunk is not None:
            following = next(chunks, None)
            lo_ms, hi_ms = offset / TTS_RATE * 1000, (offset + len(chunk)) / TTS_RATE * 1000
            last = following is None
            yield TTSChunk(
                chunk.tobytes(),
                TTS_RATE,
                tuple(v for v in all_visemes if lo_ms <= v.t_ms < hi_ms or (last and v.t_ms >= hi_ms)),
                text if last else "",
            )
            offset += len(chunk)
            chunk = following
            await asyncio.sleep(0)
