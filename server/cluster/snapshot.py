"""What a conversation needs to continue elsewhere: language, what was heard, turn numbering.

:class:`Snapshot` is a small frozen value with a JSON form (what the stores keep).
:func:`of_call` and :func:`restore` are the bridge to the call: they read its
``language``, ``history`` and the core's ``turn_id``, and hand a snapshot to
``Call.restore``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from ..providers.base import ChatMessage

MAX_SNAPSHOT_BYTES = 256 * 1024


@dataclass(frozen=True)
class Said:
    role: str  # "user" | "assistant"
    text: str
    interrupted: bool = False


@dataclass(frozen=True)
class Snapshot:
    language: str
    history: tuple[Said, ...] = ()
    turn_id: int = 0
    guest: str | None = None  # the guest link the call was admitted with (issue 11), if any

    def to_json(self) -> str:
        return json.dumps(
            {
                "language": self.language,
                "history": [{"role": s.role, "text": s.text, "interrupted": s.interrupted} for s in self.history],
                "turn_id": self.turn_id,
                "guest": self.guest,
            },
            separators=(",", ":"),
            ensure_ascii=False,
        )

    @classmethod
    def from_json(cls, text: str | bytes) -> Snapshot:
        """Raises ValueError on anything that is not a snapshot."""
        obj: Any = json.loads(text)
        if not isinstance(obj, dict) or not isinstance(obj.get("language"), str):
            raise ValueError("not a conversation snapshot")
        history = []
        for item in obj.get("history") or []:
            if not isinstance(item, dict) or item.get("role") not in ("user", "assistant"):
                raise ValueError("bad history entry in a conversation snapshot")
            history.append(Said(item["role"], str(item.get("text", "")), bool(item.get("interrupted", False))))
        turn_id = obj.get("turn_id", 0)
        if not isinstance(turn_id, int) or isinstance(turn_id, bool) or turn_id < 0:
            raise ValueError("bad turn_id in a conversation snapshot")
        guest = obj.get("guest")
        return cls(obj["language"], tuple(history), turn_id, guest if isinstance(guest, str) else None)


def of_call(call: Any) -> Snapshot:
    """The snapshot of a live call (today's ``server.conversation.call.Call``)."""
    guest = call.guard.guest
    return Snapshot(
        language=call.language,
        history=tuple(Said(m.role, m.text, m.interrupted) for m in call.history),
        turn_id=call.core.turn_id,
        guest=guest.sub if guest is not None else None,
    )


def restore(call: Any, snapshot: Snapshot) -> None:
    """Continue ``snapshot`` in a new, not yet started call."""
    history = [ChatMessage(s.role, s.text, interrupted=s.interrupted) for s in snapshot.history]  # type: ignore[arg-type]
    call.restore(snapshot.language, history, snapshot.turn_id)
