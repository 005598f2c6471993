"""Turn-taking evidence (issue 10): is the guest done, and is speech over Sandra a real interruption?

- :mod:`.detector`: :class:`EndOfTurn` (``judge(pcm16k, transcript, language) -> Verdict``),
  ``create(config)`` for ``[turn] detector = "smart" | "silence"``, the pure rule :func:`decide`;
- :mod:`.smart_turn`: the Smart Turn v3.2 ONNX model and its features;
- :mod:`.text_cues`: words after which a sentence cannot end;
- :mod:`.backchannel`: "uh-huh", "vale": :func:`is_backchannel`, :func:`interrupts`.

Nothing here touches asyncio: the model calls are blocking CPU work for an executor.
"""

from .backchannel import interrupts, is_backchannel
from .detector import EndOfTurn, Evidence, SilenceDetector, SmartDetector, Verdict, check, create, decide, evidence
from .text_cues import unfinished

__all__ = [
    "EndOfTurn",
    "Evidence",
    "SilenceDetector",
    "SmartDetector",
    "Verdict",
    "check",
    "create",
    "decide",
    "evidence",
    "interrupts",
    "is_backchannel",
    "unfinished",
]
