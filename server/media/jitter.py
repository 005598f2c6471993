"""A low-latency receive jitter buffer for audio, swapped into aiortc's RTCRtpReceiver.

aiortc 1.16 gives each audio receiver ``JitterBuffer(capacity=16, prefetch=4)``: a frame
leaves only once four later frames have arrived (80 ms), and after one lost packet the
buffer waits for the missing packet until it overflows, then stays about 280 ms behind
for the rest of the call. That is a playout buffer for ears; Sandra feeds a VAD, which
needs audio now, not smooth.

:class:`AudioJitterBuffer` hands each Opus packet (one packet = one frame) to the decoder
the moment it arrives in order. When a packet is missing it waits for at most
``max_gap`` later packets (tolerating that much reordering), then skips the hole: the
delay after a loss is bounded by ``(max_gap - 1) * 20`` ms and never accumulates.

aiortc internals relied on (hence ``aiortc==1.16.0`` pinned in pyproject.toml):
``RTCRtpReceiver._RTCRtpReceiver__jitter_buffer`` (name-mangled attribute) and
``JitterBuffer.add(packet) -> (pli_flag, JitterFrame | None)`` called once per packet,
with ``packet._data`` holding the depacketised payload.
"""

from __future__ import annotations

from aiortc.jitterbuffer import JitterBuffer, JitterFrame
from aiortc.rtcrtpreceiver import RTCRtpReceiver
from aiortc.rtp import RtpPacket

_ATTR = "_RTCRtpReceiver__jitter_buffer"
_LATE_WINDOW = 100  # sequence numbers this far behind are late packets, not a new stream


class AudioJitterBuffer(JitterBuffer):
    def __init__(self, capacity: int = 16, max_gap: int = 2) -> None:
        super().__init__(capacity=capacity, prefetch=0)
        self._max_gap = max(1, max_gap)
        self._waiting = 0
        self.skipped = 0  # packets given up for lost
        self.late = 0  # packets that arrived after their slot was skipped

    def add(self, packet: RtpPacket) -> tuple[bool, JitterFrame | None]:
        seq = packet.sequence_number
        if self._origin is None:
            self._origin = seq
        delta = (seq - self._origin) & 0xFFFF
        if delta >= 0x8000:  # behind the origin
            if (self._origin - seq) & 0xFFFF < _LATE_WINDOW:
                self.late += 1
                return False, None
            self._restart(seq)  # the sender restarted its sequence
            delta = 0
        elif delta >= self._capacity:  # far ahead: everything waiting is stale
            self.skipped += self._waiting
            self._restart(seq)
            delta = 0

        slot = seq % self._capacity
        if self._packets[slot] is None:
            self._waiting += 1
        self._packets[slot] = packet

        if self._packets[self._origin % self._capacity] is None:
            if self._waiting < self._max_gap:
                return False, None
            while self._packets[self._origin % self._capacity] is None:  # skip the hole
                self._origin = (self._origin + 1) & 0xFFFF
                self.skipped += 1

        slot = self._origin % self._capacity
        ready = self._packets[slot]
        assert ready is not None
        self._packets[slot] = None
        self._waiting -= 1
        self._origin = (self._origin + 1) & 0xFFFF
        return False, JitterFrame(data=ready._data, timestamp=ready.timestamp)  # type: ignore[attr-defined]

    def _restart(self, seq: int) -> None:
        self._packets = [None] * self._capacity
        self._waiting = 0
        self._origin = seq


def install(receiver: RTCRtpReceiver, max_gap: int = 2) -> AudioJitterBuffer:
    """Replace ``receiver``'s audio jitter buffer; call before media flows."""
    if not isinstance(getattr(receiver, _ATTR, None), JitterBuffer):
        raise RuntimeError("aiortc's RTCRtpReceiver changed: no jitter buffer to replace (pin aiortc==1.16.0)")
    buffer = AudioJitterBuffer(max_gap=max_gap)
    setattr(receiver, _ATTR, buffer)
    return buffer
