"""One call: the shell around the turn-taking core.

aiortc calls our handlers inside its own tasks (``track`` inside setRemoteDescription,
datachannel messages inside the DTLS receive loop, the outbound track's frames inside
the RTP sender). Those handlers only put an item on the call's bounded :attr:`inbox`;
the call's own task drains it, feeds the pure core (:class:`TurnTaking`) and performs
the actions the core returns with the :class:`Jobs` (STT and reply tasks). Every task is
the call's: kept in one set, cancelled *and awaited* when the call ends.

Failures are contained: a handler that raises answers the client with an ``error`` and
the call goes on; a turn that raises is apologised for; a dead media task ends the call
with a reason. Each is counted in ``sandra_failures``.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from typing import Any, Protocol

from aiortc import RTCDataChannel, RTCPeerConnection
from aiortc.mediastreams import MediaStreamTrack

from .. import events, protocol, recording
from ..config import Config
from ..errors import ProtocolError
from ..media import inbound, jitter
from ..media.echo import EchoGuard
from ..media.outbound import OutboundAudio
from ..media.segmenter import SpeechSegmenter
from ..metrics import Metrics
from ..providers import Providers
from ..providers.base import ChatMessage
from ..security.calls import FLOOD_REASON, CallGuard
from ..security.guest import Guest
from . import actions
from .jobs import Jobs, Result
from .turns import State, TurnPolicy, TurnTaking

log = logging.getLogger("sandra.call")

class TurnDetector(Protocol):
    """End-of-turn evidence (server/turn/): loaded once per process, shared by the calls."""

    def probability(self, pcm16k: bytes) -> float | None:
        """The audio model's probability that the utterance is finished (CPU work)."""

    def complete(self, probability: float | None, text: str, language: str) -> bool:
        """Is the utterance finished, given that probability and its transcript?"""

    def is_backchannel(self, text: str, language: str) -> bool:
        """Are these words only a backchannel ("uh-huh", "vale")?"""

    @property
    def smart(self) -> bool:
        """Whether it has an audio model (else: the silence rule ends turns)."""


INBOX_SIZE = 1024  # items; about 10 s of audio frames both ways
DEFECTS_PER_MINUTE = 5  # more core failures than this end the call


@dataclass(frozen=True)
class _Track:
    track: MediaStreamTrack


@dataclass(frozen=True)
class _Channel:
    channel: RTCDataChannel


@dataclass(frozen=True)
class _Message:
    data: str | bytes
    at: float


@dataclass(frozen=True)
class _Connection:
    state: str


@dataclass(frozen=True)
class _InFrame:
    pcm: bytes
    voiced: bool
    rms: float
    at: float


@dataclass(frozen=True)
class _OutFrame:
    at: float
    rms: float
    reply_id: int | None


Item = _Track | _Channel | _Message | _Connection | _InFrame | _OutFrame | Result


