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

``recv`` runs inside aiortc's RTP sender, where an exception would stop the track for
good (Sandra mute, the call none the wiser): a failure building a frame is logged and
answered with silence; after :data:`MAX_FAILURES` in a row :attr:`failed` is set and the
call hangs up with a reason.

A frame returned by :meth:`recv` is valid until the next call (the idle silence frame is
one reused object), which is how aiortc's sender consumes a track.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from fractions import Fraction

import av
import numpy as np
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack

FRAME_MS = 20
STALL_S = 0.1
PLAYED_KEPT_S = 2.0  # recently played reply audio kept for a resume to rewind into
REWIND_MAX_MS = 600  # a resume goes back at most this far, to the start of the word
REWIND_DEFAULT_MS = 250  # ... or this far when no pause between words is found
MAX_FAILURES = 25  # frames in a row (half a second)

log = logging.getLogger("sandra.outbound")


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
        # The recorder: tap(pcm, at) for every frame sent, pcm None when silent.
        self.tap: Callable[[bytes | None, float], None] | None = None
        self._buffer = bytearray()
        self._room = asyncio.Event()
        self._room.set()
        self._drained = asyncio.Event()
        self._drained.set()
        self._silence = bytes(self._frame_bytes)
        self._time_base = Fraction(1, sample_rate)
        self._silent_frame = self._frame(np.zeros(self._frame_samples, dtype=np.int16))
        self._played_max = int(sample_rate * PLAYED_KEPT_S) * 2
        self._start: float | None = None
        self._pts = 0
        self.reply_id: int | None = None
        self.reply_written = 0  # samples of the current reply queued so far
        self.reply_sent = 0  # samples of the current reply that have left
        self.reply_first_sent_at: float | None = None
        self.silent_after_flush_at: float | None = None
        self._flushed = False
        self._paused = False
        self._played = bytearray()  # the current reply's last PLAYED_KEPT_S seconds that left
        self.stalls = 0
        self._failures = 0
        self.failed = False

    # --- producer side ---------------------------------------------------------------

    def begin_reply(self, reply_id: int) -> None:
        """Audio written from now on belongs to reply ``reply_id``."""
        self.flush()
        self.reply_id = reply_id
        self.reply_written = self.reply_sent = 0
        self.reply_first_sent_at = None

    async def write(self, pcm: bytes) -> None:
        """Queue 48 kHz mono s16 audio of the current reply; waits while the queue is
        ``lead_ms`` full. Audio written after the track stopped is dropped. A barge-in
        flushes and cancels the writer in one step, and the call awaits it before the next
        reply begins: a flushed reply never writes again."""
        view = memoryview(pcm)
        while view:
            await self._room.wait()
            if self.readyState != "live":
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
        """Drop all queued audio now (barge-in). Returns the samples dropped. The barge-in
        cancels the reply's writer in the same step, before it can run again."""
        dropped = len(self._buffer) // 2
        self._buffer.clear()
        self._played.clear()
        self._paused = False
        self._room.set()
        self._drained.set()
        self._flushed = True
        self.silent_after_flush_at = None
        return dropped

    def pause(self) -> None:
        """Stop playing now (a tentative barge-in): the next frame is silence, the queued
        audio stays, and the writer waits (the queue is full or soon will be)."""
        self._paused = True

    def resume(self) -> float:
        """Play again after :meth:`pause`, from the start of the word she was cut in: the
        last pause between words (30 ms quieter than -22 dB of the recent peak) within
        ``REWIND_MAX_MS`` of where she stopped, else ``REWIND_DEFAULT_MS`` back. Returns
        the reply position (ms) playing resumes from."""
        if not self._paused:
            return self.reply_sent / self.sample_rate * 1000
        self._paused = False
        rewind = min(len(self._played) // 2, _word_start(self._played, self.sample_rate))
        if rewind:
            tail = self._played[-rewind * 2 :]
            del self._played[-rewind * 2 :]
            self._buffer[:0] = tail
            self.reply_sent -= rewind
            self._drained.clear()
        return self.reply_sent / self.sample_rate * 1000

    @property
    def paused(self) -> bool:
        return self._paused

    @property
    def queued_ms(self) -> float:
        return len(self._buffer) / 2 / self.sample_rate * 1000

    # --- aiortc side -----------------------------------------------------------------

    async def recv(self) -> av.AudioFrame:
        if self.readyState != "live":
            raise MediaStreamError
        now = await self._pace()
        try:
            frame = self._next_frame(now)
            self._failures = 0
        except Exception:
            self._failures += 1
            if self._failures == 1:
                log.exception("outbound frame failed; sending silence")
            if self._failures >= MAX_FAILURES:
                self.failed = True
            frame = self._silent_frame
        frame.pts = self._pts
        self._pts += self._frame_samples
        return frame

    async def _pace(self) -> float:
        """Wait until the next frame is due; returns the time."""
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
        return now

    def _next_frame(self, now: float) -> av.AudioFrame:
        n = 0 if self._paused else min(len(self._buffer), self._frame_bytes)
        if n:
            data = bytes(self._buffer[:n])
            del self._buffer[:n]
            self._played += data
            if len(self._played) > self._played_max:
                del self._played[: len(self._played) - self._played_max]
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

        if self.tap is not None:  # the recorder: every frame sent, None when silent
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


def _word_start(played: bytearray, rate: int) -> int:
    """Samples back from the end of ``played`` to the start of the word being spoken."""
    window = rate // 100  # 10 ms
    limit = min(len(played) // 2, rate * REWIND_MAX_MS // 1000) // window * window
    if limit < 4 * window:
        return limit
    samples = np.frombuffer(bytes(played[-limit * 2 :]), dtype=np.int16).astype(np.float32)
    rms = np.sqrt((samples.reshape(-1, window) ** 2).mean(axis=1))
    quiet = rms < max(1.0, rms.max() * 0.08)
    run = 0
    for i in range(len(quiet) - 1, -1, -1):  # backwards: the last gap of 30 ms or more
        run = run + 1 if quiet[i] else 0
        if run >= 3:
            end = i + run  # first window after the gap ... keep 10 ms of the gap as a lead-in
            while end < len(quiet) and quiet[end]:
                end += 1
            return (len(quiet) - max(0, end - 1)) * window
    return min(limit, rate * REWIND_DEFAULT_MS // 1000)


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
