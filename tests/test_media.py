"""Media units: outbound pacing and flush, resampling, VAD framing, the jitter buffer."""

from __future__ import annotations

import asyncio
import time
from fractions import Fraction

import av
import numpy as np
import pytest
from aiortc.rtp import RtpPacket

from server.media.inbound import VoiceDetector
from server.media.jitter import AudioJitterBuffer
from server.media.outbound import OutboundAudio, Resampler
from tests.support.audio import speech


def tone(ms: int, rate: int = 48000, amplitude: int = 8000) -> bytes:
    t = np.arange(rate * ms // 1000) / rate
    return (np.sin(2 * np.pi * 440 * t) * amplitude).astype(np.int16).tobytes()


async def test_outbound_paces_frames_in_real_time_with_running_pts():
    track = OutboundAudio(lead_ms=100)
    started = time.monotonic()
    frames = []
    for _ in range(15):
        f = await track.recv()  # a frame is valid until the next recv (as aiortc's sender uses it)
        frames.append((f.pts, f.samples, f.sample_rate, f.time_base, f.to_ndarray().any()))
    elapsed = time.monotonic() - started
    assert 0.26 <= elapsed < 0.45  # 15 frames of 20 ms, the first one immediately
    assert [pts for pts, *_ in frames] == [i * 960 for i in range(15)]
    assert all(f[1:] == (960, 48000, Fraction(1, 48000), False) for f in frames)  # idle: silence
    track.stop()


async def test_outbound_backpressure_and_flush_is_immediate():
    track = OutboundAudio(lead_ms=100)
    track.begin_reply(1)
    writer = asyncio.ensure_future(track.write(tone(1000)))
    await asyncio.sleep(0.01)
    assert not writer.done()  # held back: only lead_ms may wait in the queue
    assert track.queued_ms == pytest.approx(100)
    first = await track.recv()
    assert np.abs(first.to_ndarray()).max() > 1000
    assert track.reply_first_sent_at is not None
    dropped = track.flush()
    writer.cancel()  # in the same step, as a barge-in does: the woken writer never writes again
    assert dropped > 0
    await asyncio.sleep(0)
    after = await track.recv()
    assert not after.to_ndarray().any()  # the very next frame after a flush is silence
    assert track.silent_after_flush_at is not None
    assert track.reply_sent == 960  # one frame of the reply was heard, the rest dropped
    assert writer.cancelled() and track.queued_ms == 0  # the cancelled writer added nothing
    track.begin_reply(2)
    await track.write(tone(20))
    assert track.queued_ms == pytest.approx(20)
    track.stop()


async def test_outbound_reanchors_after_a_stall_instead_of_bursting():
    now = [100.0]
    track = OutboundAudio(clock=lambda: now[0])
    await track.recv()
    now[0] += 1.0  # the event loop was blocked for a second
    await track.recv()
    assert track.stalls == 1
    started = time.monotonic()
    now[0] += 0.001
    # Next frame is due 20 ms after the re-anchored one, not in the past.
    task = asyncio.ensure_future(track.recv())
    await asyncio.sleep(0.005)
    assert not task.done()
    now[0] += 0.02
    await task
    assert time.monotonic() - started < 0.1
    track.stop()


async def test_outbound_tracks_how_much_of_a_reply_was_played():
    track = OutboundAudio(lead_ms=200)
    track.begin_reply(7)
    await track.write(tone(50))
    for _ in range(3):
        await track.recv()
    assert track.reply_written == 2400 and track.reply_sent == 2400
    await asyncio.wait_for(track.drained(), 1)
    track.stop()


@pytest.mark.parametrize("rate", [8000, 16000, 22050, 24000, 44100, 48000])
def test_resampler_converts_any_rate_to_48k(rate):
    resampler = Resampler(48000)
    pcm = tone(500, rate)
    out = b"".join(resampler.convert(pcm[i : i + 2000], rate) for i in range(0, len(pcm), 2000)) + resampler.flush()
    assert len(out) // 2 == pytest.approx(24000, abs=64)
    samples = np.frombuffer(out, dtype=np.int16)
    assert np.abs(samples[2000:-2000]).max() > 6000  # the tone survives


def test_resampler_passes_empty_audio():
    assert Resampler(48000).convert(b"", 24000) == b""


def test_voice_detector_takes_browser_frames_stereo_48k():
    pcm = np.frombuffer(speech("Hello there, good morning."), dtype=np.int16)
    detector = VoiceDetector(aggressiveness=2)
    results = [r for frame in _stereo_frames(pcm) for r in detector.frames(frame)]
    assert len(results) == len(pcm) // 960  # one verdict per 20 ms frame, no frame held back
    stt = b"".join(p for p, _, _ in results)
    assert abs(len(stt) // 2 - len(results) * 320) < 40  # all of it, at 16 kHz
    voiced = sum(1 for _, v, _ in results if v)
    assert voiced > len(results) * 0.4
    silent = detector.frames(_silent_stereo())
    assert not any(v for _, v, _ in silent)


def _stereo_frames(pcm48: np.ndarray) -> list[av.AudioFrame]:
    frames = []
    for i in range(0, len(pcm48) - 960 + 1, 960):
        frame = av.AudioFrame.from_ndarray(np.repeat(pcm48[i : i + 960], 2).reshape(1, -1), format="s16",
                                           layout="stereo")
        frame.sample_rate = 48000
        frame.pts = i
        frame.time_base = Fraction(1, 48000)
        frames.append(frame)
    return frames


def test_energy_gate_trims_the_vad_hangover():
    from server.providers.scripted import synthetic_voice
    from tests.support.audio import resample

    voice = np.frombuffer(resample(synthetic_voice("x" * 16, 24000).tobytes(), 24000), dtype=np.int16)
    noise = (np.random.default_rng(1).standard_normal(48000) * 20).astype(np.int16)  # -64 dBFS room noise
    pcm = np.concatenate([noise[:24000], voice + noise[: len(voice)], noise])
    speech_end = (24000 + len(voice)) // 960  # index of the first 20 ms frame after the voice

    def last_voiced(margin_db: float) -> int:
        detector = VoiceDetector(aggressiveness=2, energy_margin_db=margin_db)
        verdicts = [v for frame in _stereo_frames(pcm) for _, v, _ in detector.frames(frame)]
        return max(i for i, v in enumerate(verdicts) if v)

    assert last_voiced(0) >= speech_end + 3  # webrtcvad alone: its hangover runs on
    assert speech_end - 2 <= last_voiced(10.0) <= speech_end  # gated: ends with the voice


def _silent_stereo() -> av.AudioFrame:
    frame = av.AudioFrame.from_ndarray(np.zeros((1, 1920), dtype=np.int16), format="s16", layout="stereo")
    frame.sample_rate = 48000
    frame.pts = 10_000_000
    frame.time_base = Fraction(1, 48000)
    return frame


def _packet(seq: int) -> RtpPacket:
    packet = RtpPacket(sequence_number=seq & 0xFFFF, timestamp=(seq * 960) & 0xFFFFFFFF)
    packet._data = seq.to_bytes(4, "big")  # type: ignore[attr-defined]
    return packet


def _feed(buffer: AudioJitterBuffer, seqs: list[int]) -> list[int | None]:
    out = []
    for seq in seqs:
        _, frame = buffer.add(_packet(seq))
        out.append(None if frame is None else int.from_bytes(frame.data, "big"))
    return out


def test_jitter_buffer_hands_over_each_packet_at_once():
    assert _feed(AudioJitterBuffer(), list(range(100, 120))) == list(range(100, 120))


def test_jitter_buffer_skips_a_loss_and_does_not_stay_behind():
    buffer = AudioJitterBuffer(max_gap=2)
    # 103 is lost: 104 waits for one more packet, then the hole is skipped.
    out = _feed(buffer, [100, 101, 102, 104, 105, 106, 107, 108])
    assert out == [100, 101, 102, None, 104, 105, 106, 107]
    assert buffer.skipped == 1
    # A second loss does not add delay on top of the first.
    out = _feed(buffer, [110, 111, 112])
    assert out == [108, 110, 111]
    assert _feed(buffer, [103]) == [None] and buffer.late == 1  # too late: dropped


def test_jitter_buffer_with_gap_one_never_waits():
    buffer = AudioJitterBuffer(max_gap=1)
    assert _feed(buffer, [1, 2, 4, 5, 9, 10]) == [1, 2, 4, 5, 9, 10]


def test_jitter_buffer_tolerates_reordering_and_wraparound():
    assert _feed(AudioJitterBuffer(max_gap=2), [65534, 0, 65535, 1, 2]) == [65534, None, 65535, 0, 1]
    buffer = AudioJitterBuffer()
    _feed(buffer, [10, 11])
    assert _feed(buffer, [5000, 5001]) == [5000, 5001]  # a jump far ahead: start over there


def test_a_loopback_server_drops_the_offers_other_candidates():
    from server.media.ice import keep_loopback_candidates, loopback_only

    sdp = (
        "v=0\r\nm=audio 9 UDP/TLS/RTP/SAVPF 111\r\n"
        "a=candidate:1 1 udp 2122260223 192.0.2.2 50000 typ host\r\n"
        "a=candidate:2 1 udp 2122260223 127.0.0.1 50001 typ host\r\n"
        "a=candidate:3 1 udp 2122260223 9f1c.local 50002 typ host\r\n"
        "a=candidate:4 1 udp 41885439 127.0.0.1 50003 typ relay raddr 0.0.0.0 rport 0\r\n"
        "a=end-of-candidates\r\n"
    )
    kept = keep_loopback_candidates(sdp)
    assert [line.split()[4] for line in kept.splitlines() if line.startswith("a=candidate:")] == ["127.0.0.1"] * 2
    assert "a=end-of-candidates" in kept and kept.startswith("v=0\r\nm=audio")
    assert loopback_only(["127.0.0.1", "::1"]) and not loopback_only([]) and not loopback_only(["127.0.0.1", "10.1.1.1"])
