"""One call's recording: the event loop only enqueues; a thread of the recorder's own
aligns the two channels and encodes the Ogg/Opus file as the call goes.

Interface (what a call core feeds it; every method but :meth:`close` is synchronous,
cheap and never blocks):

- ``caller_frame(frame, at)``: an inbound ``av.AudioFrame`` as Sandra received it
  (48 kHz s16, stereo from aiortc's Opus decoder: the left channel is kept);
- ``sandra_frame(pcm, at)``: an outbound 20 ms frame as sent, 48 kHz mono s16, or
  ``None`` for silence;
- ``event(ev, at)``: a server event as sent to the caller (its JSON dict);
- ``turn(TurnRecord)``: a turn the events do not show (a typed message);
- ``tool(name, input, at)``;
- ``await close(reason)``: flush, finish the Ogg and write the JSON (idempotent).

``Recorder(root=None)`` keeps only the in-memory :class:`CallLog` (the live view): no
thread, no file.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import logging
import queue
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import av
import numpy as np

from .calllog import CallLog, TurnRecord
from .timeline import StereoTimeline
from .writer import OggOpusWriter

log = logging.getLogger("sandra.recording")

RATE = 48000
QUEUE_ITEMS = 1000  # ~10 s of both channels: the thread is far behind only if the machine is
WRITE_EVERY_S = 0.25  # how often the thread hands audio to the encoder
LAG_S = 0.3  # audio closer to now than this waits for late frames of the other channel

_CALLER, _SANDRA = 0, 1
_END = object()


def day_dir(root: Path, started: dt.datetime) -> Path:
    return root / started.strftime("%Y-%m-%d")


class Recorder:
    def __init__(
        self,
        session_id: str,
        *,
        root: Path | None = None,
        clock: Callable[[], float] = time.monotonic,
        wall: Callable[[], float] = time.time,
    ) -> None:
        self.session_id = session_id
        self.log = CallLog(session_id)
        self.guest: dict[str, Any] | None = None  # {"sub", "name"} of the guest's token, if any
        self._clock = clock
        self._wall = wall
        self.started_at = dt.datetime.fromtimestamp(wall(), dt.UTC)
        self.created_at = clock()
        self.origin: float | None = None  # the call's first frame: 0 ms of the recording
        self.ended_at: dt.datetime | None = None
        self.close_reason: str | None = None
        self.dropped = 0  # frames not recorded because the thread was too far behind
        self._root = root
        self.ogg_path = self.json_path = None
        if root is not None:
            folder = day_dir(root, self.started_at)
            self.ogg_path, self.json_path = folder / f"{session_id}.ogg", folder / f"{session_id}.json"
        self._queue: queue.Queue[Any] = queue.Queue(QUEUE_ITEMS)
        self._thread: threading.Thread | None = None
        self._resampler: av.AudioResampler | None = None
        self._closing: asyncio.Task[None] | None = None
        self.duration_s: float | None = None

    @property
    def recording(self) -> bool:
        return self._root is not None

    # --- the event loop's side: enqueue only ------------------------------------------

    def caller_frame(self, frame: av.AudioFrame, at: float) -> None:
        if self._root is None or self._closing is not None:
            return
        if frame.sample_rate != RATE or frame.format.name != "s16":
            if self._resampler is None:
                self._resampler = av.AudioResampler(format="s16", layout="stereo", rate=RATE)
            pcm = b"".join(_left(f) for f in self._resampler.resample(frame))
        else:
            pcm = _left(frame)
        self._put((_CALLER, pcm, at))

    def sandra_frame(self, pcm: bytes | None, at: float) -> None:
        if self._root is None or self._closing is not None:
            return
        self._put((_SANDRA, pcm, at))

    def _put(self, item: tuple[int, bytes | None, float]) -> None:
        if self.origin is None:
            self.origin = item[2]
            self._thread = threading.Thread(target=self._run, args=(item[2],), name=f"rec-{self.session_id}", daemon=True)
            self._thread.start()
        try:
            self._queue.put_nowait(item)
        except queue.Full:
            self.dropped += 1

    def event(self, ev: dict[str, Any], at: float) -> None:
        self.log.event(ev, at, self._wall() * 1000)

    def turn(self, record: TurnRecord) -> None:
        self.log.turn(record)

    def tool(self, name: str, input: Any, at: float) -> None:
        self.log.event({"type": "tool", "name": name, "input": input}, at)

    async def close(self, reason: str) -> None:
        """Finish both files (idempotent; every way a call ends comes here)."""
        if self._closing is None:
            self._closing = asyncio.get_running_loop().create_task(self._close(reason))
        await asyncio.shield(self._closing)

    async def _close(self, reason: str) -> None:
        end = self._clock()
        self.close_reason = reason
        self.ended_at = dt.datetime.fromtimestamp(self._wall(), dt.UTC)
        if self._root is None or self._thread is None:
            return  # not recording, or no audio ever flowed (an offer that failed): no files
        await asyncio.to_thread(self._queue.put, (_END, None, end))
        await asyncio.to_thread(self._thread.join)  # sets duration_s: the Ogg's length
        await asyncio.to_thread(_write_json, self.json_path, self.document(self.origin))

    # --- the recorder's thread ----------------------------------------------------------

    def _run(self, origin: float) -> None:
        assert self.ogg_path is not None
        timeline = StereoTimeline(origin, RATE)
        writer: OggOpusWriter | None = None
        try:
            self.ogg_path.parent.mkdir(parents=True, exist_ok=True)
            writer = OggOpusWriter(self.ogg_path, RATE)
            latest, written_at = origin, origin
            while True:
                channel, pcm, at = self._queue.get()
                if channel is _END:
                    writer.write(timeline.finish(at))
                    break
                if pcm:
                    timeline.add(channel, pcm, at)
                latest = max(latest, at)
                if latest - written_at >= WRITE_EVERY_S:
                    writer.write(timeline.take(latest - LAG_S))
                    written_at = latest
        except Exception:
            log.exception("call %s: recording failed", self.session_id)
            while self._queue.get()[0] is not _END:  # keep draining so close() returns
                pass
        finally:
            if writer is not None:
                try:
                    writer.close()
                except Exception:
                    log.exception("call %s: closing the recording failed", self.session_id)
            self.duration_s = round(timeline.duration_s, 3)

    # --- what the host sees ---------------------------------------------------------------

    def document(self, origin: float | None = None) -> dict[str, Any]:
        origin = origin if origin is not None else (self.origin if self.origin is not None else self.created_at)
        return {
            "session_id": self.session_id,
            "started_at": self.started_at.isoformat(),
            "ended_at": self.ended_at.isoformat() if self.ended_at else None,
            "duration_s": self.duration_s,
            "language": self.log.language,
            "guest": self.guest,
            "close_reason": self.close_reason,
            "turns": self.log.turns(origin),
            "tools": self.log.tools_json(origin),
            "audio": self.ogg_path.name if self.ogg_path else None,
        }


def _left(frame: av.AudioFrame) -> bytes:
    samples = frame.to_ndarray()  # packed s16: (1, samples * channels)
    channels = len(frame.layout.channels)
    return np.ascontiguousarray(samples.reshape(-1)[::channels]).tobytes()


def _write_json(path: Path | None, doc: dict[str, Any]) -> None:
    if path is None:
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(doc, ensure_ascii=False, indent=1))
    tmp.replace(path)
