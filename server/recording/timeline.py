"""Two mono 48 kHz streams laid side by side on the call's clock (pure: times passed in).

Each channel is placed where its frames say they belong: a frame heard or sent at ``at``
starts at sample ``(at - start) * rate``. Frames that arrive a little early or late
(network jitter, up to ``SLACK_MS``) are appended where the channel's audio ends, so no
audio is repeated or lost; a longer gap (no packets, a stalled loop) becomes silence, and
a channel more than ``SLACK_MS`` ahead of the clock drops frames until it is back: each
channel stays within ``SLACK_MS`` of its place for the whole call. :meth:`take` hands out interleaved stereo
s16 in whole 20 ms frames up to a time; audio for a time already handed out is dropped.
"""

from __future__ import annotations

import numpy as np

FRAME_MS = 20
SLACK_MS = 100


class _Channel:
    def __init__(self) -> None:
        self.buf = np.zeros(0, dtype=np.int16)  # pending samples, from the timeline's ``emitted`` on

    def take(self, n: int) -> np.ndarray:
        if self.buf.size < n:
            self.buf = np.concatenate([self.buf, np.zeros(n - self.buf.size, np.int16)])
        out, self.buf = self.buf[:n], self.buf[n:]
        return out


class StereoTimeline:
    """Left: the caller; right: Sandra. ``start`` is the call's first frame (monotonic s)."""

    def __init__(self, start: float, rate: int = 48000) -> None:
        self.start = start
        self.rate = rate
        self.frame = rate * FRAME_MS // 1000
        self.slack = rate * SLACK_MS // 1000
        self.emitted = 0  # samples handed out per channel
        self._channels = (_Channel(), _Channel())
        self.dropped = 0  # samples that came too late to be placed

    def add(self, channel: int, pcm: bytes, at: float) -> None:
        """Mono s16 ``pcm`` for channel 0 (left) or 1 (right), starting at ``at``."""
        samples = np.frombuffer(pcm, dtype=np.int16)
        pos = round((at - self.start) * self.rate)
        ch = self._channels[channel]
        end = self.emitted + ch.buf.size
        if pos > end + self.slack:  # a gap: silence up to where this frame belongs
            ch.buf = np.concatenate([ch.buf, np.zeros(pos - end, np.int16), samples])
            return
        if end - pos > self.slack:  # the channel ran ahead of the clock: skip this frame
            self.dropped += samples.size
            return
        if ch.buf.size == 0 and pos < self.emitted:  # late, and its place was already handed out
            late = min(samples.size, self.emitted - pos)
            self.dropped += late
            samples = samples[late:]
        ch.buf = np.concatenate([ch.buf, samples])

    def take(self, until: float) -> bytes:
        """Interleaved stereo s16 from where the last call ended up to ``until``, whole frames."""
        target = round((until - self.start) * self.rate)
        n = (target - self.emitted) // self.frame * self.frame
        if n <= 0:
            return b""
        left, right = (ch.take(n) for ch in self._channels)
        self.emitted += n
        return np.column_stack([left, right]).astype(np.int16).tobytes()

    def finish(self, until: float) -> bytes:
        """Everything up to ``until`` and whatever is still pending, padded to a whole frame."""
        pending = max(ch.buf.size for ch in self._channels)
        end = max(until, self.start + (self.emitted + pending) / self.rate)
        target = int(round((end - self.start) * self.rate))
        n = -(-(target - self.emitted) // self.frame) * self.frame
        if n <= 0:
            return b""
        left, right = (ch.take(n) for ch in self._channels)
        self.emitted += n
        return np.column_stack([left, right]).astype(np.int16).tobytes()

    @property
    def duration_s(self) -> float:
        return self.emitted / self.rate
