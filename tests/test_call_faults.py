"""Calls survive their own defects: real aiortc peers, faults injected by the scripted providers."""

from __future__ import annotations

import asyncio
import time

import aiohttp
from aiortc import RTCConfiguration, RTCPeerConnection

from tests.support.audio import silence, speech

APOLOGY = "Sorry, I'm having a technical problem right now."


async def _ask(peer, text: str, mid: str) -> tuple[dict, dict]:
    """Type ``text``; returns its message:ack and the turn's response:done."""
    mark = len(peer.events)
    peer.send({"type": "message", "text": text, "id": mid})
    ack = await peer.wait_for("message:ack", lambda e: e.get("id") == mid, after=mark)
    done = await peer.wait_for("response:done", lambda e: e["turn_id"] == ack["turn_id"], after=mark, timeout=20)
    return ack, done


async def test_a_defect_in_a_turn_is_an_apology_and_the_next_turn_works(server_factory, peer_factory):
    async with server_factory(scripted={"fault": "bug", "fault_turns": [2]}) as srv:
        peer = await peer_factory(srv)
        peer.send({"type": "call:start", "language": "en"})
        await peer.wait_for("response:done")
        _, first = await _ask(peer, "Hello", "t1")
        assert first["text"].startswith("Check-in is from three")

        mark = len(peer.events)  # turn 2, spoken: the LLM raises RuntimeError after its first word
        peer.mic.play(speech("What time is check-in?") + silence(100))
        error = await peer.wait_for("error", after=mark, timeout=20)
        assert error["code"] == "internal_error" and "RuntimeError" in error["message"]
        done = await peer.wait_for("response:done", after=mark, timeout=20)
        assert APOLOGY in done["text"] and done["interrupted"] is False
        await peer.wait_for("state", lambda e: e["state"] == "listening" and e["turn_id"] == done["turn_id"], after=mark)

        _, third = await _ask(peer, "And check-out?", "t3")  # turn 3 is answered as usual
        assert third["text"] == "Check-in is from three in the afternoon. Anything else I can help with?"
        call = srv.sessions.calls[peer.session_id]
        assert 'sandra_failures_total{part="turn"} 1.0' in await _metrics_text(srv.url)
        assert [m.text for m in call.history if m.role == "user"][-1] == "And check-out?"


async def test_a_provider_error_is_counted_by_role_and_vendor(server_factory, peer_factory):
    async with server_factory(scripted={"fault": "tts", "fault_turns": [1]}) as srv:
        peer = await peer_factory(srv)
        ack, done = await _ask(peer, "Hello", "t1")
        error = next(e for e in peer.events if e["type"] == "error")
        assert error["code"] == "provider_error"
        assert APOLOGY in done["text"]  # her voice failed too: the apology came in writing
        text = (await _metrics_text(srv.url))
        assert 'sandra_provider_errors_total{provider="scripted",role="tts"}' in text


async def test_a_failing_message_handler_answers_error_and_the_call_goes_on(server_factory, peer_factory):
    async with server_factory(scripted={"fault": "handler", "fault_turns": [1]}) as srv:
        peer = await peer_factory(srv)
        peer.send({"type": "message", "text": "Hello", "id": "m1"})
        error = await peer.wait_for("error")
        assert error["code"] == "internal_error" and error["id"] == "m1"
        peer.send({"type": "ping", "t": 1, "id": "p"})
        assert (await peer.wait_for("pong"))["id"] == "p"
        ack, done = await _ask(peer, "Hello again", "m2")  # the transport is alive, the next message answered
        assert done["text"].startswith("Check-in")
        assert 'sandra_failures_total{part="message"} 1.0' in await _metrics_text(srv.url)


async def test_message_ack_names_the_turn_that_answers_it(server, peer_factory):
    peer = await peer_factory(server)
    mark = len(peer.events)
    ack, done = await _ask(peer, "Where can I park?", "q1")
    assert ack == {**ack, "type": "message:ack", "id": "q1"}
    turn_events = [e for e in peer.events[mark:] if e.get("turn_id") == ack["turn_id"]]
    assert turn_events[0]["type"] == "message:ack"  # before any of the reply's events
    assert {"response:delta", "response:done", "state"} <= {e["type"] for e in turn_events}


async def test_an_abandoned_offer_frees_its_slot(server_factory):
    async with server_factory(server={"max_sessions": 1, "connect_timeout_s": 1.0}) as srv:
        pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
        pc.createDataChannel("control")
        pc.addTransceiver("audio")
        await pc.setLocalDescription(await pc.createOffer())
        body = {"sdp": pc.localDescription.sdp, "type": "offer"}
        async with aiohttp.ClientSession() as http:
            async with http.post(f"{srv.url}/api/offer", json=body) as r:
                assert r.status == 200  # ... and the answer is never applied: the peer never connects
            async with http.post(f"{srv.url}/api/offer", json=body) as r:
                assert r.status == 503
            started = time.monotonic()
            while len(srv.sessions) and time.monotonic() - started < 5:
                await asyncio.sleep(0.1)
            assert len(srv.sessions) == 0
            assert time.monotonic() - started < 2.5  # connect_timeout_s + the watchdog's half second
            async with http.post(f"{srv.url}/api/offer", json=body) as r:
                assert r.status == 200
        await pc.close()


async def _metrics_text(url: str) -> str:
    async with aiohttp.ClientSession() as http:
        async with http.get(f"{url}/metrics") as r:
            return await r.text()
