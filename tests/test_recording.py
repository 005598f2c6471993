"""Recorded calls: the stereo Ogg/Opus and the JSON transcript, through real aiortc peers."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import os
import time
from pathlib import Path

import av
import numpy as np

from server.recording import announce, sweep
from server.recording.timeline import StereoTimeline
from tests.support.audio import silence, speech

RATE = 48000


def decode(path: Path) -> np.ndarray:
    """The Ogg as float (2, samples) at 48 kHz."""
    with av.open(str(path)) as container:
        stream = container.streams.audio[0]
        assert stream.codec_context.name == "opus" and stream.codec_context.channels == 2
        chunks = [f.to_ndarray().reshape(2, -1) for f in container.decode(stream)]
    return np.concatenate(chunks, axis=1)


def level(channel: np.ndarray, start_ms: float, end_ms: float) -> float:
    a, b = int(start_ms * RATE / 1000), int(end_ms * RATE / 1000)
    piece = channel[a:b]
    return float(np.sqrt(np.mean(piece * piece))) if piece.size else 0.0


def only(folder: Path, suffix: str) -> Path:
    found = list(folder.glob(f"*/*{suffix}"))
    assert len(found) == 1, found
    return found[0]


async def test_recorded_call_voice_typed_and_barge_in(server_factory, peer_factory, tmp_path):
    reply = {"reply": "Check-in is from three in the afternoon. Anything else?"}  # about 3 s
    async with server_factory(recording={"enabled": True, "dir": str(tmp_path)}, scripted=reply) as srv:
        peer = await peer_factory(srv)
        connected_at = time.monotonic()
        peer.send({"type": "call:start", "language": "en"})
        greeting = await peer.wait_for("response:done")
        assert "this call is recorded" in greeting["text"]

        mark = len(peer.events)  # a voice turn
        peer.mic.play(speech("What time is check-in?") + silence(100))
        voice_done = await peer.wait_for("response:done", after=mark, timeout=20)
        assert voice_done["interrupted"] is False
        # While the call runs, the file on disk already plays up to within 2 s of now.
        [growing] = list(tmp_path.glob(f"*/{peer.session_id}.ogg"))
        elapsed = time.monotonic() - connected_at
        playable = decode(growing).shape[1] / RATE
        assert elapsed - 2.0 < playable <= elapsed, (playable, elapsed)

        mark = len(peer.events)  # a typed turn, interrupted by the guest's voice
        peer.send({"type": "message", "text": "Is there parking?"})
        speaking = await peer.wait_for("state", lambda e: e["state"] == "speaking", after=mark)
        await peer.wait_until(lambda: peer.loud_frames(since=speaking["_at"]) > 40, what="reply audio")
        peer.mic.play(speech("Sorry, one more thing.") + silence(100))
        await peer.wait_for("barge-in", after=mark)
        cut = await peer.wait_for("response:done", lambda e: e["interrupted"], after=mark)
        await peer.wait_for("response:done", lambda e: e["turn_id"] > cut["turn_id"], after=mark, timeout=20)
        await peer.wait_for("metrics", lambda e: e["turn_id"] > cut["turn_id"] and "kind" in e, after=mark)

        peer.send({"type": "call:end"})
        await peer.wait_for("call:ended")
        ended_at = time.monotonic()

    day = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d")
    ogg, doc_path = tmp_path / day / f"{peer.session_id}.ogg", tmp_path / day / f"{peer.session_id}.json"
    doc = json.loads(doc_path.read_text())
    assert doc["session_id"] == peer.session_id and doc["language"] == "en"
    assert doc["close_reason"] == "caller hung up" and doc["ended_at"] > doc["started_at"]

    # The JSON's turns are the datachannel transcript.
    said = [(e["turn_id"], e["text"]) for e in peer.events if e["type"] == "response:done"]
    heard = [(e["turn_id"], e["text"]) for e in peer.events if e["type"] == "transcript" and e["final"]]
    turns = doc["turns"]
    assert [(t["turn_id"], t["text"]) for t in turns if t["who"] == "sandra"] == said
    assert [(t["turn_id"], t["text"]) for t in turns if t["who"] == "guest" and t["kind"] == "voice"] == heard
    typed = [t for t in turns if t["who"] == "guest" and t["kind"] == "text"]
    assert [t["text"] for t in typed] == ["Is there parking?"]
    assert [t["interrupted"] for t in turns if t["who"] == "sandra"] == [False, False, True, False]
    assert [t["kind"] for t in turns if t["who"] == "sandra"] == ["greeting", "voice", "text", "voice"]
    assert "voice_to_voice_ms" in turns[2]["metrics"] and "barge_in_ms" in [t for t in turns if t["interrupted"]][0]["metrics"]
    starts = [t["start_ms"] for t in turns]
    assert starts == sorted(starts) and all(t["end_ms"] >= t["start_ms"] for t in turns)

    # The Ogg: two channels, as long as the call, the guest on the left, Sandra on the right.
    audio = decode(ogg)
    seconds = audio.shape[1] / RATE
    assert abs(seconds - doc["duration_s"]) < 0.1
    assert abs(seconds - (ended_at - connected_at)) < 1.0, (seconds, ended_at - connected_at)
    left, right = audio[0], audio[1]
    loud, quiet = 0.02, 0.003
    for t in turns:
        if t["who"] == "guest" and t["kind"] == "voice":
            assert level(left, t["start_ms"], t["end_ms"]) > loud, t  # the guest's words, where the JSON says
        if t["who"] == "sandra":
            assert level(right, t["start_ms"], t["end_ms"]) > loud, t
    first_guest = next(t for t in turns if t["who"] == "guest")
    greeting_turn = turns[0]
    assert level(left, greeting_turn["start_ms"], greeting_turn["end_ms"]) < quiet  # nobody spoke over the greeting
    assert level(right, first_guest["start_ms"], first_guest["end_ms"]) < quiet  # Sandra silent while the guest asked
    assert level(left, first_guest["start_ms"] - 600, first_guest["start_ms"] - 200) < quiet  # speech starts at start_ms
    assert level(left, first_guest["start_ms"], first_guest["start_ms"] + 200) > loud


async def test_shutdown_with_a_call_in_progress_leaves_complete_files(server_factory, peer_factory, tmp_path):
    async with server_factory(recording={"enabled": True, "dir": str(tmp_path)}) as srv:
        peer = await peer_factory(srv)
        peer.send({"type": "call:start", "language": "es"})
        await peer.wait_for("state", lambda e: e["state"] == "speaking")
        await peer.wait_until(lambda: peer.loud_frames() > 30, what="the greeting")
        # leaving the block runs the app's cleanup: the server drains with Sandra mid-sentence
    doc = json.loads(only(tmp_path, ".json").read_text())
    assert doc["close_reason"] == "server shutting down" and doc["language"] == "es"
    assert doc["turns"][0]["who"] == "sandra" and doc["turns"][0]["interrupted"] is True
    audio = decode(only(tmp_path, ".ogg"))
    assert abs(audio.shape[1] / RATE - doc["duration_s"]) < 0.1
    assert level(audio[1], doc["turns"][0]["start_ms"], doc["turns"][0]["end_ms"]) > 0.02


async def test_recording_off_writes_nothing(server_factory, peer_factory, tmp_path):
    async with server_factory(recording={"enabled": False, "dir": str(tmp_path)}) as srv:
        peer = await peer_factory(srv)
        peer.send({"type": "call:start", "language": "en"})
        greeting = await peer.wait_for("response:delta")
        assert "recorded" not in greeting["text"]
        call = srv.sessions.calls[peer.session_id]
        assert call.recorder.recording is False and call.outbound.tap is None
        await peer.wait_until(lambda: peer.loud_frames() > 10, what="the greeting")
    assert list(tmp_path.iterdir()) == []
    assert call.recorder.log.records[0].who == "sandra"  # the live view's transcript, in memory only


def test_announce_both_languages():
    assert announce("Hi, I'm Sandra. How can I help?", "en") == (
        "Hi, I'm Sandra. Just so you know, this call is recorded. How can I help?")
    assert announce("¡Hola! Soy Sandra.", "es") == "¡Hola! Te aviso de que esta llamada se graba. Soy Sandra."


def test_timeline_places_frames_on_the_clock():
    t = StereoTimeline(start=10.0, rate=1000)  # 20 samples a frame, 100 of slack
    t.add(0, np.full(20, 100, np.int16).tobytes(), 10.0)
    t.add(1, np.full(20, 200, np.int16).tobytes(), 10.15)  # Sandra 150 ms later: silence before her
    t.add(0, np.full(20, 300, np.int16).tobytes(), 10.07)  # 50 ms late (jitter): right after the first
    out = np.frombuffer(t.take(10.3), np.int16).reshape(-1, 2)
    assert out.shape == (300, 2)
    assert (out[:20, 0] == 100).all() and (out[20:40, 0] == 300).all() and (out[40:, 0] == 0).all()
    assert (out[:150, 1] == 0).all() and (out[150:170, 1] == 200).all() and (out[170:, 1] == 0).all()
    t.add(0, np.full(20, 5, np.int16).tobytes(), 10.25)  # too late: its place was written
    assert t.dropped == 20
    for i in range(8):  # a burst 160 ms ahead of the clock: the frames beyond the slack are skipped
        t.add(1, np.full(20, 7, np.int16).tobytes(), 10.3)
    assert t.dropped == 20 + 2 * 20  # six frames fit (up to 100 ms ahead), two do not
    assert len(t.finish(10.35)) == 120 * 4  # all that is pending, though it runs past 10.35


def test_retention_deletes_old_files(tmp_path):
    now = dt.datetime(2026, 12, 1, 12, tzinfo=dt.UTC)
    old_day, new_day = tmp_path / "2026-10-01", tmp_path / "2026-11-30"
    old_day.mkdir()
    new_day.mkdir()
    old = [old_day / "a.ogg", old_day / "a.json"]
    new = [new_day / "b.ogg", new_day / "b.json", new_day / "notes.txt"]
    for p in old + new:
        p.write_text("x")
    stamp = (now - dt.timedelta(days=31)).timestamp()
    for p in old:
        os.utime(p, (stamp, stamp))
    assert sorted(sweep(tmp_path, 30, now)) == sorted(old)
    assert not old_day.exists() and all(p.exists() for p in new)


async def _ended_by_the_server(server_factory, peer_factory, tmp_path, server_section, reason, vanish):  # type: ignore[no-untyped-def]
    async with server_factory(server=server_section, recording={"enabled": True, "dir": str(tmp_path)}) as srv:
        peer = await peer_factory(srv)
        peer.send({"type": "call:start", "language": "en"})
        await peer.wait_until(lambda: peer.loud_frames() > 30, what="the greeting")
        call = srv.sessions.calls[peer.session_id]
        if vanish:
            peer.mic.freeze()  # the browser vanished: no audio, no pings
        await asyncio.wait_for(call.wait_closed(), 10)
        assert call.close_reason == reason
        doc = json.loads(only(tmp_path, ".json").read_text())
        audio = decode(only(tmp_path, ".ogg"))
    assert doc["close_reason"] == reason and [t["who"] for t in doc["turns"]] == ["sandra"]
    assert abs(audio.shape[1] / RATE - doc["duration_s"]) < 0.1
    assert level(audio[1], doc["turns"][0]["start_ms"], doc["turns"][0]["end_ms"]) > 0.02


async def test_a_dead_peer_leaves_complete_files(server_factory, peer_factory, tmp_path):
    await _ended_by_the_server(server_factory, peer_factory, tmp_path, {"heartbeat_timeout_s": 1}, "peer silent", True)


async def test_the_session_ttl_leaves_complete_files(server_factory, peer_factory, tmp_path):
    await _ended_by_the_server(server_factory, peer_factory, tmp_path, {"session_ttl_s": 3}, "session ttl", False)


def test_call_log_builds_the_transcript_from_the_server_events():
    from server.recording import CallLog, TurnRecord

    log = CallLog("s1")
    wall = 1_000_000.0  # ms at monotonic 0
    for at, ev in [
        (0.1, {"type": "call:started", "language": "es"}),
        (0.2, {"type": "state", "state": "thinking", "turn_id": 1}),
        (0.3, {"type": "state", "state": "speaking", "turn_id": 1}),
        (2.0, {"type": "response:done", "turn_id": 1, "text": "Hola.", "interrupted": False}),
        (2.0, {"type": "metrics", "turn_id": 1, "kind": "greeting", "interrupted": False, "tts_ttfb_ms": 3.0}),
        (3.06, {"type": "vad", "speaking": True, "onset_ms": wall + 3000}),  # first voiced frame at 3.0
        (3.06, {"type": "state", "state": "user_speaking", "turn_id": 2}),
        (4.5, {"type": "vad", "speaking": False}),
        (4.5, {"type": "state", "state": "thinking", "turn_id": 2}),
        (4.6, {"type": "transcript", "turn_id": 2, "text": "¿Y el wifi?", "final": True}),
        (4.7, {"type": "tool", "name": "notify_host", "input": {"message": "wifi"}}),
        (5.0, {"type": "state", "state": "speaking", "turn_id": 2}),
        (5.5, {"type": "vad", "speaking": True, "onset_ms": wall + 5500}),  # a blip over her: no new turn
        (5.6, {"type": "vad", "speaking": False}),
        (6.0, {"type": "barge-in", "turn_id": 2, "source": "client"}),
        (6.0, {"type": "response:done", "turn_id": 2, "text": "La clave", "interrupted": True}),
        (6.0, {"type": "metrics", "turn_id": 2, "kind": "voice", "interrupted": True, "eos_ms": 500.0,
               "voice_to_voice_ms": 1000.0}),
        (6.1, {"type": "metrics", "turn_id": 2, "barge_in_ms": 20.0}),
    ]:
        log.event(ev, at, wall + at * 1000)
    log.turn(TurnRecord(3, "guest", "text", "gracias", 6.5, 6.5))
    assert log.language == "es" and log.last_metrics["turn_id"] == 2
    turns = log.turns(origin=0.1)
    assert [(t["turn_id"], t["who"], t["kind"], t["text"], t["start_ms"], t["end_ms"], t["interrupted"]) for t in turns] == [
        (1, "sandra", "greeting", "Hola.", 200.0, 1900.0, False),
        (2, "guest", "voice", "¿Y el wifi?", 2900.0, 3900.0, False),  # onset 3.0, last voiced 4.5 - 0.5
        (2, "sandra", "voice", "La clave", 4900.0, 5900.0, True),
        (3, "guest", "text", "gracias", 6400.0, 6400.0, False),
    ]
    assert turns[2]["metrics"] == {"eos_ms": 500.0, "voice_to_voice_ms": 1000.0, "barge_in_ms": 20.0}
    assert log.tools_json(origin=0.1) == [{"name": "notify_host", "input": {"message": "wifi"}, "at_ms": 4600.0}]


def test_the_recording_benchmark_runs(tmp_path):
    import subprocess
    import sys

    env = {**os.environ, "SANDRA_BENCH_RESULTS": str(tmp_path)}
    done = subprocess.run([sys.executable, "-m", "bench.recording", "--minutes", "0.1", "--calls", "1", "--server-calls", "0"],
                          cwd=Path(__file__).resolve().parent.parent, capture_output=True, text=True, timeout=120, env=env)
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads((tmp_path / "recording.json").read_text())
    assert result["benchmark"] == "recording" and result["kbytes_per_call_minute"] > 50 and result["frames_dropped"] == 0
