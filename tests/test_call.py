"""A whole call through real aiortc peers, with the scripted providers."""

from __future__ import annotations

import asyncio
import time

from tests.support.audio import silence, speech


async def test_voice_turn(server, peer_factory):
    peer = await peer_factory(server)
    peer.send({"type": "call:start", "language": "en", "id": 1})
    started = await peer.wait_for("call:started")
    assert started["id"] == 1
    greeting = await peer.wait_for("response:done")
    assert greeting["interrupted"] is False and greeting["text"]

    mark = len(peer.events)
    peer.mic.play(speech("What time is check-in?") + silence(100))
    transcript = await peer.wait_for("transcript", lambda e: e["final"], after=mark)
    assert transcript["text"] == "What time is check-in?"
    done = await peer.wait_for("response:done", after=mark, timeout=20)
    assert "three in the afternoon" in done["text"]
    assert done["interrupted"] is False
    metrics = await peer.wait_for("metrics", lambda e: e["turn_id"] == done["turn_id"], after=mark)
    for key in ("eos_ms", "stt_ms", "llm_ttft_ms", "tts_ttfb_ms", "voice_to_voice_ms"):
        assert key in metrics, key
    visemes = [v for e in peer.events[mark:] if e["type"] == "viseme" for v in e["visemes"]]
    assert visemes and any(v["id"] != 0 for v in visemes)
    assert peer.loud_frames(since=transcript["_at"]) > 50  # seconds of reply audio arrived
    assert peer.states()[-4:] == ["user_speaking", "thinking", "speaking", "listening"]


async def _in_reply(peer, mark: int) -> dict:
    """Ask the question, wait until Sandra is audibly answering; returns the speaking state."""
    peer.mic.play(speech("What time is check-in?") + silence(100))
    speaking = await peer.wait_for("state", lambda e: e["state"] == "speaking", after=mark, timeout=20)
    await peer.wait_until(lambda: peer.loud_frames(since=speaking["_at"]) > 25, what="reply audio")
    return speaking


async def _greeted(peer) -> int:
    peer.send({"type": "call:start", "language": "en"})
    await peer.wait_for("response:done")
    return len(peer.events)


async def test_voice_barge_in_silences_sandra_and_truncates_history(server, peer_factory):
    peer = await peer_factory(server, fast_receive=True)  # no client playout buffer: time the server
    mark = await _greeted(peer)
    speaking = await _in_reply(peer, mark)
    turn_id = speaking["turn_id"]

    peer.mic.play(speech("No wait, stop please.") + silence(100))
    barge = await peer.wait_for("barge-in", after=mark)
    assert barge == {**barge, "turn_id": turn_id, "source": "voice"}
    quiet = await peer.wait_until(lambda: peer.quiet_since(barge["_at"] - 0.5), what="silence")
    assert quiet - barge["_at"] < 0.08  # silent right away: no queued or stale audio after it

    done = await peer.wait_for("response:done", lambda e: e["turn_id"] == turn_id, after=mark)
    assert done["interrupted"] is True
    full = "Check-in is from three in the afternoon. Anything else I can help with?"
    assert full.startswith(done["text"]) and len(done["text"]) < len(full)
    call = server.sessions.calls[peer.session_id]
    assistant = [m for m in call.history if m.role == "assistant"]
    assert assistant[-1].interrupted and assistant[-1].text == done["text"]
    metrics = await peer.wait_for("metrics", lambda e: "barge_in_ms" in e, after=mark)
    assert 0 < metrics["barge_in_ms"] < 500

    # The interruption is itself a turn, answered in full.
    answer = await peer.wait_for("response:done", lambda e: e["turn_id"] > turn_id, after=mark, timeout=20)
    assert answer["interrupted"] is False
    states = [(e["state"], e["turn_id"]) for e in peer.events[mark:] if e["type"] == "state"]
    new = turn_id + 1
    assert states == [
        ("user_speaking", turn_id), ("thinking", turn_id), ("speaking", turn_id),
        ("user_speaking", new), ("thinking", new), ("speaking", new), ("listening", new),
    ]


