"""Call recordings for the host: stereo Ogg/Opus (left the caller, right Sandra) and a
JSON transcript per call, under ``[recording] dir/<YYYY-MM-DD>/<session_id>.*``.

- :mod:`.timeline` lays both channels on the call's clock (pure);
- :mod:`.calllog` builds the transcript from the server events (pure);
- :mod:`.writer` is the PyAV Ogg/Opus encoder, :mod:`.recorder` the per-call shell that
  runs it on a thread of its own; :mod:`.retention` deletes old files.
"""

from __future__ import annotations

from pathlib import Path

from ..config import Config
from .calllog import LATENCY_KEYS, CallLog, TurnRecord
from .recorder import Recorder
from .retention import sweep

__all__ = ["LATENCY_KEYS", "CallLog", "Recorder", "TurnRecord", "announce", "for_call", "sweep"]

NOTICE = {"en": "Just so you know, this call is recorded.", "es": "Te aviso de que esta llamada se graba."}


def for_call(config: Config, session_id: str, **kwargs) -> Recorder:  # type: ignore[no-untyped-def]
    """The call's recorder: files only when ``[recording] enabled``."""
    root: Path | None = config.path(config.recording.dir) if config.recording.enabled else None
    return Recorder(session_id, root=root, **kwargs)


def announce(greeting: str, language: str) -> str:
    """The greeting with the recording notice after its first sentence."""
    notice = NOTICE.get(language, NOTICE["en"])
    for i, ch in enumerate(greeting):
        if ch in ".!?" and (i + 1 == len(greeting) or greeting[i + 1] == " "):
            return f"{greeting[: i + 1]} {notice}{greeting[i + 1:]}"
    return f"{greeting} {notice}".strip()
