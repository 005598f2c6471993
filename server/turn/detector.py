"""End-of-turn detectors: is the guest done speaking, or only pausing?

The call core asks after ``[turn] min_silence_ms`` of silence, and again as the silence
grows, until ``[turn] max_silence_ms`` ends the turn whatever the verdict. Two detectors
share one interface, :class:`EndOfTurn`:

- ``"silence"``: :class:`SilenceDetector`, always complete (the fixed silence rule);
- ``"smart"``: :class:`SmartDetector`, the Smart Turn v3.2 audio model combined with the
  words of the (speculative) transcript: the turn is complete when the model's
  probability reaches ``[turn] threshold`` **and** the transcript does not end in a word
  after which no sentence ends (:mod:`server.turn.text_cues`). The words veto, the audio
  decides: measured in ``bench/eot.py`` (see docs/drafts/eot.md).

``judge`` is blocking CPU work (the model: tens of ms) and thread-safe: the asyncio shell
runs it in an executor, several calls at once. A core that wants the two halves apart
(the audio verdict as soon as the silence starts, the words when STT answers) calls
:meth:`SmartDetector.probability` in the executor and the pure :func:`decide` itself.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal, Protocol

from ..config import TURN_DETECTORS, Config, TurnConfig
from ..errors import ConfigError
from .smart_turn import SmartTurnModel, check_model
from .backchannel import is_backchannel
from .text_cues import unfinished

DetectorName = Literal["smart", "silence"]  # TURN_DETECTORS, as a type


@dataclass(frozen=True)
class Verdict:
    complete: bool
    # The audio model's probability that the turn is complete; None when it did not run.
    probability: float | None
    # Short sentences for logs and the turn's metrics: "audio 0.93 >= 0.5", "words: ends with 'the'".
    reasons: tuple[str, ...]


class EndOfTurn(Protocol):
    name: DetectorName

    def judge(self, pcm16k: bytes, transcript: str | None, language: str) -> Verdict:
        """``pcm16k``: the turn's audio so far (16 kHz mono s16le, trailing silence included;
        only the last 8 s matter). ``transcript``: its (speculative) text, None if not known yet."""
        ...


def decide(probability: float | None, transcript: str | None, language: str, threshold: float) -> Verdict:
    """The smart rule on evidence already gathered (pure, microseconds)."""
    reasons: list[str] = []
    complete = True
    if probability is not None:
        sign = ">=" if probability >= threshold else "<"
        reasons.append(f"audio {probability:.2f} {sign} {threshold:g}")
        complete = probability >= threshold
    why = unfinished(transcript, language)
    if why is not None:
        reasons.append(f"words: {why}")
        complete = False
    return Verdict(complete, None if probability is None else round(probability, 4), tuple(reasons))


class SilenceDetector:
    """Today's rule: silence alone ends the turn."""

    name: DetectorName = "silence"

    def judge(self, pcm16k: bytes, transcript: str | None, language: str) -> Verdict:
        return Verdict(True, None, ("silence",))


class SmartDetector:
    """Smart Turn v3.2 audio model, vetoed by the words. Thread-safe."""

    name: DetectorName = "smart"

    def __init__(self, model: SmartTurnModel, threshold: float = 0.5) -> None:
        self.model = model
        self.threshold = threshold

    def probability(self, pcm16k: bytes) -> float:
        """The audio model alone (blocking, tens of ms; thread-safe)."""
        return self.model.probability(pcm16k)

    def judge(self, pcm16k: bytes, transcript: str | None, language: str) -> Verdict:
        return decide(self.probability(pcm16k), transcript, language, self.threshold)


PACKAGED_MODEL = Path(__file__).resolve().parent / "data" / "smart-turn-v3.2-cpu.onnx"


def model_path(config: Config) -> Path:
    """``[turn] model``: empty for the one ``make`` fetched beside this module."""
    return config.path(config.turn.model) if config.turn.model else PACKAGED_MODEL


def check(config: Config) -> None:
    """Cheap startup check: a ``"smart"`` detector needs its model file (ConfigError otherwise)."""
    turn = config.turn
    if turn.detector == "smart":
        check_model(model_path(config), f"[turn] model = {turn.model!r}")


def create(config: Config) -> EndOfTurn:
    """The configured detector, its model loaded (blocking: call it off the event loop).

    The ONNX session is shared by every detector of the process built on the same file.
    """
    turn: TurnConfig = config.turn
    if turn.detector == "silence":
        return SilenceDetector()
    if turn.detector == "smart":
        model = SmartTurnModel(model_path(config), threads=turn.threads, where=f"[turn] model = {turn.model!r}")
        return SmartDetector(model, turn.threshold)
    raise ConfigError(f"[turn] detector = {turn.detector!r} is not one of: {', '.join(TURN_DETECTORS)}")


class Evidence:
    """What the call core asks (``server.conversation.call.TurnDetector``): the audio
    model's probability, the combined verdict, and whether words are only a backchannel.
    One per process, shared by the calls; :meth:`probability` is blocking (an executor)."""

    def __init__(self, detector: EndOfTurn, threshold: float = 0.5) -> None:
        self.detector = detector
        self.threshold = threshold
        self.smart = isinstance(detector, SmartDetector)

    def probability(self, pcm16k: bytes) -> float | None:
        return self.detector.probability(pcm16k) if isinstance(self.detector, SmartDetector) else None

    def complete(self, probability: float | None, text: str, language: str) -> bool:
        return decide(probability, text, language, self.threshold).complete

    def is_backchannel(self, text: str, language: str) -> bool:
        return is_backchannel(text, language)


def evidence(config: Config) -> Evidence:
    """The configured detector as the call core's evidence (blocking: loads the model)."""
    return Evidence(create(config), config.turn.threshold)
