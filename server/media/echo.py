"""Echo guard: keeps Sandra's own voice, returned by the caller's speakers, from
counting as the caller speaking.

The server knows exactly what it played and when. For each inbound frame heard while
Sandra's voice is within the echo window (``window_s``: network both ways plus the
browser's playout and capture buffers), the guard takes the ratio of its RMS to the
loudest outbound frame in that window. While Sandra is playing, the frames that are not
the caller (unvoiced, or judged echo) describe the echo path itself: the guard learns
it as the 95th percentile of their ratios over the last ``history`` such frames (5 s),
starting from ``return_db`` before it has measured any. Frames judged to be the caller
are not learned from, nor are frames after Sandra stopped (the caller's reply).
A voiced frame counts as the caller only when it is ``margin_db`` louder than that echo
level. With good browser echo cancellation the learned level falls near zero and any
speech interrupts; on a phone on speaker with no cancellation it settles at the real
echo return and Sandra's own voice is ignored.

Limits: an energy test, not a waveform match. Over a device that returns a lot of echo,
a caller speaking softly over Sandra is not heard until they speak up or she stops; an
echo path that changes suddenly (the caller unmutes a loud speaker) is learned within a
few seconds, during which a false barge-in is possible. Pure: times are passed in.
"""

from __future__ import annotations

from collections import deque

_PLAYING_S = 0.1  # Sandra counts as playing until this long after her last audible frame


class EchoGuard:
    def __init__(
        self,
        *,
        return_db: float = -10.0,
        margin_db: float = 6.0,
        window_s: float = 0.6,
        history: int = 250,
        min_history: int = 25,
    ) -> None:
        self._prior = 10 ** (return_db / 20)
        self._margin = 10 ** (margin_db / 20)
        self._window = window_s
        self._min_history = min_history
        self._out: deque[tuple[float, float]] = deque()  # (at, rms) of Sandra's frames, at ascending
        self._ratios: deque[float] = deque(maxlen=history)
        self._level: float | None = None  # learned echo return (linear), None until measured
        self._learned = 0

    def played(self, at: float, rms: float) -> None:
        """Sandra's outbound frame with this RMS left at ``at``."""
        if rms > 0:
            self._out.append((at, rms))
        self._trim(at)

    @property
    def echo_level(self) -> float:
        """The echo return in use: learned, or the prior before enough was heard."""
        return self._prior if self._level is None else self._level

    def is_echo(self, at: float, rms: float, voiced: bool = True) -> bool:
        """Could inbound audio of this RMS at ``at`` be Sandra's own voice?
        ``voiced`` is the VAD's verdict on it (unvoiced frames are always learned from)."""
        self._trim(at)
        if not self._out:
            return False
        ratio = rms / max(r for _, r in self._out)
        echo = ratio <= self.echo_level * self._margin
        if (echo or not voiced) and self._out[-1][0] >= at - _PLAYING_S:
            self._learn(ratio)
        return echo

    def _learn(self, ratio: float) -> None:
        self._ratios.append(ratio)
        self._learned += 1
        if len(self._ratios) >= self._min_history and self._learned % 5 == 0:
            ordered = sorted(self._ratios)
            self._level = ordered[int(0.95 * (len(ordered) - 1))]

    def _trim(self, now: float) -> None:
        while self._out and self._out[0][0] < now - self._window:
            self._out.popleft()
