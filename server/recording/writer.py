"""The Ogg/Opus file, written as the call goes (runs on the recorder's thread, not the loop).

Pages are flushed at least every ``PAGE_MS`` and each packet goes to disk at once, so the
file on disk always plays up to within about a second of now.
"""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import av
import numpy as np

PAGE_MS = 500
BIT_RATE = 32000  # stereo speech


class OggOpusWriter:
    def __init__(self, path: Path, rate: int = 48000) -> None:
        self.path = path
        self.rate = rate
        options = {"page_duration": str(PAGE_MS * 1000), "flush_packets": "1"}
        self._container = av.open(str(path), "w", format="ogg", options=options)
        self._stream = self._container.add_stream("libopus", rate=rate, layout="stereo")
        self._stream.bit_rate = BIT_RATE
        self._time_base = Fraction(1, rate)
        self._pts = 0
        self._closed = False

    def write(self, stereo: bytes) -> None:
        """Interleaved stereo s16 at ``rate``."""
        if not stereo or self._closed:
            return
        samples = np.frombuffer(stereo, dtype=np.int16).reshape(1, -1)
        frame = av.AudioFrame.from_ndarray(samples, format="s16", layout="stereo")
        frame.sample_rate = self.rate
        frame.time_base = self._time_base
        frame.pts = self._pts
        self._pts += samples.shape[1] // 2
        for packet in self._stream.encode(frame):
            self._container.mux(packet)

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        for packet in self._stream.encode(None):
            self._container.mux(packet)
        self._container.close()
