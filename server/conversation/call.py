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
from typing import Any

from aiortc import RTCDataChannel, RTCPeerConnection
from aiortc.mediastreams import MediaStreamTrack

from .. import events, protocol, recording
from ..config import Config
from ..media import inbound, jitter
from ..media.outbound import OutboundAudio
from ..metrics import Metrics
from ..providers import Providers
from ..providers.base import ChatMessage
from ..security.calls import CallGuard
from ..security.guest import Guest
from ..turn import Evidence
from . import actions
from .control import ControlChannel
from .inbox import (
    INBOX_SIZE,
    ChannelOpened,
    ConnectionState,
    InFrame,
    Item,
    Message,
    OutFrame,
    TrackArrived,
)
from .jobs import Jobs, Result
from .turns import State, TurnTaking

log = logging.getLogger("sandra.call")

DEFECTS_PER_MINUTE = 5  # more core failures than this end the call


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
        detector: Evidence | None = None,
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
        self.core = TurnTaking.configured(config, detector, language=self.guard.language or "en",
                                          wall_offset=time.time() - clock())
        self.outbound = OutboundAudio(
            sample_rate=config.audio.sample_rate, lead_ms=config.audio.outbound_lead_ms, clock=clock,
            on_frame=self._on_outbound_frame,
        )
        self.inbox: asyncio.Queue[Item] = asyncio.Queue(INBOX_SIZE)
        smart = self.core.policy.detector == "smart" and detector is not None
        self.jobs = Jobs(self, providers, self.outbound, clock=clock,
                         audio_model=detector.probability if smart else None)
        self.channel: RTCDataChannel | None = None
        self.control = ControlChannel(self)
        self.created_at = clock()
        self.connected_at: float | None = None
        self.last_activity = self.created_at
        self.close_reason: str | None = None
        self._tasks: set[asyncio.Task[Any]] = set()
        self._defects: list[float] = []
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

    @property
    def authenticated(self) -> bool:
        return self.control.authenticated

    def restore(self, language: str, history: list[ChatMessage], turn_id: int) -> None:
        """This call continues a conversation (a resumed session): no greeting, same history."""
        self.core.restore(language, history, turn_id)
        self.resumed = True

    # --- wiring: aiortc's handlers only post to the inbox ------------------------------

    def attach(self) -> None:
        """Subscribe to the peer connection's events; call before setRemoteDescription."""
        self.pc.on("track", lambda track: self.post(TrackArrived(track)))
        self.pc.on("datachannel", lambda channel: self.post(ChannelOpened(channel)))
        self.pc.on("connectionstatechange", lambda: self.post(ConnectionState(self.pc.connectionState)))
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
        if is_reply:
            self.post(OutFrame(at, rms, self.outbound.reply_id))
        elif self.core.wants_silent_frames:  # idle silence, 50 a second, is of no interest otherwise
            self.post(OutFrame(at, rms, None))

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
                try:
                    await self._defect(item, exc)
                except Exception:  # even the recovery failed: end the call rather than go deaf
                    log.exception("call %s: recovery failed", self.session_id)
                    self.close("internal_error")
                    return

    def _handle(self, item: Item) -> None:
        match item:
            case InFrame():
                self.last_activity = item.at
                self.core.frame(item.pcm, item.voiced, item.rms, item.at)
            case OutFrame():
                self.core.outbound_frame(item.at, item.rms, item.reply_id)
            case Result():
                item.apply(self.core, self._clock())
            case Message():
                self.last_activity = item.at
                self.control.handle(item.data, item.at)
            case TrackArrived():
                self._on_track(item.track)
            case ChannelOpened():
                if item.channel.label == "control":
                    self.channel = item.channel
                    item.channel.on("message", lambda data: self.post(Message(data, self._clock())))
            case ConnectionState():
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
        if isinstance(item, Message):
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
                track, lambda pcm, voiced, rms, at: self.post(InFrame(pcm, voiced, rms, at)),
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
        if isinstance(event, events.StateChanged):
            (self.quiet.clear if event.state in ("thinking", "speaking") else self.quiet.set)()
        self.metrics.observe_event(event)
        wire = event.to_dict()
        self.recorder.event(wire, self._clock())
        channel = self.channel
        if channel is not None and channel.readyState == "open":
            channel.send(json.dumps(wire, separators=(",", ":"), ensure_ascii=False))

    # --- hang-up ---------------------------------------------------------------------

    async def finish_sentence(self, timeout_s: float) -> None:
        """Let Sandra finish the sentence she is saying (at most ``timeout_s``): a draining
        server's last courtesy before it ends the call."""
        self.jobs.wind_down()
        try:
            await asyncio.wait_for(self.quiet.wait(), timeout_s)
        except TimeoutError:
            pass

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
