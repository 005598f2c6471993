"""Echo guard: keeps Sandra's own voice, returned by the caller's speakers, from
counting as the caller speaking.

The server knows exactly what it played and when. A frame of inbound audio that the VAD
calls voiced is taken for echo when it is not louder than the loudest outbound frame of
the last ``window_s`` (the echo path's delay: network both ways, the browser's playout
and capture buffers) scaled by the expected echo return (``return_db``, e.g. -10 dB for a
phone on speaker) plus a safety ``margin_db``. Browsers' own echo cancellation removes
most echo first; this catches what leaks through. Pure: times are passed in.

Limits: an energy test, not a waveform match. A caller speaking softly over a loud
Sandra is not heard until she stops or they speak up; a loud room or a phone with no
echo cancellation that returns more than ``return_db`` can still trigger a barge-in.
"""

from __future__ import annotations

import math
from collections import deque


class EchoGuard:
    def __init__(self, *, return_db: float = -10.0, margin_db: float = 6.0, window_s: float = 0.6) -> None:
        self._gain = 10 ** ((return_db + margin_db) / 20)
        self._window = window_s
        self._out: deque[tuple[float, float]] = deque()  # (at, rms), at ascending

    def played(self, at: float, rms: float) -> None:
        """Sandra's outbound frame with this RMS left at ``at``."""
        if rms > 0:
            self._out.append((at, rms))
        self._trim(at)

    def reset(self) -> None:
        self._out.clear()

    def is_echo(self, at: float, rms: float) -> bool:
        """Could inbound audio of this RMS at ``at`` be Sandra's own voice?"""
        self._trim(at)
        if not self._out:
            return False
        loudest = max(r for _, r in self._out)
        return rms <= loudest * self._gain

    def _trim(self, now: float) -> None:
        while self._out and self._out[0][0] < now - self._window:
            self._out.popleft()


def rms_dbfs(rms: float) -> float:
    return 20 * math.log10(rms / 32768) if rms > 0 else -math.inf
