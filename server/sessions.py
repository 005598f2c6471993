"""The calls this process is serving: answering offers, capacity, hang-ups."""

from __future__ import annotations

import asyncio
import logging
import secrets
import time

from aiortc import RTCConfiguration, RTCIceServer, RTCPeerConnection, RTCSessionDescription

from . import cluster as clustering
from .config import Config
from .conversation.call import Call
from .errors import CapacityError, OfferError
from .media import ice
from .metrics import Metrics
from .providers import Providers
from .security import turn
from .security.calls import DRAIN_REASON
from .security.guest import Guest
from .security.limits import LimitStore, MemoryLimitStore
from .turn import Evidence

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
        self,
        config: Config,
        providers: Providers,
        metrics: Metrics,
        limits: LimitStore | None = None,
        cluster: clustering.Cluster | None = None,
    ) -> None:
        """``limits``: rate limits and guest ``max_calls`` (in memory, or the cluster's Redis
        store); ``cluster``: admission, hang-ups and conversations across workers."""
        self.config = config
        self.limits: LimitStore = limits if limits is not None else MemoryLimitStore()
        self.detector: Evidence | None = None  # the end-of-turn evidence, set at startup
        self.draining = False
        self._guests: dict[str, Guest] = {}  # session -> the guest link it was opened with
        self.providers = providers
        self.metrics = metrics
        # The cluster (server/cluster): admission, hang-ups, snapshots across workers.
        self.cluster = cluster if cluster is not None else clustering.LocalCluster(config)
        self.calls: dict[str, Call] = {}
        self._opening = 0
        self._ended_at: dict[str, float] = {}  # session -> monotonic end time, for activeLastMinute
        self._forgetting: dict[str, asyncio.Task[None]] = {}  # a closed call leaving the cluster

    def __len__(self) -> int:
        return len(self.calls)

    async def answer(
        self, sdp: str, guest: Guest | None = None, resume_token: str | None = None
    ) -> tuple[str, RTCSessionDescription]:
        """Answer a WebRTC offer with a new call, or with the session ``resume_token``
        continues. Raises OfferError, CapacityError, TooManyCalls, ResumeError,
        ClusterUnavailable."""
        if len(self.calls) + self._opening >= self.config.server.max_sessions:
            raise CapacityError(f"Sandra is serving {self.config.server.max_sessions} calls, the most she can")
        self._opening += 1
        try:
            session_id, token, snapshot = await self._admit(resume_token)
            if guest is not None:
                try:
                    admitted = await self.limits.acquire(f"calls:{guest.sub}", session_id, guest.max_calls)
                except BaseException:
                    await self.cluster.release(session_id)
                    raise
                if not admitted:
                    await self.cluster.release(session_id)
                    raise TooManyCalls(f"this guest link already has {guest.max_calls} call(s) in progress")
            pc = RTCPeerConnection(rtc_configuration(self.config, session_id))
            call = Call(session_id, pc, config=self.config, providers=self.providers, metrics=self.metrics,
                        on_closed=self._closed, guest=guest, detector=self.detector)
            if guest is not None:
                self._guests[session_id] = guest
            call.resume_token = token
            if snapshot is not None:
                clustering.restore(call, snapshot)
                # the session's ttl counts from its first call, not from this reconnect
                left_s = (await self.cluster.tokens()).verify(token, now=time.time()).expires_ms / 1000 - time.time()
                call.created_at -= max(0.0, self.config.server.session_ttl_s - left_s)
            call.on_change = self._changed
            try:
                call.attach()  # our handlers only post to the call's inbox: nothing of ours runs in here
                try:
                    if ice.loopback_only(self.config.webrtc.host_addresses):  # tests: nothing leaves 127/8
                        sdp = ice.keep_loopback_candidates(sdp)
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

    async def _admit(self, resume_token: str | None) -> tuple[str, str, clustering.Snapshot | None]:
        """The session id, its resume token and the conversation to continue (if any),
        counted in the cluster's max_sessions."""
        tokens = await self.cluster.tokens()
        snapshot = None
        if resume_token is None:
            session_id = secrets.token_urlsafe(12)
            token = tokens.issue(session_id, now=time.time())
        else:
            session_id = tokens.verify(resume_token, now=time.time()).session_id
            token = resume_token
            await self._take_over(session_id)
            snapshot = await self.cluster.conversations.load(session_id)
            if snapshot is None:
                raise clustering.ResumeError("that conversation has ended")
        try:
            await self.cluster.admit(session_id, self.config.server.max_sessions)
        except clustering.ClusterUnavailable:
            await self.cluster.release(session_id)
            raise
        return session_id, token, snapshot

    async def _take_over(self, session_id: str) -> None:
        """One live connection per session: close the old one, here or on another worker."""
        if not await self.end_call(session_id, "resumed elsewhere"):
            await self.cluster.take_over(session_id)

    def _changed(self, call: Call) -> None:
        self.cluster.changed(call.session_id, clustering.of_call(call), self.config.server.session_ttl_s)

    def _closed(self, call: Call) -> None:
        if self.calls.pop(call.session_id, None) is not None:
            self._ended_at[call.session_id] = time.monotonic()
        self.metrics.connections.set(len(self.calls))
        task = asyncio.get_running_loop().create_task(self._forget(call), name=f"{call.session_id}:forget")
        self._forgetting[call.session_id] = task
        task.add_done_callback(lambda t: self._forgetting.pop(call.session_id, None) if self._forgetting.get(
            call.session_id) is t else None)

    async def _forget(self, call: Call) -> None:
        """The call is over here: its conversation waits for a reconnect (or is dropped
        when it really ended), and its slots (the cluster's, the guest link's) are free."""
        guest = self._guests.pop(call.session_id, None)
        if guest is not None:
            try:
                await self.limits.release(f"calls:{guest.sub}", call.session_id)
            except clustering.ClusterUnavailable:  # the member expires with this worker's heartbeat
                log.warning("call %s: guest slot not released: Redis unavailable", call.session_id)
        if call.close_reason in clustering.FINAL_REASONS:
            await self.cluster.forget_conversation(call.session_id)
        else:
            await self.cluster.flush(call.session_id)
        await self.cluster.release(call.session_id)

    async def end_call(self, session_id: str, reason: str) -> bool:
        """End a call of this worker; True once it has ended and left the cluster."""
        call = self.calls.get(session_id)
        if call is None:
            return False
        call.close(reason)
        await call.wait_closed()
        forgetting = self._forgetting.get(session_id)
        if forgetting is not None:
            await asyncio.shield(forgetting)
        return True

    async def hang_up(self, session_id: str) -> bool:
        """End a call wherever it runs. Raises ClusterUnavailable if its worker can't be asked."""
        if await self.end_call(session_id, "hung up by the server API"):
            return True
        return await self.cluster.hang_up(session_id)

    def session_ids(self) -> list[str]:
        return list(self.calls)

    def prometheus(self) -> bytes:
        return self.metrics.prometheus()

    async def close_all(self) -> None:
        calls = list(self.calls.values())
        for call in calls:
            call.close("server shutting down")
        await asyncio.gather(*(c.wait_closed() for c in calls))
        await asyncio.gather(*list(self._forgetting.values()), return_exceptions=True)

    async def drain(self, timeout_s: float) -> None:
        """Refuse new calls; let each call in progress finish what Sandra is saying (up to
        ``timeout_s``), then end it with ``server_restarting``."""
        self.draining = True
        await asyncio.gather(*(self._drain_call(c, timeout_s) for c in list(self.calls.values())))
        await asyncio.gather(*list(self._forgetting.values()), return_exceptions=True)

    async def _drain_call(self, call: Call, timeout_s: float) -> None:
        await call.finish_sentence(timeout_s)
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
