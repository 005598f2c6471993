"""What happened in a call, for the host: turns, tools, language (pure: times passed in).

Fed the same server events the caller gets on the datachannel (``event(ev, at)``), plus
the typed turns the caller sent (``turn(TurnRecord)``), it builds the transcript with
each turn placed on the recording's clock (milliseconds from the call's first frame):

- a guest's voice turn starts at the first voiced frame (``vad`` ``onset_ms``) and ends at
  its last voiced frame (the ``vad`` end minus the turn's ``eos_ms``), with the final
  ``transcript`` as its text;
- Sandra's turn starts when her first reply frame left (``state`` ``speaking``) and ends
  at ``response:done`` (or at the barge-in), with what the caller heard as its text and
  the turn's ``metrics``.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, replace
from typing import Any, Literal

from ..metrics import LATENCIES

Who = Literal["guest", "sandra"]
LATENCY_KEYS = LATENCIES  # the one list (server/metrics.py)


@dataclass(frozen=True)
class TurnRecord:
    turn_id: int
    who: Who
    kind: str  # voice | text | greeting
    text: str
    start_at: float  # monotonic seconds
    end_at: float
    interrupted: bool = False
    metrics: dict[str, float] = field(default_factory=dict)


@dataclass
class _Open:
    start_at: float | None = None
    end_at: float | None = None
    text: str | None = None
    interrupted: bool = False
    kind: str = "voice"
    metrics: dict[str, float] = field(default_factory=dict)


class CallLog:
    def __init__(self, session_id: str) -> None:
        self.session_id = session_id
        self.language = "en"
        self.records: list[TurnRecord] = []
        self.tools: list[dict[str, Any]] = []
        self.state = "idle"
        self.last_metrics: dict[str, Any] | None = None
        self._guest: dict[int, _Open] = {}
        self._sandra: dict[int, _Open] = {}
        self._onset: float | None = None
        self._speech_end: dict[int, float] = {}  # turn -> when the end of its speech was decided
        self._user_turn: int | None = None

    # --- inputs ----------------------------------------------------------------------

    def turn(self, record: TurnRecord) -> None:
        self.records.append(record)

    def event(self, ev: dict[str, Any], at: float, wall_ms: float | None = None) -> None:
        """A server event sent at ``at`` (monotonic s); ``wall_ms`` is the wall clock then."""
        match ev.get("type"):
            case "call:started":
                self.language = ev.get("language") or self.language
            case "vad" if ev.get("speaking"):
                onset_ms = ev.get("onset_ms")
                self._onset = at - (wall_ms - onset_ms) / 1000 if wall_ms is not None and onset_ms is not None else at
            case "vad":
                if self._user_turn is not None:
                    self._speech_end[self._user_turn] = at
                    self._user_turn = None
            case "state":
                self.state = ev["state"]
                turn_id = ev.get("turn_id")
                if ev["state"] == "user_speaking" and turn_id is not None:
                    self._user_turn = turn_id
                    self._guest[turn_id] = _Open(start_at=self._onset if self._onset is not None else at)
                elif ev["state"] == "speaking" and turn_id is not None:
                    self._sandra.setdefault(turn_id, _Open()).start_at = at
            case "transcript" if ev.get("final"):
                guest = self._guest.get(ev["turn_id"])
                if guest is not None:
                    guest.text = ev["text"]
                    self._close_guest(ev["turn_id"])
            case "barge-in" if not ev.get("tentative"):  # a tentative one may resume
                sandra = self._sandra.get(ev["turn_id"])
                if sandra is not None and sandra.end_at is None:
                    sandra.end_at = at
            case "response:done":
                sandra = self._sandra.setdefault(ev["turn_id"], _Open())
                sandra.text, sandra.interrupted = ev.get("text", ""), bool(ev.get("interrupted"))
                sandra.end_at = sandra.end_at or at
                self._close_sandra(ev["turn_id"])
            case "metrics":
                self._metrics(ev)
            case "tool":
                self.tools.append({"name": ev.get("name"), "input": ev.get("input"), "at": at})

    def _metrics(self, ev: dict[str, Any]) -> None:
        turn_id = ev.get("turn_id")
        values = {k: ev[k] for k in LATENCY_KEYS if isinstance(ev.get(k), (int, float))}
        if "kind" in ev:
            self.last_metrics = {"turn_id": turn_id, "kind": ev["kind"], **values}
        if "eos_ms" in values and turn_id in self._speech_end:
            for i, r in enumerate(self.records):
                if r.turn_id == turn_id and r.who == "guest":
                    end = self._speech_end[turn_id] - values["eos_ms"] / 1000
                    self.records[i] = replace(r, end_at=max(r.start_at, end))
        for i, r in enumerate(self.records):  # the metrics follow the turn's response:done
            if r.turn_id == turn_id and r.who == "sandra":
                self.records[i] = replace(r, metrics={**r.metrics, **values}, kind=ev.get("kind", r.kind))
                return
        sandra = self._sandra.setdefault(turn_id, _Open())
        sandra.metrics.update(values)
        sandra.kind = ev.get("kind", sandra.kind)

    def _close_guest(self, turn_id: int) -> None:
        g = self._guest.pop(turn_id)
        end = self._speech_end.get(turn_id, g.start_at)
        self.records.append(TurnRecord(turn_id, "guest", "voice", g.text or "", g.start_at or end, end))

    def _close_sandra(self, turn_id: int) -> None:
        s = self._sandra.pop(turn_id)
        if not s.text:
            return
        end = s.end_at or 0.0
        start = s.start_at if s.start_at is not None else end
        self.records.append(TurnRecord(turn_id, "sandra", s.kind, s.text, start, end, s.interrupted, s.metrics))

    # --- outputs ---------------------------------------------------------------------

    def turns(self, origin: float) -> list[dict[str, Any]]:
        """The turns in the order they started, times in ms from ``origin``."""
        out = []
        for r in sorted(self.records, key=lambda r: (r.start_at, r.who != "guest")):
            d = asdict(r)
            start, end = d.pop("start_at"), d.pop("end_at")
            d["start_ms"] = round(max(0.0, start - origin) * 1000, 1)
            d["end_ms"] = round(max(0.0, end - origin) * 1000, 1)
            out.append(d)
        return out

    def tools_json(self, origin: float) -> list[dict[str, Any]]:
        return [{"name": t["name"], "input": t["input"], "at_ms": round(max(0.0, t["at"] - origin) * 1000, 1)}
                for t in self.tools]
