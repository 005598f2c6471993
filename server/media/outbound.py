"""Sandra's voice: one long-lived outbound audio track per call.

:class:`OutboundAudio` is an aiortc ``MediaStreamTrack`` producing 20 ms frames of
48 kHz mono s16, paced on the clock (start + samples / rate; aiortc does not pace), with
``pts`` a running sample counter that never resets. When nothing is queued it sends
silence. After an event-loop stall it re-anchors its clock instead of bursting the
missed frames.

The queue in front of it is small (``lead_ms``, about 120 ms): :meth:`write` waits for
room (backpressure up to the TTS stream), so :meth:`flush` (barge-in) drops at most
that much audio, synchronously; the very next frame is silence.

Each reply is tracked: :attr:`reply_written` and :attr:`reply_sent` count its samples,
so the call knows how much of the reply the caller actually heard.

A frame returned by :meth:`recv` is valid until the next call (the idle silence frame is
one reused object), which is how aiortc's sender consumes a track.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from fractions import Fraction

import av
import numpy as np
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack

FRAME_MS = 20
STALL_S = 0.1


class OutboundAudio(MediaStreamTrack):
    kind = "audio"

    def __init__(
        self,
        *,
        sample_rate: int = 48000,
        lead_ms: int = 120,
        clock: Callable[[], float] = time.monotonic,
        on_frame: Callable[[float, float, bool], None] | None = None,
    ) -> None:
        super().__init__()
        self.sample_rate = sample_rate
        self._frame_samples = sample_rate * FRAME_MS // 1000
        self._frame_bytes = self._frame_samples * 2
        self._lead_bytes = max(self._frame_bytes, sample_rate * lead_ms // 1000 * 2)
        self._clock = clock
        self._on_frame = on_frame  # (at, rms, is_reply) for every frame sent
        # HOOK(host): the recorder: tap(pcm, at) for every frame sent, pcm None when silent
        self.tap: Callable[[bytes | None, float], None] | None = None
        self._buffer = bytearray()
        self._room = asyncio.Event()
        self._room.set()
        self._drained = asyncio.Event()
        self._drained.set()
        self._silence = bytes(self._frame_bytes)
        self._time_base = Fraction(1, sample_rate)
        self._silent_frame = self._frame(np.zeros(self._frame_samples, dtype=np.int16))
        self._start: float | None = None
        self._pts = 0
        self.reply_id: int | None = None
        self._accepting: int | None = None  # the reply whose writes are taken (None after a flush)
        self.reply_written = 0  # samples of the current reply queued so far
        self.reply_sent = 0  # samples of the current reply that have left
        self.reply_first_sent_at: float | None = None
        self.silent_after_flush_at: float | None = None
        self._flushed = False
        self.stalls = 0

    # --- producer side ---------------------------------------------------------------

    def begin_reply(self, reply_id: int) -> None:
        """Audio written from now on belongs to reply ``reply_id``."""
        self.flush()
        self.reply_id = self._accepting = reply_id
        self.reply_written = self.reply_sent = 0
        self.reply_first_sent_at = None

    async def write(self, pcm: bytes, reply_id: int) -> None:
        """Queue 48 kHz mono s16 audio of reply ``reply_id``; waits while the queue is
        ``lead_ms`` full. Audio of a reply that was flushed since (barge-in), or written
        after the track stopped (hang-up), is dropped: a writer woken by the flush itself
        must not refill the queue before its task is cancelled."""
        view = memoryview(pcm)
        while view:
            await self._room.wait()
            if self.readyState != "live" or reply_id != self._accepting:
                return
            room = self._lead_bytes - len(self._buffer)
            piece, view = view[:room], view[room:]
            self._buffer += piece
            self.reply_written += len(piece) // 2
            self._drained.clear()
            if len(self._buffer) >= self._lead_bytes:
                self._room.clear()

    async def drained(self) -> None:
        """Wait until everything written has left."""
        await self._drained.wait()

    def flush(self) -> int:
        """Drop all queued audio now (barge-in). Returns the samples dropped."""
        dropped = len(self._buffer) // 2
        self._buffer.clear()
        self._accepting = None
        self._room.set()
        self._drained.set()
        self._flushed = True
        self.silent_after_flush_at = None
        return dropped

    @property
    def queued_ms(self) -> float:
        return len(self._buffer) / 2 / self.sample_rate * 1000

    # --- aiortc side -----------------------------------------------------------------

    async def recv(self) -> av.AudioFrame:
        if self.readyState != "live":
            raise MediaStreamError
        now = self._clock()
        if self._start is None:
            self._start = now
        due = self._start + self._pts / self.sample_rate
        if due > now:
            await asyncio.sleep(due - now)
            now = self._clock()
        elif now - due > STALL_S:
            # The loop stalled: continue from now rather than bursting the backlog.
            self._start = now - self._pts / self.sample_rate
            self.stalls += 1

        n = min(len(self._buffer), self._frame_bytes)
        if n:
            data = bytes(self._buffer[:n])
            del self._buffer[:n]
            if n < self._frame_bytes:
                data += self._silence[n:]
            self.reply_sent += n // 2
            if self.reply_first_sent_at is None:
                self.reply_first_sent_at = now
            if len(self._buffer) < self._lead_bytes:
                self._room.set()
            if not self._buffer:
                self._drained.set()
        else:
            data = self._silence
            if self._flushed:
                self._flushed = False
                self.silent_after_flush_at = now

        if self.tap is not None:  # HOOK(host)
            self.tap(data if n else None, now)
        if n:
            samples = np.frombuffer(data, dtype=np.int16)
            frame = self._frame(samples)
            if self._on_frame is not None:
                floats = samples.astype(np.float32)
                self._on_frame(now, float(np.sqrt(np.dot(floats, floats) / floats.size)), True)
        else:
            # Idle: one silent frame object serves every time (aiortc's sender is done
            # encoding a frame before it asks for the next).
            frame = self._silent_frame
            if self._on_frame is not None:
                self._on_frame(now, 0.0, False)
        frame.pts = self._pts
        self._pts += self._frame_samples
        return frame

    def _frame(self, samples: np.ndarray) -> av.AudioFrame:
        frame = av.AudioFrame.from_ndarray(samples.reshape(1, -1), format="s16", layout="mono")
        frame.sample_rate = self.sample_rate
        frame.time_base = self._time_base
        return frame

    def stop(self) -> None:
        super().stop()
        self._room.set()  # wake a blocked writer so it sees the track ended
        self._drained.set()


class Resampler:
    """Any-rate mono s16 PCM -> ``rate`` mono s16 with PyAV; one per reply stream."""

    def __init__(self, rate: int = 48000) -> None:
        self._rate = rate
        self._resampler: av.AudioResampler | None = None
        self._in_rate: int | None = None
        self._pts = 0

    def convert(self, pcm: bytes, in_rate: int) -> bytes:
        if in_rate == self._rate or not pcm:
            return pcm
        if self._resampler is None or in_rate != self._in_rate:
            self._resampler = av.AudioResampler(format="s16", layout="mono", rate=self._rate)
            self._in_rate = in_rate
        samples = np.frombuffer(pcm, dtype=np.int16).reshape(1, -1)
        frame = av.AudioFrame.from_ndarray(samples, format="s16", layout="mono")
        frame.sample_rate = in_rate
        frame.pts = self._pts
        frame.time_base = Fraction(1, in_rate)
        self._pts += samples.shape[1]
        return b"".join(_pcm(f) for f in self._resampler.resample(frame))

    def flush(self) -> bytes:
        if self._resampler is None:
            return b""
        return b"".join(_pcm(f) for f in self._resampler.resample(None))


def _pcm(frame: av.AudioFrame) -> bytes:
    return bytes(frame.planes[0])[: frame.samples * 2 * len(frame.layout.channels)]
