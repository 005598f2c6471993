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
from .security import turn
from .security.calls import DRAIN_REASON
from .security.guest import Guest
from .security.limits import LimitStore, MemoryLimitStore

log = logging.getLogger("sandra.sessions")


def rtc_configuration(config: Config, ident: str = "sandra") -> RTCConfiguration:
    # An explicit (possibly empty) list: aiortc falls back to a public STUN server on None.
    servers = [
        RTCIceServer(urls=list(s.urls), username=s.username, credential=s.credential)
        for s in config.webrtc.ice_servers
    ]
    webrtc = config.webrtc
    if webrtc.turn_urls and config.secrets.turn_secret:  # fresh TURN credentials for this call
        creds = turn.credentials(config.secrets.turn_secret, webrtc.turn_urls, ident=ident,
                                 ttl_s=webrtc.turn_ttl_s, now=time.time())
        servers.append(RTCIceServer(urls=list(creds.urls), username=creds.username, credential=creds.credential))
    return RTCConfiguration(iceServers=servers)


class TooManyCalls(CapacityError):
    """A guest link already has its ``max_calls`` calls (HTTP 429)."""


class Sessions:
    def __init__(
        self, config: Config, providers: Providers, metrics: Metrics, limits: LimitStore | None = None
    ) -> None:
        self.config = config
        self.limits: LimitStore = limits if limits is not None else MemoryLimitStore()
        self.draining = False
        self._guests: dict[str, Guest] = {}  # session -> the guest link it was opened with
        self._releases: set[asyncio.Task[None]] = set()
        self.providers = providers
        self.metrics = metrics
        self.calls: dict[str, Call] = {}
        self._opening = 0
        self._ended_at: dict[str, float] = {}  # session -> monotonic end time, for activeLastMinute

    def __len__(self) -> int:
        return len(self.calls)

    async def answer(self, sdp: str, guest: Guest | None = None) -> tuple[str, RTCSessionDescription]:
        """Answer a WebRTC offer with a new call. Raises OfferError, CapacityError, TooManyCalls."""
        if len(self.calls) + self._opening >= self.config.server.max_sessions:
            raise CapacityError(f"Sandra is serving {self.config.server.max_sessions} calls, the most she can")
        session_id = secrets.token_urlsafe(12)
        if guest is not None and not await self.limits.acquire(f"calls:{guest.sub}", session_id, guest.max_calls):
            raise TooManyCalls(f"this guest link already has {guest.max_calls} call(s) in progress")
        self._opening += 1
        pc = RTCPeerConnection(rtc_configuration(self.config, session_id))
        call = Call(session_id, pc, config=self.config, providers=self.providers, metrics=self.metrics,
                    on_closed=self._closed, guest=guest)
        if guest is not None:
            self._guests[session_id] = guest
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
        guest = self._guests.pop(call.session_id, None)
        if guest is not None:  # the guest link's call slot is free again
            task = asyncio.get_running_loop().create_task(self.limits.release(f"calls:{guest.sub}", call.session_id))
            self._releases.add(task)
            task.add_done_callback(self._releases.discard)

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
        await asyncio.gather(*self._releases)

    async def drain(self, timeout_s: float) -> None:
        """Refuse new calls; let each call in progress finish what Sandra is saying (up to
        ``timeout_s``), then end it with ``server_restarting``."""
        self.draining = True
        await asyncio.gather(*(self._drain_call(c, timeout_s) for c in list(self.calls.values())))
        await asyncio.gather(*self._releases)

    async def _drain_call(self, call: Call, timeout_s: float) -> None:
        try:  # Sandra finishes what she is saying
            await asyncio.wait_for(call.quiet.wait(), timeout_s)
        except TimeoutError:
            pass
        call.close(DRAIN_REASON)
        await call.wait_closed()

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
