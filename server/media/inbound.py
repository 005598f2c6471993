"""The caller's microphone: one consumer task per inbound audio track, for the whole call.

aiortc hands us 48 kHz stereo s16 frames from its Opus decoder (20 ms each). Every frame
is read (an unread track queues ~1 MB/s). Each is mixed to mono at 48 kHz and judged by
webrtcvad right away (it takes 48 kHz; going through 16 kHz first would hold every
verdict back one frame, as the resampler's output lags its input), and resampled to
16 kHz for STT with one ``av.AudioResampler`` per track. Each frame then goes to
``on_frame(pcm16k, voiced, rms, at)``. Mixing, resampling and VAD cost tens of
microseconds per frame, cheap enough to stay on the event loop.

webrtcvad keeps answering "speech" for about 100 ms after speech ends (its hangover),
which would add that much to every reply. An :class:`EnergyGate` trims it: a frame is
voiced only if the VAD says so *and* it stands ``margin_db`` above the tracked noise
floor, so the end-of-turn silence starts counting when the voice actually stops.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import av
import numpy as np
import webrtcvad
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack

RATE = 16000  # for STT
VAD_RATE = 48000
VAD_FRAME_BYTES = VAD_RATE * 20 // 1000 * 2

FrameSink = Callable[[bytes, bool, float, float], None]


class EnergyGate:
    """Is this frame loud enough to be speech? Tracks the noise floor: down at once to
    the quietest frame, up slowly (about 2 dB a second), never below ``min_rms``."""

    def __init__(self, margin_db: float = 10.0, min_rms: float = 60.0) -> None:
        self._gain = 10 ** (margin_db / 20)
        self._min_rms = min_rms
        self.floor = min_rms / self._gain

    def __call__(self, rms: float) -> bool:
        self.floor = max(1.0, min(rms, self.floor * 1.005))
        return rms >= max(self._min_rms, self.floor * self._gain)


class VoiceDetector:
    """Decoded frames in -> per 20 ms: (16 kHz mono s16 for STT, voiced, RMS)."""

    def __init__(self, aggressiveness: int = 2, energy_margin_db: float = 10.0) -> None:
        self._vad = webrtcvad.Vad(aggressiveness)
        self._gate = EnergyGate(energy_margin_db) if energy_margin_db > 0 else None
        self._mono = av.AudioResampler(format="s16", layout="mono", rate=VAD_RATE)
        self._stt = av.AudioResampler(format="s16", layout="mono", rate=RATE)
        self._pending = bytearray()  # 48 kHz mono not yet judged
        self._stt_pending = bytearray()  # 16 kHz mono not yet handed on

    def frames(self, frame: av.AudioFrame) -> list[tuple[bytes, bool, float]]:
        for mono in self._mono.resample(frame):
            self._pending += bytes(mono.planes[0])[: mono.samples * 2]
        for f in self._stt.resample(frame):
            self._stt_pending += bytes(f.planes[0])[: f.samples * 2]
        result = []
        while len(self._pending) >= VAD_FRAME_BYTES:
            pcm = bytes(self._pending[:VAD_FRAME_BYTES])
            del self._pending[:VAD_FRAME_BYTES]
            samples = np.frombuffer(pcm, dtype=np.int16).astype(np.float32)
            rms = float(np.sqrt(np.mean(samples * samples)))
            loud = self._gate is None or self._gate(rms)
            # The 16 kHz audio so far rides with the verdict (a few samples behind it).
            stt, self._stt_pending = bytes(self._stt_pending), bytearray()
            result.append((stt, self._vad.is_speech(pcm, VAD_RATE) and loud, rms))
        return result


async def consume(
    track: MediaStreamTrack,
    on_frame: FrameSink,
    *,
    aggressiveness: int = 2,
    energy_margin_db: float = 10.0,
    clock: Callable[[], float] = time.monotonic,
) -> None:
    """Read ``track`` until it ends, feeding ``on_frame``. Returns when the track ends."""
    detector = VoiceDetector(aggressiveness, energy_margin_db)
    while True:
        try:
            frame = await track.recv()
        except MediaStreamError:
            return
        at = clock()
        for pcm, voiced, rms in detector.frames(frame):
            on_frame(pcm, voiced, rms, at)
