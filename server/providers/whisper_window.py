"""Whisper on a window that fits the utterance: ``[stt] window = "short"``.

Whisper's encoder always reads 30 s of audio; a guest's question is one to three seconds
of it, and the encoder is most of the cost (on the 2-core test machine, tiny.en: 335 ms of
a 420 ms transcription). CTranslate2 accepts shorter features, so the short window gives
the encoder the utterance plus :data:`PAD_S` of silence (:data:`MIN_WINDOW_S` at least) (padded in the audio, as Whisper's
own padding is) and decodes greedily from there: about four times faster.

Whisper was trained on 30 s windows and, on a short one, misbehaves in two ways, each
guarded against:

- after a pause inside the utterance it may stop ("I would like to know the [1 s] wifi
  password" heard as "I would like to know that."): pauses longer than :data:`KEEP_PAUSE_S`
  are shortened to it before the window is built (:func:`squeeze_pauses`);
- it likes to say the utterance again ("No more messages. No more messages. No more"):

  the decoder may write at most :func:`token_cap` tokens for the audio's length; a tail
  that starts at a sentence boundary and repeats the transcript's own beginning is dropped
  (:func:`trim_repetition`); a decoding that hit the cap, or compresses like a loop
  (``zlib`` ratio above :data:`MAX_COMPRESSION`, Whisper's own test), answers ``None``:
  the caller transcribes on the full window instead.

Measured with ``python -m bench.stt --windows short,full`` (README, "Speech recognition").
"""

from __future__ import annotations

import re
import zlib
from dataclasses import dataclass
from functools import lru_cache

import ctranslate2
import numpy as np
from faster_whisper import WhisperModel
from faster_whisper.tokenizer import Tokenizer
from faster_whisper.transcribe import get_suppressed_tokens

RATE = 16000
HOP = 160  # samples per feature frame (10 ms)
PAD_S = 4.0  # silence after the utterance: 1-2 s repeat more, 4 s matched the full window's accuracy
MIN_WINDOW_S = 8.0  # a backchannel alone in 4.4 s was misheard ("Sure." -> "picture."); in 8 s it is not
FULL_FRAMES = 3000  # Whisper's 30 s window
MAX_COMPRESSION = 2.4
LOG_PROB_THRESHOLD = -1.0  # with no_speech_threshold: faster-whisper's rule for "no speech"
KEEP_PAUSE_S = 0.2  # a pause inside the utterance is shortened to this
PAUSE_FRAME = 320  # 20 ms, the VAD's frame
PAUSE_BELOW_DB = 35.0  # a frame this far below the utterance's loudest is a pause

_WORD = re.compile(r"[^\w']+")


@dataclass(frozen=True)
class Heard:
    text: str
    no_speech_prob: float
    avg_logprob: float


def window_frames(samples: int) -> int | None:
    """Feature frames of the short window for ``samples`` of audio (at least
    :data:`MIN_WINDOW_S`); None when it would not be shorter than Whisper's own 30 s."""
    frames = max(-(-(samples + int(PAD_S * RATE)) // HOP), int(MIN_WINDOW_S * RATE) // HOP)
    return frames if frames < FULL_FRAMES else None


def squeeze_pauses(audio: np.ndarray, keep_s: float = KEEP_PAUSE_S) -> np.ndarray:
    """``audio`` with every run of quiet 20 ms frames (``PAUSE_BELOW_DB`` under the loudest
    frame) cut to ``keep_s``. In a room whose noise is that loud nothing is cut."""
    frames = audio[: audio.size // PAUSE_FRAME * PAUSE_FRAME].reshape(-1, PAUSE_FRAME)
    if not len(frames):
        return audio
    rms = np.sqrt(np.mean(np.square(frames, dtype=np.float64), axis=1))
    quiet = rms < rms.max() * 10 ** (-PAUSE_BELOW_DB / 20)
    keep = int(keep_s * RATE / PAUSE_FRAME)
    index = np.arange(len(frames))
    run = index - np.maximum.accumulate(np.where(quiet, -1, index))  # quiet frames up to each (0: loud)
    return np.concatenate([frames[run <= keep].reshape(-1), audio[frames.size :]])


def token_cap(samples: int) -> int:
    """Tokens the decoder may write for ``samples`` of speech: about twice a fast talker's
    (3-4 words a second, under two tokens a word in English and Spanish), plus a sentence."""
    return 12 + int(8 * samples / RATE)


def trim_repetition(text: str) -> str:
    """``text`` without a tail that repeats its own beginning from a sentence boundary:
    "What time is it? What time" -> "What time is it?". Repeats inside a sentence ("vale,
    vale", "hello hello, can you hear me?") and a sentence that does not restart the
    transcript are left alone."""
    words = text.split()
    folded = [_WORD.sub("", w.lower()) for w in words]
    for cut in range(1, len(words)):
        tail, head = folded[cut:], folded[: len(words) - cut]
        # the last word of the repeat may be cut short ("... password? What is the Wi-")
        if words[cut - 1][-1] in ".?!" and tail[:-1] == head[:-1] and tail[-1] and head[-1].startswith(tail[-1]):
            return " ".join(words[:cut])
    return text


def compression_ratio(text: str) -> float:
    data = text.encode()
    return len(data) / max(1, len(zlib.compress(data)))


@lru_cache(maxsize=8)
def _tokenizer(model: WhisperModel, language: str) -> tuple[Tokenizer, tuple[int, ...], tuple[int, ...]]:
    tokenizer = Tokenizer(model.hf_tokenizer, model.model.is_multilingual, task="transcribe", language=language)
    prompt = (*tokenizer.sot_sequence, tokenizer.no_timestamps)
    return tokenizer, prompt, tuple(get_suppressed_tokens(tokenizer, [-1]))


def transcribe_short(model: WhisperModel, audio: np.ndarray, language: str) -> Heard | None:
    """Greedy Whisper on the short window (blocking). None: the utterance is too long for
    one, or the decoding looked like a loop; transcribe it on the full window."""
    audio = squeeze_pauses(audio)
    frames = window_frames(audio.size)
    if frames is None:
        return None
    padded = np.zeros(frames * HOP, dtype=np.float32)
    padded[: audio.size] = audio
    features = model.feature_extractor(padded, padding=0)[:, :frames]
    tokenizer, prompt, suppressed = _tokenizer(model, language)
    cap = token_cap(audio.size)
    result = model.model.generate(
        ctranslate2.StorageView.from_array(np.ascontiguousarray(features[None])),
        [list(prompt)],
        beam_size=1,
        max_length=len(prompt) + cap,
        return_scores=True,
        return_no_speech_prob=True,
        suppress_blank=True,
        suppress_tokens=list(suppressed),
    )[0]
    tokens = [t for t in result.sequences_ids[0] if t < tokenizer.eot]
    text = tokenizer.decode(tokens).strip()
    if len(tokens) >= cap or compression_ratio(text) > MAX_COMPRESSION:
        return None
    return Heard(trim_repetition(text), float(result.no_speech_prob), float(result.scores[0]))
