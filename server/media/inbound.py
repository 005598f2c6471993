"""The caller's microphone: one consumer task per inbound audio track, for the whole call.

aiortc hands us 48 kHz stereo s16 frames from its Opus decoder (20 ms each). Every frame
is read (an unread track queues ~1 MB/s), resampled to 16 kHz mono with one
``av.AudioResampler`` per track (aligned so that each frame in gives its 20 ms frame out
at once, not one frame later) and judged by webrtcvad; each then goes to
``on_frame(pcm16k, voiced, rms, at)``. About 20 microseconds per frame (measured with
timeit), cheap enough to stay on the event loop.

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

RATE = 16000
FRAME_BYTES = RATE * 20 // 1000 * 2

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
    """Decoded frames in -> per 20 ms: (16 kHz mono s16, voiced, RMS)."""

    def __init__(self, aggressiveness: int = 2, energy_margin_db: float = 10.0) -> None:
        self._vad = webrtcvad.Vad(aggressiveness)
        self._gate = EnergyGate(energy_margin_db) if energy_margin_db > 0 else None
        self._resampler = av.AudioResampler(format="s16", layout="mono", rate=RATE)
        self._pending = bytearray()  # 16 kHz mono not yet judged
        self._aligned = False

    def frames(self, frame: av.AudioFrame) -> list[tuple[bytes, bool, float]]:
        for out in self._resampler.resample(frame):
            pcm = bytes(out.planes[0])[: out.samples * 2]
            if not self._aligned and pcm:
                # The resampler's first output is a few samples short (its filter delay).
                # Pad it so that 20 ms frames out line up with the frames in: otherwise
                # every verdict would wait for the next frame, 20 ms late.
                self._aligned = True
                short = (-len(pcm)) % FRAME_BYTES if len(pcm) < FRAME_BYTES else 0
                pcm = bytes(short) + pcm
            self._pending += pcm
        result = []
        while len(self._pending) >= FRAME_BYTES:
            pcm = bytes(self._pending[:FRAME_BYTES])
            del self._pending[:FRAME_BYTES]
            samples = np.frombuffer(pcm, dtype=np.int16).astype(np.float32)
            rms = float(np.sqrt(np.dot(samples, samples) / samples.size))
            loud = self._gate is None or self._gate(rms)
            result.append((pcm, loud and self._vad.is_speech(pcm, RATE), rms))
        return result


async def consume(
    track: MediaStreamTrack,
    on_frame: FrameSink,
    *,
    aggressiveness: int = 2,
    energy_margin_db: float = 10.0,
    clock: Callable[[], float] = time.monotonic,
    tap: Callable[[av.AudioFrame, float], None] | None = None,
) -> None:
    """Read ``track`` until it ends, feeding ``on_frame`` (and ``tap`` each decoded frame
    as received, e.g. the recorder). Returns when the track ends."""
    detector = VoiceDetector(aggressiveness, energy_margin_db)
    while True:
        try:
            frame = await track.recv()
        except MediaStreamError:
            return
        at = clock()
        if tap is not None:  # the recorder's caller channel
            tap(frame, at)
        for pcm, voiced, rms in detector.frames(frame):
            on_frame(pcm, voiced, rms, at)
