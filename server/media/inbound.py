"""The caller's microphone: one consumer task per inbound audio track, for the whole call.

aiortc hands us 48 kHz stereo s16 frames from its Opus decoder (20 ms each). Every frame
is read (an unread track queues ~1 MB/s), resampled to 16 kHz mono with one
``av.AudioResampler`` per track, cut into 20 ms frames and judged by webrtcvad. Each
frame then goes to ``on_frame(pcm, voiced, rms, at)``. Resampling and VAD cost tens of
microseconds per frame (bench/), cheap enough to stay on the event loop.
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


class VoiceDetector:
    """16 kHz mono s16 in any chunking -> 20 ms frames with a VAD verdict and RMS."""

    def __init__(self, aggressiveness: int = 2) -> None:
        self._vad = webrtcvad.Vad(aggressiveness)
        self._resampler = av.AudioResampler(format="s16", layout="mono", rate=RATE)
        self._pending = bytearray()

    def frames(self, frame: av.AudioFrame) -> list[tuple[bytes, bool, float]]:
        for out in self._resampler.resample(frame):
            self._pending += bytes(out.planes[0])[: out.samples * 2]
        result = []
        while len(self._pending) >= FRAME_BYTES:
            pcm = bytes(self._pending[:FRAME_BYTES])
            del self._pending[:FRAME_BYTES]
            samples = np.frombuffer(pcm, dtype=np.int16).astype(np.float32)
            rms = float(np.sqrt(np.mean(samples * samples)))
            result.append((pcm, self._vad.is_speech(pcm, RATE), rms))
        return result


async def consume(
    track: MediaStreamTrack,
    on_frame: FrameSink,
    *,
    aggressiveness: int = 2,
    clock: Callable[[], float] = time.monotonic,
) -> None:
    """Read ``track`` until it ends, feeding ``on_frame``. Returns when the track ends."""
    detector = VoiceDetector(aggressiveness)
    while True:
        try:
            frame = await track.recv()
        except MediaStreamError:
            return
        at = clock()
        for pcm, voiced, rms in detector.frames(frame):
            on_frame(pcm, voiced, rms, at)
