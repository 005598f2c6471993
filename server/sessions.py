"""The calls this process is serving: answering offers, capacity, hang-ups."""

from __future__ import annotations

import asyncio
import logging
import secrets
import time

from aiortc import RTCConfiguration, RTCIceServer, RTCPeerConnection, RTCSessionDescription

from .config import Config
from .conversation.call import Call
from .errors import CapacityError, OfferError
from .metrics import Metrics
from .providers import Providers

log = logging.getLogger("sandra.sessions")


def rtc_configuration(config: Config) -> RTCConfiguration:
    # An explicit (possibly empty) list: aiortc falls back to a public STUN server on None.
    servers = [
        RTCIceServer(urls=list(s.urls), username=s.username, credential=s.credential)
        for s in config.webrtc.ice_servers
    ]
    return RTCConfiguration(iceServers=servers)


class Sessions:
    def __init__(self, config: Config, providers: Providers, metrics: Metrics) -> None:
        self.config = config
        self.providers = providers
        self.metrics = metrics
        self.calls: dict[str, Call] = {}
        self._opening = 0
        self._ended_at: dict[str, float] = {}  # session -> monotonic end time, for activeLastMinute

    def __len__(self) -> int:
        return len(self.calls)

    async def answer(self, sdp: str) -> tuple[str, RTCSessionDescription]:
        """Answer a WebRTC offer with a new call. Raises OfferError, CapacityError."""
        if len(self.calls) + self._opening >= self.config.server.max_sessions:
            raise CapacityError(f"Sandra is serving {self.config.server.max_sessions} calls, the most she can")
        self._opening += 1
        session_id = secrets.token_urlsafe(12)
        pc = RTCPeerConnection(rtc_configuration(self.config))
        call = Call(session_id, pc, config=self.config, providers=self.providers, metrics=self.metrics,
                    on_closed=self._closed)
        try:
            call.attach()  # our handlers only post to the call's inbox: nothing of ours runs in here
            try:
                await pc.setRemoteDescription(RTCSessionDescription(sdp=sdp, type="offer"))
            except Exception as exc:  # aiortc's SDP parser raises many kinds; all mean a bad offer
                raise OfferError(f"the offer's SDP was rejected: {str(exc)[:200] or type(exc).__name__}") from exc
            if not any(t.kind == "audio" for t in pc.getTransceivers()):
                raise OfferError("the offer has no audio section", "no_audio")
            call.add_outbound_track()
            await pc.setLocalDescription(await pc.createAnswer())
        except BaseException:
            call.close("offer failed")
            await call.wait_closed()
            raise
        finally:
            self._opening -= 1
        self.calls[session_id] = call
        self.metrics.calls.inc()
        self.metrics.connections.set(len(self.calls))
        return session_id, pc.localDescription

    def _closed(self, call: Call) -> None:
        if self.calls.pop(call.session_id, None) is not None:
            self._ended_at[call.session_id] = time.monotonic()
        self.metrics.connections.set(len(self.calls))

    async def hang_up(self, session_id: str) -> bool:
        call = self.calls.get(session_id)
        if call is None:
            return False
        call.close("hung up by the server API")
        await call.wait_closed()
        return True

    async def close_all(self) -> None:
        calls = list(self.calls.values())
        for call in calls:
            call.close("server shutting down")
        await asyncio.gather(*(c.wait_closed() for c in calls))

    def summary(self) -> dict[str, int]:
        now = time.monotonic()
        self._ended_at = {k: t for k, t in self._ended_at.items() if now - t < 60}
        calls = self.calls.values()
        return {
            "total": len(self.calls),
            "authenticated": sum(1 for c in calls if c.authenticated),
            "activeCalls": sum(1 for c in calls if c.state.value != "idle"),
            "activeLastMinute": len(self.calls) + len(self._ended_at),
        }
