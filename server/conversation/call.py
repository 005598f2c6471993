"""One call: a peer connection, the caller's audio, Sandra's voice and the turn in progress.

The :class:`Call` is handed its parts (peer connection, providers, config, metrics) and
owns its tasks: the inbound consumer, the watchdog (heartbeat and TTL) and the current
turn. Each callback feeds a pure core (segmenter, echo guard, conversation state
machine), performs the I/O it implies and sends the events.

Barge-in lives in :meth:`Call._interrupt`: it flushes the outbound track synchronously
(the next frame is silence), records what the caller actually heard of the reply, and
cancels the turn's task, which stops the LLM and TTS streams with it.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

from aiortc import RTCDataChannel, RTCPeerConnection
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack

from .. import protocol
from ..config import Config
from ..errors import ProtocolError, ProviderError
from ..media import inbound, jitter
from ..media.echo import EchoGuard
from ..media.outbound import OutboundAudio
from ..media.segmenter import SpeechAudio, SpeechEnd, SpeechSegmenter, SpeechStart, SustainedSpeech
from ..metrics import Metrics
from ..providers import Providers
from ..providers.base import ChatMessage, LLMRequest
from .reply import Reply, speak
from .state import Conversation, State

log = logging.getLogger("sandra.call")

MAX_HISTORY = 60


@dataclass
class Turn:
    id: int
    kind: str  # "voice" | "text" | "greeting"
    audio: asyncio.Queue[bytes | None] = field(default_factory=asyncio.Queue)
    utterance: list[bytes] = field(default_factory=list)
    transcript: str | None = None
    reply: Reply | None = None
    started_at: float = 0.0
    last_voiced_at: float | None = None
    eos_ms: float | None = None
    stt_ms: float | None = None
    task: asyncio.Task[None] | None = None
    done: bool = False


async def _once(text: str) -> AsyncIterator[str]:
    yield text


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
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.session_id = session_id
        self.pc = pc
        self.config = config
        self.providers = providers
        self.metrics = metrics
        self._on_closed = on_closed
        self._clock = clock
        vad = config.vad
        self.conversation = Conversation()
        self.segmenter = SpeechSegmenter(
            start_ms=vad.start_ms, end_silence_ms=vad.end_silence_ms, pre_roll_ms=vad.pre_roll_ms, barge_in_ms=vad.barge_in_ms
        )
        self.echo = EchoGuard(return_db=vad.echo_return_db, margin_db=vad.echo_margin_db)
        self.outbound = OutboundAudio(
            sample_rate=config.audio.sample_rate,
            lead_ms=config.audio.outbound_lead_ms,
            clock=clock,
            on_frame=self._on_outbound_frame,
        )
        self.history: list[ChatMessage] = []
        self.language = "en"
        self.detect_language = False  # HOOK(spanish): call:start had no language: Whisper's detection picks it
        self.channel: RTCDataChannel | None = None
        self.authenticated = False
        self.created_at = clock()
        self.last_activity = self.created_at
        self.echo_suppressed = 0
        self._tasks: set[asyncio.Task[Any]] = set()
        self._turn: Turn | None = None
        self._listening: Turn | None = None  # the voice turn receiving the caller's audio
        self._held: list[bytes] | None = None  # speech over Sandra, not yet a barge-in
        self._barge_in_onset: tuple[int, float] | None = None  # (turn, first voiced frame) awaiting silence
        self._closing: asyncio.Task[None] | None = None
        self._closed = asyncio.Event()
        self.close_reason: str | None = None

    # --- wiring ----------------------------------------------------------------------

    def attach(self) -> None:
        """Subscribe to the peer connection's events; call before setRemoteDescription."""
        self.pc.on("track", self._on_track)
        self.pc.on("datachannel", self._on_datachannel)
        self.pc.on("connectionstatechange", self._on_connection_state)
        self._spawn(self._watchdog(), "watchdog")

    def add_outbound_track(self) -> None:
        """Attach Sandra's voice to the offer's audio transceiver (after setRemoteDescription)."""
        self.pc.addTrack(self.outbound)

    def _spawn(self, coro: Any, name: str) -> asyncio.Task[Any]:
        task = asyncio.get_running_loop().create_task(coro, name=f"{self.session_id}:{name}")
        self._tasks.add(task)
        task.add_done_callback(self._task_done)
        return task

    def _task_done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("call %s: task %s failed", self.session_id, task.get_name(), exc_info=task.exception())

    def _on_track(self, track: MediaStreamTrack) -> None:
        if track.kind != "audio":
            return
        max_gap = self.config.webrtc.jitter_max_gap
        for transceiver in self.pc.getTransceivers():
            if transceiver.receiver.track is track and max_gap > 0:
                jitter.install(transceiver.receiver, max_gap)
        self._spawn(self._consume(track), "inbound")
        self._start_listening()

    def _on_datachannel(self, channel: RTCDataChannel) -> None:
        if channel.label != "control":
            return
        self.channel = channel
        channel.on("message", self._on_message)

    def _on_connection_state(self) -> None:
        state = self.pc.connectionState
        if state == "connected":
            self.last_activity = self._clock()
        elif state in ("failed", "closed"):
            self.close(f"connection {state}")

    async def _consume(self, track: MediaStreamTrack) -> None:
        vad = self.config.vad
        await inbound.consume(
            track, self._on_inbound, aggressiveness=vad.aggressiveness, energy_margin_db=vad.energy_margin_db,
            clock=self._clock,
        )

    async def _watchdog(self) -> None:
        server = self.config.server
        while True:
            await asyncio.sleep(0.5)
            now = self._clock()
            if now - self.created_at > server.session_ttl_s:
                self.close("session ttl")
                return
            if self.pc.connectionState == "connected" and now - self.last_activity > server.heartbeat_timeout_s:
                self.close("peer silent")
                return

    # --- events out ------------------------------------------------------------------

    def send(self, ev: dict[str, Any]) -> None:
        channel = self.channel
        if channel is not None and channel.readyState == "open":
            channel.send(protocol.encode(ev))

    def _emit_states(self) -> None:
        for change in self.conversation.take_events():
            self.send({"type": "state", "state": change.state.value, "turn_id": change.turn_id})

    def _remember(self, message: ChatMessage) -> None:
        if message.text:
            self.history.append(message)
            del self.history[:-MAX_HISTORY]

    # --- the caller's audio ----------------------------------------------------------

    def _start_listening(self) -> None:
        if self.conversation.start(self._clock()):
            self._emit_states()

    def _on_inbound(self, pcm: bytes, voiced: bool, rms: float, at: float) -> None:
        self.last_activity = at
        if self.conversation.state is State.IDLE:
            return
        echo = self.echo.is_echo(at, rms, voiced)  # every frame: the guard learns from silence too
        if voiced and echo:
            voiced = False
            self.echo_suppressed += 1
        for ev in self.segmenter.push(pcm, voiced, at):
            match ev:
                case SpeechStart():
                    self._on_speech_start(ev)
                case SpeechAudio():
                    if self._listening is not None:
                        self._listening.audio.put_nowait(ev.audio)
                        self._listening.utterance.append(ev.audio)
                    elif self._held is not None:
                        self._held.append(ev.audio)
                case SustainedSpeech():
                    self._on_sustained_speech(ev)
                case SpeechEnd():
                    self._on_speech_end(ev)

    def _on_speech_start(self, ev: SpeechStart) -> None:
        # onset_ms: wall-clock arrival of the first voiced frame (for clients measuring latency)
        onset_ms = round((time.time() - (self._clock() - ev.onset_at)) * 1000, 1)
        self.send({"type": "vad", "speaking": True, "onset_ms": onset_ms})
        turn_id = self.conversation.user_started(ev.at)
        if turn_id is not None:
            self._begin_voice_turn(turn_id, [ev.audio], ev.at)
        elif self.conversation.state in (State.THINKING, State.SPEAKING):
            self._held = [ev.audio]  # wait for barge_in_ms of speech before interrupting

    def _on_sustained_speech(self, ev: SustainedSpeech) -> None:
        if self._held is None or self.conversation.state not in (State.THINKING, State.SPEAKING):
            return
        audio, self._held = self._held, None
        self.echo.forget_since(ev.onset_at)  # that was the caller, not Sandra's echo
        previous = self._interrupt("voice", onset_at=ev.onset_at)
        if previous is not None and previous.kind == "voice" and previous.transcript is None:
            audio = previous.utterance + audio  # they were not done: one utterance
        self._begin_voice_turn(self.conversation.turn_id, audio, ev.at)

    def _on_speech_end(self, ev: SpeechEnd) -> None:
        self.send({"type": "vad", "speaking": False})
        self._held = None
        turn, self._listening = self._listening, None
        if turn is None:
            return
        turn.last_voiced_at = ev.last_voiced_at
        turn.eos_ms = (ev.at - ev.last_voiced_at) * 1000
        turn.audio.put_nowait(None)
        self.conversation.user_stopped(ev.at)
        self._emit_states()

    def _begin_voice_turn(self, turn_id: int, audio: list[bytes], at: float) -> None:
        turn = Turn(turn_id, "voice", started_at=at)
        for chunk in audio:
            turn.audio.put_nowait(chunk)
        turn.utterance = list(audio)
        self._listening = self._turn = turn
        turn.task = self._spawn(self._voice_turn(turn), f"turn-{turn_id}")
        self._emit_states()

    # --- Sandra's audio --------------------------------------------------------------

    def _on_outbound_frame(self, at: float, rms: float, is_reply: bool) -> None:
        self.echo.played(at, rms)
        turn = self._turn
        if is_reply and turn is not None and self.outbound.reply_id == turn.id:
            if self.conversation.reply_started(turn.id, at):
                self._emit_states()
        elif not is_reply and self._barge_in_onset is not None:
            turn_id, onset = self._barge_in_onset
            self._barge_in_onset = None
            barge_in_ms = round((at - onset) * 1000, 1)
            self.metrics.observe_turn({"barge_in_ms": barge_in_ms})
            self.send({"type": "metrics", "turn_id": turn_id, "barge_in_ms": barge_in_ms})

    # --- barge-in --------------------------------------------------------------------

    def _interrupt(self, source: str, onset_at: float | None = None) -> Turn | None:
        """Cut Sandra off now. Returns the interrupted turn, or None if she was not answering."""
        now = self._clock()
        interrupted_id = self.conversation.barge_in(now, voice=source == "voice")
        if interrupted_id is None:
            return None
        self.outbound.flush()  # the next outbound frame is silence
        self._barge_in_onset = (interrupted_id, onset_at if onset_at is not None else now)
        turn, self._turn = self._turn, None
        if turn is not None:
            self._finish_interrupted(turn)
        self.metrics.barge_ins.labels(source).inc()
        self.send({"type": "barge-in", "turn_id": interrupted_id, "source": source})
        self._emit_states()
        return turn

    def _finish_interrupted(self, turn: Turn) -> None:
        if turn.task is not None:
            turn.task.cancel()
        if turn.reply is not None and not turn.done:
            played = turn.reply.played_text(self.outbound.reply_sent, self.outbound.reply_written)
            self._remember(ChatMessage("assistant", played, interrupted=True))
            self.send({"type": "response:done", "turn_id": turn.id, "text": played, "interrupted": True})
            self._send_turn_metrics(turn, interrupted=True)
        turn.done = True

    # --- turns -----------------------------------------------------------------------

    async def _voice_turn(self, turn: Turn) -> None:
        # HOOK(spanish): None = let the STT detect the language (providers that can: detects_language)
        language = None if self.detect_language and getattr(self.providers.stt, "detects_language", False) else self.language
        try:
            stream = await self.providers.stt.open(language, on_partial=lambda text: self._partial(turn, text))
            try:
                while (pcm := await turn.audio.get()) is not None:
                    await stream.feed(pcm)
                started = self._clock()
                transcript = await stream.finish()
                turn.stt_ms = (self._clock() - started) * 1000
            finally:
                await stream.aclose()
        except ProviderError as exc:
            await self._apologize(turn, exc)
            return
        text = transcript.text.strip()
        threshold = self.config.stt.no_speech_threshold
        if not text or (transcript.no_speech_prob is not None and transcript.no_speech_prob > threshold):
            log.info("call %s: turn %d had no words, not answering", self.session_id, turn.id)
            turn.done = True
            self._turn = None if self._turn is turn else self._turn
            if self.conversation.user_abandoned(self._clock()):
                self._emit_states()
            return
        if self.detect_language and transcript.language in protocol.LANGUAGES:  # HOOK(spanish): answer in it
            self.language, self.detect_language = transcript.language, False
        turn.transcript = text
        self.send({"type": "transcript", "turn_id": turn.id, "text": text, "final": True})
        self._remember(ChatMessage("user", text))
        await self._answer(turn)

    def _partial(self, turn: Turn, text: str) -> None:
        if text and not turn.done:
            self.send({"type": "transcript", "turn_id": turn.id, "text": text, "final": False})

    def _begin_turn(self, kind: str, pieces: Callable[[], AsyncIterator[str]], user_text: str | None = None) -> None:
        """A turn with no speech (typed message, greeting): interrupts whatever is under way,
        then remembers ``user_text`` (after the cut reply, so the LLM sees it last)."""
        if self._turn is not None and not self._turn.done:
            if self._interrupt("client") is None:  # still listening to a voice turn: drop it
                self._listening = None
                self._finish_interrupted(self._turn)
                self._turn = None
        if user_text is not None:
            self._remember(ChatMessage("user", user_text))
        turn_id = self.conversation.new_turn(self._clock())
        if turn_id is None:
            return
        turn = Turn(turn_id, kind, started_at=self._clock())
        self._turn = turn
        self._emit_states()
        turn.task = self._spawn(self._answer(turn, pieces()), f"turn-{turn_id}")

    async def _answer(self, turn: Turn, pieces: AsyncIterator[str] | None = None) -> None:
        if pieces is None:
            request = LLMRequest(tuple(self.history), self.language, notify=self._notify)
            pieces = self.providers.llm.reply(request)
        reply = turn.reply = Reply(turn.id)
        self.outbound.begin_reply(turn.id)
        try:
            await speak(reply, pieces, tts=self.providers.tts, language=self.language, outbound=self.outbound, send=self.send)
        except ProviderError as exc:
            await self._apologize(turn, exc)
            return
        await self.outbound.drained()
        self._complete(turn)

    def _complete(self, turn: Turn) -> None:
        turn.done = True
        if turn.reply is not None:
            self._remember(ChatMessage("assistant", turn.reply.text.strip()))
            self.send({"type": "response:done", "turn_id": turn.id, "text": turn.reply.text.strip(), "interrupted": False})
        self._send_turn_metrics(turn, interrupted=False)
        self.metrics.turns.labels(turn.kind).inc()
        if self._turn is turn:
            self._turn = None
        if self.conversation.reply_finished(turn.id, self._clock()):
            self._emit_states()

    async def _apologize(self, turn: Turn, exc: ProviderError) -> None:
        """A provider failed: say sorry (out loud if the voice still works), keep the call."""
        log.warning("call %s: turn %d: %s", self.session_id, turn.id, exc)
        self.metrics.provider_errors.labels(exc.provider).inc()
        self.send({"type": "error", "code": "provider_error", "message": f"the {exc.provider} service failed: {exc}"})
        if self._listening is turn:  # STT failed while the caller was still speaking
            self._listening = None
            self.conversation.user_stopped(self._clock())  # their turn is over: Sandra answers
            self._emit_states()
        apology = self.providers.llm.apology(self.language)
        reply = turn.reply = turn.reply or Reply(turn.id)
        if not reply.spoken and not reply.current:
            self.outbound.begin_reply(turn.id)
        reply.text = (reply.text + " " + apology).strip()
        try:
            await speak(Reply(turn.id), _once(apology), tts=self.providers.tts, language=self.language,
                        outbound=self.outbound, send=self.send)
            await self.outbound.drained()
        except ProviderError as tts_exc:
            log.warning("call %s: apology not spoken: %s", self.session_id, tts_exc)
            self.send({"type": "response:delta", "turn_id": turn.id, "text": apology})
        self._complete(turn)

    def _notify(self, event: dict[str, Any]) -> None:
        self.send(event)

    def _send_turn_metrics(self, turn: Turn, *, interrupted: bool) -> None:
        reply = turn.reply
        values: dict[str, float | None] = {"eos_ms": turn.eos_ms, "stt_ms": turn.stt_ms}
        if reply is not None:
            if reply.llm_first_at is not None and reply.llm_started_at is not None:
                values["llm_ttft_ms"] = (reply.llm_first_at - reply.llm_started_at) * 1000
            if reply.tts_first_at is not None and reply.tts_sent_at is not None:
                values["tts_ttfb_ms"] = (reply.tts_first_at - reply.tts_sent_at) * 1000
            first_audio = self.outbound.reply_first_sent_at if self.outbound.reply_id == turn.id else None
            if first_audio is not None and turn.last_voiced_at is not None:
                values["voice_to_voice_ms"] = (first_audio - turn.last_voiced_at) * 1000
            elif first_audio is not None and turn.kind == "text":
                values["text_to_voice_ms"] = (first_audio - turn.started_at) * 1000
        values = {k: round(v, 1) for k, v in values.items() if v is not None}
        self.metrics.observe_turn(values)
        self.send({"type": "metrics", "turn_id": turn.id, "kind": turn.kind, "interrupted": interrupted, **values})

    # --- the control channel ---------------------------------------------------------

    def _on_message(self, data: str | bytes) -> None:
        self.last_activity = self._clock()
        try:
            message = protocol.parse(data)
        except ProtocolError as exc:
            self.send(protocol.event("error", code=exc.code, message=str(exc), id=exc.message_id))
            return
        token = self.config.secrets.auth_token
        match message:
            case protocol.Ping():
                self.send(protocol.event("pong", t=message.t, server_time=time.time() * 1000, id=message.id))
            case protocol.Auth():
                if token and message.token != token:
                    self.send(protocol.event("error", code="unauthorized", message="invalid token", id=message.id))
                    return
                self.authenticated = True
                self.send(protocol.event("auth:ok", session_id=self.session_id, id=message.id))
            case _ if token and not self.authenticated:
                self.send(protocol.event("error", code="unauthorized", message="send 'auth' first", id=message.id))
            case protocol.CallStart():
                self.language = message.language or self.language
                self.detect_language = message.language is None  # HOOK(spanish)
                self._start_listening()
                self.send(protocol.event("call:started", language=self.language, id=message.id))
                greeting = self.providers.llm.greeting(self.language)
                self._begin_turn("greeting", lambda: _once(greeting))
            case protocol.Message():
                self._start_listening()
                self._begin_turn("text", lambda: self.providers.llm.reply(
                    LLMRequest(tuple(self.history), self.language, notify=self._notify)), user_text=message.text)
            case protocol.BargeIn():
                turn = self._interrupt("client")
                turn_id = turn.id if turn is not None else self.conversation.turn_id
                self.send(protocol.event("barge-in:ack", turn_id=turn_id, interrupted=turn is not None, id=message.id))
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
                self.send({"type": "call:ended", "reason": reason})
                await asyncio.sleep(0.05)  # let the event leave before the transport goes
            if self._turn is not None:
                self._finish_interrupted(self._turn)
            self.conversation.end(self._clock())
            self.outbound.stop()
            tasks = [t for t in self._tasks if t is not asyncio.current_task()]
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            await self.pc.close()
        finally:
            self._closed.set()
            self._on_closed(self)