async def test_client_barge_in_is_acknowledged(server, peer_factory):
    peer = await peer_factory(server, fast_receive=True)
    mark = await _greeted(peer)
    speaking = await _in_reply(peer, mark)
    peer.send({"type": "barge-in", "id": "b1"})
    ack = await peer.wait_for("barge-in:ack", after=mark)
    assert ack["id"] == "b1" and ack["turn_id"] == speaking["turn_id"] and ack["interrupted"] is True
    barge = await peer.wait_for("barge-in", after=mark)
    assert barge["source"] == "client"
    quiet = await peer.wait_until(lambda: peer.quiet_since(ack["_at"] - 0.5), what="silence")
    assert quiet - ack["_at"] < 0.08
    done = await peer.wait_for("response:done", lambda e: e["turn_id"] == speaking["turn_id"], after=mark)
    assert done["interrupted"] is True
    # Nothing to interrupt now: still acknowledged.
    peer.send({"type": "barge-in", "id": "b2"})
    again = await peer.wait_for("barge-in:ack", lambda e: e["id"] == "b2", after=mark)
    assert again["interrupted"] is False


async def test_typed_message_turn(server, peer_factory):
    peer = await peer_factory(server)
    mark = await _greeted(peer)
    peer.send({"type": "message", "text": "Where can I park?"})
    done = await peer.wait_for("response:done", after=mark)
    assert done["text"].startswith("Check-in is from three") and done["interrupted"] is False
    deltas = "".join(e["text"] for e in peer.events[mark:] if e["type"] == "response:delta")
    assert deltas.strip() == done["text"]
    await peer.wait_for("state", lambda e: e["state"] == "listening", after=mark)
    assert peer.states()[-3:] == ["thinking", "speaking", "listening"]
    metrics = await peer.wait_for("metrics", lambda e: e["turn_id"] == done["turn_id"], after=mark)
    assert metrics["kind"] == "text" and "text_to_voice_ms" in metrics
    call = server.sessions.calls[peer.session_id]
    assert [m.role for m in call.history[-2:]] == ["user", "assistant"]
    assert call.history[-2].text == "Where can I park?"


async def test_bad_messages_get_errors_and_the_call_goes_on(server, peer_factory):
    peer = await peer_factory(server)
    bad = [
        ("not json", "bad_json"),
        ('["a list"]', "bad_json"),
        ('{"type": "teleport"}', "unknown_type"),
        ('{"type": "message", "text": 5}', "bad_field"),
        ('{"type": "message", "text": "   "}', "bad_field"),
        ('{"type": "call:start", "language": "klingon"}', "bad_field"),
        ('{"type": "message", "text": "' + "x" * 5000 + '"}', "too_large"),
    ]
    for raw, _ in bad:
        peer.send(raw)
    await peer.wait_until(lambda: len([e for e in peer.events if e["type"] == "error"]) == len(bad), what="errors")
    codes = [e["code"] for e in peer.events if e["type"] == "error"]
    assert codes == [code for _, code in bad]
    peer.send({"type": "ping", "t": 123, "id": 7})
    pong = await peer.wait_for("pong")
    assert pong["t"] == 123 and pong["id"] == 7 and pong["server_time"] > 0
    peer.send({"type": "call:start"})
    assert (await peer.wait_for("response:done"))["text"]


async def test_a_burst_of_visemes_arrives_intact(server_factory, peer_factory):
    long_reply = " ".join(["Sandra speaks a rather long sentence about the beach and the paella."] * 3)
    async with server_factory(scripted={"reply": long_reply}) as srv:
        peer = await peer_factory(srv)
        peer.send({"type": "message", "text": "Tell me everything"})
        done = await peer.wait_for("response:done", timeout=40)
        batches = [e for e in peer.events if e["type"] == "viseme" and e["turn_id"] == done["turn_id"]]
        visemes = [v for b in batches for v in b["visemes"]]
        assert len(visemes) > 150  # in batches of at most 24, each in one SCTP packet
        times = [v["t_ms"] for v in visemes]
        assert times == sorted(times)
        assert all(0 <= v["id"] <= 14 for v in visemes)
        assert all(b["playhead_ms"] <= b["visemes"][0]["t_ms"] + 1 for b in batches)


