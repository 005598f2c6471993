"""Speech segmentation: voiced/unvoiced 20 ms frames in, speech onsets and ends out.

Pure: no asyncio, no clock. Each :meth:`SpeechSegmenter.push` is handed a frame of
16 kHz mono PCM, the VAD's verdict and the frame's arrival time, and returns the events
that frame caused:

- :class:`SpeechStart` after ``start_ms`` of consecutive voiced audio, with the
  ``pre_roll_ms`` before the onset and the voiced frames so far (what STT needs);
- :class:`SpeechAudio` for every later frame of the segment;
- :class:`SustainedSpeech` once per segment, when the voiced run reaches ``barge_in_ms``
  (clicks and echo blips are shorter): the call's cue to interrupt Sandra;
- :class:`SpeechEnd` after ``end_silence_ms`` of silence.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

FRAME_MS = 20


@dataclass(frozen=True)
class SpeechStart:
    at: float
    onset_at: float  # arrival time of the first voiced frame of the run
    audio: bytes  # pre-roll + the voiced run


@dataclass(frozen=True)
class SpeechAudio:
    at: float
    audio: bytes


@dataclass(frozen=True)
class SustainedSpeech:
    at: float
    onset_at: float


@dataclass(frozen=True)
class SpeechEnd:
    at: float
    last_voiced_at: float


SegmenterEvent = SpeechStart | SpeechAudio | SustainedSpeech | SpeechEnd


class SpeechSegmenter:
    def __init__(
        self, *, start_ms: int = 60, end_silence_ms: int = 500, pre_roll_ms: int = 300, barge_in_ms: int = 80
    ) -> None:
        self.barge_in_ms = barge_in_ms
        self._start_frames = max(1, start_ms // FRAME_MS)
        self._end_frames = max(1, end_silence_ms // FRAME_MS)
        self._sustain_frames = max(1, barge_in_ms // FRAME_MS)
        self._pre_roll: deque[bytes] = deque(maxlen=max(0, pre_roll_ms // FRAME_MS) + self._start_frames)
        self._pre_roll_frames = pre_roll_ms // FRAME_MS
        self.speaking = False
        self._run = 0  # consecutive voiced frames
        self._run_onset = 0.0
        self._silence = 0  # consecutive unvoiced frames while speaking
        self._sustained = False
        self._last_voiced_at = 0.0

    def cut(self) -> None:
        """End the current segment now (the turn-taking core decided it is over): the next
        voiced run is a new :class:`SpeechStart`."""
        self.speaking = False
        self._sustained = False
        self._silence = 0
        self._run = 0
        self._pre_roll.clear()

    def push(self, pcm: bytes, voiced: bool, at: float) -> list[SegmenterEvent]:
        events: list[SegmenterEvent] = []
        if voiced:
            if self._run == 0:
                self._run_onset = at
            self._run += 1
            self._last_voiced_at = at
        else:
            self._run = 0

        if not self.speaking:
            self._pre_roll.append(pcm)
            if self._run >= self._start_frames:
                self.speaking = True
                self._silence = 0
                self._sustained = False
                frames = list(self._pre_roll)[-(self._pre_roll_frames + self._run) :]
                self._pre_roll.clear()
                events.append(SpeechStart(at, self._run_onset, b"".join(frames)))
            else:
                return events
        else:
            events.append(SpeechAudio(at, pcm))

        if not self._sustained and self._run >= self._sustain_frames:
            self._sustained = True
            events.append(SustainedSpeech(at, self._run_onset))

        if voiced:
            self._silence = 0
        else:
            self._silence += 1
            if self._silence >= self._end_frames:
                self.speaking = False
                self._sustained = False
                events.append(SpeechEnd(at, self._last_voiced_at))
        return events
