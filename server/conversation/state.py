"""Turn-taking: the conversation state machine. Pure: no asyncio, times passed in.

::

    idle ──start──▶ listening ──user_started──▶ user_speaking ──user_stopped──▶ thinking
                       ▲   ▲                        │   ▲                          │
                       │   └────user_abandoned──────┘   │ barge_in(voice)    reply_started
                       │                                │                          ▼
                       └──────reply_finished / barge_in(client) ──────────────  speaking

A typed message or the greeting goes straight to ``thinking``. A turn begins when the
caller starts speaking (or types), and gets the next ``turn_id``. Transitions that do not apply in the current state
are refused (return ``False``) and change nothing. Changes are collected as
:class:`StateChange` and taken with :meth:`take_events`.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum


class State(StrEnum):
    IDLE = "idle"
    LISTENING = "listening"
    USER_SPEAKING = "user_speaking"
    THINKING = "thinking"
    SPEAKING = "speaking"


@dataclass(frozen=True)
class StateChange:
    state: State
    turn_id: int
    at: float


class Conversation:
    def __init__(self) -> None:
        self.state = State.IDLE
        self.turn_id = 0
        self._events: list[StateChange] = []

    def take_events(self) -> list[StateChange]:
        events, self._events = self._events, []
        return events

    def _go(self, state: State, at: float) -> None:
        self.state = state
        self._events.append(StateChange(state, self.turn_id, at))

    def start(self, at: float) -> bool:
        if self.state is not State.IDLE:
            return False
        self._go(State.LISTENING, at)
        return True

    def user_started(self, at: float) -> int | None:
        """The caller started speaking: a new turn. Returns its id."""
        if self.state is not State.LISTENING:
            return None
        self.turn_id += 1
        self._go(State.USER_SPEAKING, at)
        return self.turn_id

    def user_stopped(self, at: float) -> bool:
        """The caller's turn ended: Sandra thinks."""
        if self.state is not State.USER_SPEAKING:
            return False
        self._go(State.THINKING, at)
        return True

    def user_abandoned(self, at: float) -> bool:
        """What sounded like speech was not (no words): back to listening."""
        if self.state not in (State.USER_SPEAKING, State.THINKING):
            return False
        self._go(State.LISTENING, at)
        return True

    def new_turn(self, at: float) -> int | None:
        """A typed message or a greeting: a turn with no speech. Interrupts a reply."""
        if self.state is State.IDLE:
            return None
        self.turn_id += 1
        self._go(State.THINKING, at)
        return self.turn_id

    def reply_started(self, turn_id: int, at: float) -> bool:
        if self.state is not State.THINKING or turn_id != self.turn_id:
            return False
        self._go(State.SPEAKING, at)
        return True

    def reply_finished(self, turn_id: int, at: float) -> bool:
        if self.state not in (State.THINKING, State.SPEAKING) or turn_id != self.turn_id:
            return False
        self._go(State.LISTENING, at)
        return True

    def barge_in(self, at: float, *, voice: bool) -> int | None:
        """The caller interrupts. Returns the interrupted turn's id, or None if nothing to cut.

        A voice barge-in starts the caller's new turn at once (``turn_id`` moves on)."""
        if self.state not in (State.THINKING, State.SPEAKING):
            return None
        interrupted = self.turn_id
        if voice:
            self.turn_id += 1
        self._go(State.USER_SPEAKING if voice else State.LISTENING, at)
        return interrupted

    def end(self, at: float) -> bool:
        if self.state is State.IDLE:
            return False
        self._go(State.IDLE, at)
        return True