async def test_a_peer_without_datachannel_still_gets_a_voice_call(server, peer_factory):
    peer = await peer_factory(server, datachannel=False)
    peer.mic.play(silence(300) + speech("What time is check-in?") + silence(100))
    # No events can reach it: Sandra answers by voice alone.
    await peer.wait_until(lambda: peer.loud_frames() > 50, timeout=20, what="Sandra's voice")
    call = server.sessions.calls[peer.session_id]
    await peer.wait_until(lambda: len(call.history) == 2, what="the reply to finish")
    assert [m.role for m in call.history] == ["user", "assistant"]


async def test_hang_up_with_call_end(server, peer_factory):
    peer = await peer_factory(server)
    await _greeted(peer)
    call = server.sessions.calls[peer.session_id]
    peer.send({"type": "call:end"})
    ended = await peer.wait_for("call:ended")
    assert ended["reason"] == "caller hung up"
    await asyncio.wait_for(call.wait_closed(), 5)
    assert peer.session_id not in server.sessions.calls
    assert not call._tasks  # every task of the call finished
    assert call.pc.connectionState == "closed"


async def test_hang_up_with_delete(server, peer_factory):
    import aiohttp

    peer = await peer_factory(server)
    call = server.sessions.calls[peer.session_id]
    async with aiohttp.ClientSession() as http:
        async with http.delete(f"{server.url}/api/sessions/{peer.session_id}") as response:
            assert response.status == 200
        async with http.delete(f"{server.url}/api/sessions/{peer.session_id}") as response:
            assert response.status == 404
            assert (await response.json())["error"]["code"] == "no_such_session"
    await peer.wait_for("call:ended")
    assert call.pc.connectionState == "closed" and not call._tasks
    await peer.wait_until(lambda: peer.pc.connectionState in ("closed", "failed") or
                          peer.channel.readyState == "closed", timeout=10, what="the client to see the hang-up")


async def test_a_vanished_peer_is_cleaned_up(server_factory, peer_factory):
    async with server_factory(server={"heartbeat_timeout_s": 1.0}) as srv:
        peer = await peer_factory(srv)
        call = srv.sessions.calls[peer.session_id]
        started = time.monotonic()
        peer.mic.freeze()  # no audio, and no pings: the browser is gone
        await asyncio.wait_for(call.wait_closed(), 5)
        assert time.monotonic() - started < 3
        assert call.close_reason == "peer silent"
        assert peer.session_id not in srv.sessions.calls


async def test_sandra_does_not_interrupt_herself_on_her_own_echo(server_factory, peer_factory):
    # The caller's speaker returns Sandra's voice at -12 dB into the microphone.
    async with server_factory() as srv:
        peer = await peer_factory(srv, echo_gain=0.25)
        peer.send({"type": "message", "text": "Tell me about check-in"})
        done = await peer.wait_for("response:done", timeout=20)
        assert done["interrupted"] is False
        assert "barge-in" not in peer.types()
        assert srv.sessions.calls[peer.session_id].core.echo_suppressed > 20  # the echo was heard, and ignored
    # The same echo with the guard set to expect almost none: Sandra cuts herself off.
    async with server_factory(vad={"echo_return_db": -60.0, "echo_margin_db": 0.0}) as srv:
        peer = await peer_factory(srv, echo_gain=0.25)
        peer.send({"type": "message", "text": "Tell me about check-in"})
        barge = await peer.wait_for("barge-in", timeout=20)
        assert barge["source"] == "voice"


async def test_a_message_typed_over_a_reply_comes_after_it_in_the_history(server, peer_factory):
    peer = await peer_factory(server)
    peer.send({"type": "message", "text": "first question"})
    speaking = await peer.wait_for("state", lambda e: e["state"] == "speaking")
    await peer.wait_until(lambda: peer.loud_frames(since=speaking["_at"]) > 40, what="some of the reply")
    mark = len(peer.events)
    peer.send({"type": "message", "text": "second question"})
    cut = await peer.wait_for("response:done", lambda e: e["interrupted"], after=mark)
    await peer.wait_for("response:done", lambda e: not e["interrupted"], after=mark, timeout=20)
    history = server.sessions.calls[peer.session_id].history
    assert [(m.role, m.text, m.interrupted) for m in history] == [
        ("user", "first question", False),
        ("assistant", cut["text"], True),
        ("user", "second question", False),
        ("assistant", history[-1].text, False),
    ]
