"""The ``control`` datachannel, server side: one client message in, the call acts.

:class:`ControlChannel` runs in the call's own task (the datachannel's handler only
posts the raw message). It applies the per-call message limits, decodes the message
(:mod:`server.protocol`), checks ``auth``, and hands the call's decisions to the
turn-taking core; the answers are typed events (:mod:`server.events`).
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

from .. import events, protocol, recording
from ..errors import ProtocolError
from ..security.calls import FLOOD_REASON

if TYPE_CHECKING:
    from .call import Call


class ControlChannel:
    def __init__(self, call: Call) -> None:
        self._call = call
        self.authenticated = False
        self._faults_fired: set[int] = set()  # [scripted] fault = "handler"

    def handle(self, data: str | bytes, at: float) -> None:
        call = self._call
        match call.guard.on_message(at):  # datachannel rate limit, before anything else
            case "drop":
                call.send(events.Error("rate_limited", "too many messages: slow down", id=protocol.message_id(data)))
                return
            case "close":
                call.close(FLOOD_REASON)
                return
        try:
            message = protocol.parse(data)
        except ProtocolError as exc:
            call.send(events.Error(exc.code, str(exc), id=exc.message_id))
            return
        token = call.guard.required()  # the static token needs auth first; a guest link does not
        match message:
            case protocol.Ping():
                call.send(events.Pong(message.t, time.time() * 1000, id=message.id))
            case protocol.Auth():
                if not call.guard.accepts(message.token, time.time()):  # a guest JWT or the static token
                    call.send(events.Error("unauthorized", "invalid token", id=message.id))
                    return
                self.authenticated = True
                call.send(events.AuthOk(call.session_id, id=message.id))
            case _ if token and not self.authenticated:
                call.send(events.Error("unauthorized", "send 'auth' first", id=message.id))
            case protocol.CallStart():
                extra = {"resume_token": call.resume_token, "resumed": True if call.resumed else None}
                call.core.call_start(message.language, at, message.id, greet=not call.resumed,
                                     extra={k: v for k, v in extra.items() if v is not None})
            case protocol.Message():
                if not call.guard.allow_typed(at):  # typed-message limit: not answered
                    call.send(events.Error("rate_limited", "too many typed messages: wait a minute", id=message.id))
                    return
                self._inject_fault()
                call.core.typed(message.text, at, message.id)
                call.recorder.turn(recording.TurnRecord(call.core.turn_id, "guest", "text", message.text, at, at))
            case protocol.BargeIn():
                call.core.client_barge_in(at, message.id)
            case protocol.CallEnd():
                call.close("caller hung up")

    def _inject_fault(self) -> None:
        """``[scripted] fault = "handler"``: this handler raises, once per listed turn."""
        scripted, turn = self._call.config.scripted, self._call.core.caller_turns + 1
        if scripted.fault == "handler" and turn in scripted.fault_turns and turn not in self._faults_fired:
            self._faults_fired.add(turn)
            raise RuntimeError(f"injected handler defect on turn {turn}")