class Call:
    def __init__(
        self,
        session_id: str,
        pc: RTCPeerConnection,
        *,
        config: Config,
        providers: Providers,
        metrics: Metrics,
        on_closed: Callable[[Call], None] = lambda call: None,
        detector: TurnDetector | None = None,
        guest: Guest | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        """``guest``: the guest link the offer came with (its name greets, its language is
        the call's default, its limits apply)."""
        self.session_id = session_id
        self.pc = pc
        self.config = config
        self.providers = providers
        self.metrics = metrics
        self._on_closed = on_closed
        self._clock = clock
        self.guard = CallGuard(config, guest, clock())  # per-call auth, message limits, greeting
        vad, turn = config.vad, config.turn
        smart = turn.detector == "smart" and detector is not None and detector.smart
        policy = TurnPolicy("smart" if smart else "silence", turn.min_silence_ms, turn.max_silence_ms, turn.rejudge_ms,
                            turn.confirm_ms, turn.resume_ms, turn.sound_end_ms)
        end_silence_ms = turn.max_silence_ms if smart else vad.end_silence_ms
        self.core = TurnTaking(
            SpeechSegmenter(start_ms=vad.start_ms, end_silence_ms=end_silence_ms, pre_roll_ms=vad.pre_roll_ms,
                            barge_in_ms=vad.barge_in_ms),
            EchoGuard(return_db=vad.echo_return_db, margin_db=vad.echo_margin_db),
            policy=policy,
            judge=detector.complete if detector is not None else (lambda p, text, language: True),
            is_backchannel=detector.is_backchannel if detector is not None else (lambda text, language: False),
            language=self.guard.language or "en",
            no_speech_threshold=config.stt.no_speech_threshold,
            wall_offset=time.time() - clock(),
        )
        self.outbound = OutboundAudio(
            sample_rate=config.audio.sample_rate, lead_ms=config.audio.outbound_lead_ms, clock=clock,
            on_frame=self._on_outbound_frame,
        )
        self.inbox: asyncio.Queue[Item] = asyncio.Queue(INBOX_SIZE)
        self.jobs = Jobs(self, providers, self.outbound, clock=clock,
                         audio_model=detector.probability if smart and detector is not None else None)
        self.channel: RTCDataChannel | None = None
        self.authenticated = False
        self.created_at = clock()
        self.connected_at: float | None = None
        self.last_activity = self.created_at
        self.close_reason: str | None = None
        self._tasks: set[asyncio.Task[Any]] = set()
        self._defects: list[float] = []
        self._faults_fired: set[int] = set()  # [scripted] fault = "handler"
        # Set by Sessions (server/cluster): the token call:started hands out, whether this
        # call continues a conversation, and who hears that its conversation changed.
        self.resume_token: str | None = None
        self.resumed = False
        self.on_change: Callable[[Call], None] = lambda call: None
        self._revision = 0
        self._closing: asyncio.Task[None] | None = None
        self._closed = asyncio.Event()
        # The call's record: the transcript always (the admin view), files when [recording] enabled.
        self.recorder = recording.for_call(config, session_id, clock=clock)
        if guest is not None:
            self.recorder.guest = {"sub": guest.sub, "name": guest.name}
        # Set while Sandra is not answering (listening, idle): a draining server waits for it.
        self.quiet = asyncio.Event()
        self.quiet.set()
        if self.recorder.recording:
            self.outbound.tap = self.recorder.sandra_frame

    # --- what the rest of the server reads --------------------------------------------

    @property
    def history(self) -> list[ChatMessage]:
        return self.core.history

    @property
    def language(self) -> str:
        return self.core.language

    @property
    def state(self) -> State:
        return self.core.state

    def restore(self, language: str, history: list[ChatMessage], turn_id: int) -> None:
        """This call continues a conversation (a resumed session): no greeting, same history."""
        self.core.restore(language, history, turn_id)
        self.resumed = True

    # --- wiring: aiortc's handlers only post to the inbox ------------------------------

    def attach(self) -> None:
        """Subscribe to the peer connection's events; call before setRemoteDescription."""
        self.pc.on("track", lambda track: self.post(_Track(track)))
        self.pc.on("datachannel", lambda channel: self.post(_Channel(channel)))
        self.pc.on("connectionstatechange", lambda: self.post(_Connection(self.pc.connectionState)))
        self.spawn(self._run(), "inbox")
        self.spawn(self._watchdog(), "watchdog")

    def add_outbound_track(self) -> None:
        """Attach Sandra's voice to the offer's audio transceiver (after setRemoteDescription)."""
        self.pc.addTrack(self.outbound)

    def post(self, item: Item) -> None:
        """Queue ``item`` for the call's task. Never raises (it runs in aiortc's tasks)."""
        try:
            self.inbox.put_nowait(item)
        except asyncio.QueueFull:
            self.metrics.failures.labels("inbox").inc()
            log.error("call %s: inbox full, the call's task is stuck", self.session_id)
            self.close("internal_error")

    def _on_outbound_frame(self, at: float, rms: float, is_reply: bool) -> None:
        self.post(_OutFrame(at, rms, self.outbound.reply_id if is_reply else None))

    def spawn(self, coro: Coroutine[Any, Any, Any], name: str) -> asyncio.Task[Any]:
        task = asyncio.get_running_loop().create_task(coro, name=f"{self.session_id}:{name}")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    # --- the call's task ---------------------------------------------------------------

    async def _run(self) -> None:
        while True:
            item = await self.inbox.get()
            try:
                self._handle(item)
            except Exception as exc:  # a defect of ours: contained, reported, survived
                await self._defect(item, exc)

    def _handle(self, item: Item) -> None:
        match item:
            case _InFrame():
                self.last_activity = item.at
                self.core.frame(item.pcm, item.voiced, item.rms, item.at)
            case _OutFrame():
                self.core.outbound_frame(item.at, item.rms, item.reply_id)
            case Result():
                item.apply(self.core, self._clock())
            case _Message():
                self.last_activity = item.at
                self._on_message(item.data, item.at)
            case _Track():
                self._on_track(item.track)
            case _Channel():
                if item.channel.label == "control":
                    self.channel = item.channel
                    item.channel.on("message", lambda data: self.post(_Message(data, self._clock())))
            case _Connection():
                if item.state == "connected":
                    self.connected_at = self.last_activity = self._clock()
                elif item.state in ("failed", "closed"):
                    self.close(f"connection {item.state}")
        self.perform(self.core.take())
        if self.core.revision != self._revision:  # language or history changed: resumable state
            self._revision = self.core.revision
            self.on_change(self)

    def perform(self, todo: list[actions.Action]) -> None:
        for action in todo:
            match action:
                case actions.Send():
                    self.send(action.event)
                case actions.FlushAudio():
                    self.outbound.flush()
                case actions.PauseAudio():
                    self.outbound.pause()
                case actions.ResumeAudio():
                    self.send(events.Resume(action.turn_id, round(self.outbound.resume(), 1)))
                case _:
                    self.jobs.perform(action)

    async def _defect(self, item: Item, exc: Exception) -> None:
        if isinstance(item, _Message):
            log.error("call %s: handling a message failed", self.session_id, exc_info=exc)
            self.metrics.failures.labels("message").inc()
            self.send(events.Error("internal_error", f"the message could not be handled ({type(exc).__name__})",
                                   id=protocol.message_id(item.data)))
            self.perform(self.core.take())
            return
        log.error("call %s: the turn-taking core failed", self.session_id, exc_info=exc)
        self.metrics.failures.labels("core").inc()
        now = self._clock()
        self._defects = [t for t in self._defects if now - t < 60] + [now]
        if len(self._defects) > DEFECTS_PER_MINUTE:
            self.close("internal_error")
            return
        self.core.take()  # half-done decisions are dropped with the turns
        self.outbound.flush()
        await self.jobs.cancel_all()
        self.core.recover(self._clock())
        self.perform(self.core.take())

    def _on_track(self, track: MediaStreamTrack) -> None:
        if track.kind != "audio":
            return
        max_gap = self.config.webrtc.jitter_max_gap
        for transceiver in self.pc.getTransceivers():
            if transceiver.receiver.track is track and max_gap > 0:
                try:
                    jitter.install(transceiver.receiver, max_gap)
                except Exception:  # aiortc's internals moved: keep its own jitter buffer
                    log.exception("call %s: cannot install the low-latency jitter buffer", self.session_id)
                    self.metrics.failures.labels("inbound").inc()
        self.spawn(self._consume(track), "inbound")
        self.core.listen(self._clock())

    async def _consume(self, track: MediaStreamTrack) -> None:
        vad = self.config.vad
        try:
            await inbound.consume(
                track, lambda pcm, voiced, rms, at: self.post(_InFrame(pcm, voiced, rms, at)),
                aggressiveness=vad.aggressiveness, energy_margin_db=vad.energy_margin_db, clock=self._clock,
                tap=self.recorder.caller_frame if self.recorder.recording else None,
            )
        except Exception:  # a deaf call is worse than an ended one
            log.exception("call %s: the inbound audio failed", self.session_id)
            self.metrics.failures.labels("inbound").inc()
            self.close("inbound audio failed")

    async def _watchdog(self) -> None:
        server = self.config.server
        while True:
            await asyncio.sleep(0.5)
            now = self._clock()
            if now - self.created_at > server.session_ttl_s:
                self.close("session ttl")
            elif self.connected_at is None and now - self.created_at > server.connect_timeout_s:
                self.close("connect timeout")
            elif self.connected_at is not None and now - self.last_activity > server.heartbeat_timeout_s:
                self.close("peer silent")
            elif self.outbound.failed:
                self.metrics.failures.labels("outbound").inc()
                self.close("outbound audio failed")
            else:
                continue
            return

    # --- the control channel ---------------------------------------------------------

    def send(self, event: events.Event) -> None:
        match event:
            case events.StateChanged():
                if event.state in ("thinking", "speaking"):
                    self.quiet.clear()
                else:
                    self.quiet.set()
            case events.TurnMetrics():
                self.metrics.observe_turn(event.values)
                if event.interrupted is False and event.kind is not None:
                    self.metrics.turns.labels(event.kind).inc()
            case events.BargeIn(tentative=True):
                self.metrics.tentative_barge_ins.inc()
            case events.BargeIn():
                self.metrics.barge_ins.labels(event.source).inc()
            case events.Resume():
                self.metrics.resumes.inc()
        wire = event.to_dict()
        self.recorder.event(wire, self._clock())
        channel = self.channel
        if channel is not None and channel.readyState == "open":
            channel.send(json.dumps(wire, separators=(",", ":"), ensure_ascii=False))

    def _on_message(self, data: str | bytes, at: float) -> None:
        match self.guard.on_message(at):  # datachannel rate limit, before anything else
            case "drop":
                self.send(events.Error("rate_limited", "too many messages: slow down", id=protocol.message_id(data)))
                return
            case "close":
                self.close(FLOOD_REASON)
                return
        try:
            message = protocol.parse(data)
        except ProtocolError as exc:
            self.send(events.Error(exc.code, str(exc), id=exc.message_id))
            return
        token = self.guard.required()  # the static token needs auth first; a guest link does not
        match message:
            case protocol.Ping():
                self.send(events.Pong(message.t, time.time() * 1000, id=message.id))
            case protocol.Auth():
                if not self.guard.accepts(message.token, time.time()):  # a guest JWT or the static token
                    self.send(events.Error("unauthorized", "invalid token", id=message.id))
                    return
                self.authenticated = True
                self.send(events.AuthOk(self.session_id, id=message.id))
            case _ if token and not self.authenticated:
                self.send(events.Error("unauthorized", "send 'auth' first", id=message.id))
            case protocol.CallStart():
                extra = {"resume_token": self.resume_token, "resumed": True if self.resumed else None}
                self.core.call_start(message.language, at, message.id, greet=not self.resumed,
                                     extra={k: v for k, v in extra.items() if v is not None})
            case protocol.Message():
                if not self.guard.allow_typed(at):  # typed-message limit: not answered
                    self.send(events.Error("rate_limited", "too many typed messages: wait a minute", id=message.id))
                    return
                turn = self.core.caller_turns + 1
                if self.config.scripted.fault == "handler" and turn in self.config.scripted.fault_turns:
                    if turn not in self._faults_fired:
                        self._faults_fired.add(turn)
                        raise RuntimeError(f"injected handler defect on turn {turn}")
                self.core.typed(message.text, at, message.id)
                self.recorder.turn(recording.TurnRecord(self.core.turn_id, "guest", "text", message.text, at, at))
            case protocol.BargeIn():
                self.core.client_barge_in(at, message.id)
            case protocol.CallEnd():
                self.close("caller hung up")

    # --- hang-up ---------------------------------------------------------------------

    def close(self, reason: str = "closed") -> asyncio.Task[None]:
        """Hang up (idempotent). Returns the task doing it; await :meth:`wait_closed`."""
        if self._closing is None:
            self.close_reason = reason
            self._closing = asyncio.get_running_loop().create_task(self._close(reason), name=f"{self.session_id}:close")
        return self._closing

    async def wait_closed(self) -> None:
        await self._closed.wait()

    async def _close(self, reason: str) -> None:
        log.info("call %s: closing (%s)", self.session_id, reason)
        try:
            if self.channel is not None and self.channel.readyState == "open":
                self.send(events.CallEnded(reason))
                await asyncio.sleep(0.05)  # let the event leave before the transport goes
            self.core.end(self._clock())
            self.perform(self.core.take())
            self.outbound.stop()
            tasks = [t for t in self._tasks if t is not asyncio.current_task()]
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            for result in self.jobs.unwound():  # what the caller heard of a reply cut by the hang-up
                result.apply(self.core, self._clock())
            self.perform([a for a in self.core.take() if isinstance(a, actions.Send)])
            await self.pc.close()
        finally:
            try:
                await self.recorder.close(reason)
            except Exception:  # the call is over either way
                log.exception("call %s: closing the recording failed", self.session_id)
            self._closed.set()
            self._on_closed(self)
