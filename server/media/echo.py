"""Echo guard: keeps Sandra's own voice, returned by the caller's speakers, from
counting as the caller speaking.

The server knows exactly what it played and when. For each inbound frame heard while
Sandra's voice is within the echo window (``window_s``: network both ways plus the
browser's playout and capture buffers), the guard takes the ratio of its RMS to the
loudest outbound frame in that window. While Sandra is playing the caller is almost
always silent, so those ratios describe the echo path itself: the guard learns it as
their 95th percentile over the last ``history`` frames (5 s), starting from
``return_db`` before it has heard enough (the greeting teaches it). What may be the
caller is not learned from: voiced frames louder than the echo level, frames after
Sandra stopped (the caller's answer), and a barge-in's frames from its onset on (the
call tells the guard to :meth:`forget_since`), so interruptions never teach it to
ignore the caller. A voiced frame counts as the caller
only when it is ``margin_db`` louder than the learned echo. With good browser echo
cancellation the learned level falls near zero and any speech interrupts; on a phone on
speaker with no cancellation it settles at the real echo return.

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
        self._ratios: deque[tuple[float, float]] = deque(maxlen=history)  # (at, ratio)
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
        """Could inbound audio of this RMS at ``at`` (``voiced`` by the VAD) be Sandra's
        own voice?"""
        self._trim(at)
        if not self._out:
            return False
        ratio = rms / max(r for _, r in self._out)
        echo = ratio <= self.echo_level * self._margin
        if (echo or not voiced) and self._out[-1][0] >= at - _PLAYING_S:
            self._ratios.append((at, ratio))
            self._learned += 1
            if self._learned % 5 == 0:
                self._update()
        return echo

    def forget_since(self, at: float) -> None:
        """What was heard from ``at`` on was the caller, not echo (a barge-in)."""
        while self._ratios and self._ratios[-1][0] >= at:
            self._ratios.pop()
        self._update()

    def _update(self) -> None:
        if len(self._ratios) < self._min_history:
            self._level = None
            return
        ordered = sorted(r for _, r in self._ratios)
        self._level = ordered[int(0.95 * (len(ordered) - 1))]

    def _trim(self, now: float) -> None:
        while self._out and self._out[0][0] < now - self._window:
            self._out.popleft()
