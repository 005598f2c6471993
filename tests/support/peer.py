"""A real aiortc client peer, as a browser would be: microphone track, `control`
datachannel, Sandra's audio received and measured frame by frame."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from fractions import Fraction
from typing import Any

import aiohttp
import av
import numpy as np
from aiortc import RTCConfiguration, RTCPeerConnection, RTCSessionDescription
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack

from server.media.ice import restrict_host_addresses

RATE = 48000
FRAME = 960  # 20 ms
SILENT_RMS = 30.0


class Microphone(MediaStreamTrack):
    """Sends queued PCM (48 kHz mono s16) paced in real time, silence otherwise."""

    kind = "audio"

    def __init__(self) -> None:
        super().__init__()
        self._queue = bytearray()
        self._start: float | None = None
        self._pts = 0
        self.sent_voiced: list[float] = []  # send times (monotonic) of frames that carried audio
        self.sent_voiced_wall: list[float] = []  # the same, wall clock
        self.idle = asyncio.Event()
        self.idle.set()
        self._frozen = False

    def play(self, pcm: bytes) -> None:
        self._queue += pcm
        self.idle.clear()

    def clear(self) -> None:
        self._queue.clear()
        self.idle.set()

    def freeze(self) -> None:
        """Stop sending anything, like a browser that vanished."""
        self._frozen = True

    async def recv(self) -> av.AudioFrame:
        if self.readyState != "live":
            raise MediaStreamError
        if self._frozen:
            await asyncio.Event().wait()  # never: the sender stops here
        if self._start is None:
            self._start = time.monotonic()
        due = self._start + self._pts / RATE
        delay = due - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
        chunk = bytes(self._queue[: FRAME * 2])
        del self._queue[: FRAME * 2]
        now = time.monotonic()
        if chunk:
            chunk += bytes(FRAME * 2 - len(chunk))
            samples = np.frombuffer(chunk, dtype=np.int16)
            if np.abs(samples).max() > 300:
                self.sent_voiced.append(now)
                self.sent_voiced_wall.append(time.time())
            if not self._queue:
                self.idle.set()
        else:
            chunk = bytes(FRAME * 2)
        frame = av.AudioFrame.from_ndarray(np.frombuffer(chunk, dtype=np.int16).reshape(1, -1), format="s16", layout="mono")
        frame.sample_rate = RATE
        frame.pts = self._pts
        frame.time_base = Fraction(1, RATE)
        self._pts += FRAME
        return frame


@dataclass
class Heard:
    at: float
    rms: float


class ClientPeer:
    def __init__(
        self, base_url: str, *, datachannel: bool = True, echo_gain: float = 0.0, fast_receive: bool = False
    ) -> None:
        """``echo_gain`` > 0 plays what the peer hears back into its microphone, like a
        speakerphone without echo cancellation. ``fast_receive`` replaces this peer's
        80 ms receive jitter buffer with Sandra's, so timings measure the server."""
        self.base_url = base_url
        self.echo_gain = echo_gain
        self.fast_receive = fast_receive
        self.dropped_rtp = 0
        self.pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
        self.mic = Microphone()
        self.channel = self.pc.createDataChannel("control") if datachannel else None
        self.events: list[dict[str, Any]] = []
        self.heard: list[Heard] = []
        self.session_id: str | None = None
        self._changed = asyncio.Event()  # a datachannel event arrived
        self._heard_more = asyncio.Event()  # an audio frame arrived
        self._tasks: list[asyncio.Task[None]] = []
        self._open = asyncio.Event()
        self.pc.addTrack(self.mic)
        self.pc.on("track", self._on_track)
        if self.channel is not None:
            self.channel.on("open", self._open.set)
            self.channel.on("message", self._on_message)

    async def connect(self) -> str:
        # Loopback only (the server drops other candidates when it is loopback-only too):
        # aioice would otherwise offer this machine's other addresses and never 127.0.0.1.
        restrict_host_addresses(["127.0.0.1"])
        await self.pc.setLocalDescription(await self.pc.createOffer())
        async with aiohttp.ClientSession() as http:
            async with http.post(
                f"{self.base_url}/api/offer",
                json={"sdp": self.pc.localDescription.sdp, "type": "offer"},
            ) as response:
                body = await response.json()
                if response.status != 200:
                    raise RuntimeError(f"offer refused: {response.status} {body}")
        await self.pc.setRemoteDescription(RTCSessionDescription(sdp=body["sdp"], type="answer"))
        self.session_id = body["session_id"]
        if self.channel is not None:
            await asyncio.wait_for(self._open.wait(), 10)
        return body["session_id"]

    def drop_rtp(self, count: int = 1) -> None:
        """Lose the next ``count`` outgoing RTP packets, as a network would."""
        transport = self.pc.getSenders()[0].transport
        send = transport._send_rtp
        remaining = [count]

        async def lossy(data: bytes) -> None:
            if remaining[0] > 0:
                remaining[0] -= 1
                self.dropped_rtp += 1
                if remaining[0] == 0:
                    del transport._send_rtp  # back to the class's method
                return
            await send(data)

        transport._send_rtp = lossy

    def _on_track(self, track: MediaStreamTrack) -> None:
        if self.fast_receive:
            from server.media.jitter import install

            for transceiver in self.pc.getTransceivers():
                if transceiver.receiver.track is track:
                    install(transceiver.receiver)
        self._tasks.append(asyncio.get_running_loop().create_task(self._listen(track)))

    async def _listen(self, track: MediaStreamTrack) -> None:
        while True:
            try:
                frame = await track.recv()
            except MediaStreamError:
                return
            samples = frame.to_ndarray().astype(np.float32)
            self.heard.append(Heard(time.monotonic(), float(np.sqrt(np.mean(samples * samples)))))
            self._heard_more.set()
            if self.echo_gain:
                mono = samples[0, :: len(frame.layout.channels)] * self.echo_gain
                self.mic.play(mono.astype(np.int16).tobytes())

    def _on_message(self, data: str) -> None:
        event = json.loads(data)
        event["_at"] = time.monotonic()
        self.events.append(event)
        self._changed.set()

    def send(self, message: dict[str, Any] | str) -> None:
        assert self.channel is not None
        self.channel.send(message if isinstance(message, str) else json.dumps(message))

    async def wait_for(
        self, type: str, predicate: Callable[[dict[str, Any]], bool] = lambda e: True, *, timeout: float = 15.0,
        after: int = 0,
    ) -> dict[str, Any]:
        """The first event of ``type`` (from index ``after``) matching ``predicate``."""

        def find() -> dict[str, Any] | None:
            return next((e for e in self.events[after:] if e["type"] == type and predicate(e)), None)

        return await self.wait_until(find, timeout=timeout, what=f"a '{type}' event", audio=False)

    async def wait_until(
        self, check: Callable[[], Any], *, timeout: float = 15.0, what: str = "condition", audio: bool = True
    ) -> Any:
        """Wait for ``check()`` to be true, re-checking on each event (and each audio frame
        if ``audio``)."""
        deadline = time.monotonic() + timeout
        signals = [self._changed, self._heard_more] if audio else [self._changed]
        while True:
            result = check()
            if result:
                return result
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                types = [e["type"] for e in self.events]
                raise AssertionError(f"timed out waiting for {what}; events: {types}")
            for signal in signals:
                signal.clear()
            waiters = [asyncio.ensure_future(signal.wait()) for signal in signals]
            try:
                await asyncio.wait(waiters, timeout=remaining, return_when=asyncio.FIRST_COMPLETED)
            finally:
                for waiter in waiters:
                    waiter.cancel()

    def types(self) -> list[str]:
        return [e["type"] for e in self.events]

    def states(self) -> list[str]:
        return [e["state"] for e in self.events if e["type"] == "state"]

    def loud_frames(self, since: float = 0.0) -> int:
        return sum(1 for h in self.heard if h.at >= since and h.rms > SILENT_RMS)

    def first_loud_after(self, at: float) -> float | None:
        """Arrival time of the first frame with energy after ``at``."""
        return next((h.at for h in self.heard if h.at > at and h.rms > SILENT_RMS), None)

    def quiet_since(self, at: float, run: int = 10) -> float | None:
        """Arrival time of the first of ``run`` silent frames in a row after ``at``."""
        count = 0
        for h in self.heard:
            if h.at <= at:
                continue
            count = count + 1 if h.rms <= SILENT_RMS else 0
            if count == run:
                return h.at - (run - 1) * 0.02
        return None

    async def close(self) -> None:
        await self.pc.close()
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
