"""The HTTP surface: offers good and bad, capacity, health and metrics."""

from __future__ import annotations

import aiohttp
from aiortc import RTCConfiguration, RTCPeerConnection

from server.app import MAX_SDP_BYTES


async def _post(url: str, body: bytes | str) -> tuple[int, dict]:
    async with aiohttp.ClientSession() as http:
        async with http.post(f"{url}/api/offer", data=body, headers={"Content-Type": "application/json"}) as r:
            return r.status, await r.json()


async def _datachannel_only_offer() -> str:
    pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    pc.createDataChannel("control")
    await pc.setLocalDescription(await pc.createOffer())
    sdp = pc.localDescription.sdp
    await pc.close()
    return sdp


async def test_bad_offers_get_json_4xx(server):
    cases = [
        (b"{not json", "bad_json"),
        (b'["offer"]', "bad_json"),
        (b'{"type": "offer"}', "bad_offer"),
        (b'{"type": "answer", "sdp": "v=0"}', "bad_offer"),
        (b'{"type": "offer", "sdp": 42}', "bad_offer"),
        (b'{"type": "offer", "sdp": "v=0 garbage"}', "bad_offer"),
        (b'{"type": "offer", "sdp": "v=0\\r\\no=garbage"}', "no_audio"),
        ('{"type": "offer", "sdp": "' + "a" * (MAX_SDP_BYTES + 10) + '"}', "sdp_too_large"),
        (b"\xff\xfe", "bad_json"),
    ]
    for body, code in cases:
        status, answer = await _post(server.url, body)
        assert status == 400, (body[:40], answer)
        assert answer["error"]["code"] == code
        assert "Traceback" not in answer["error"]["message"]
    import json

    status, answer = await _post(server.url, json.dumps({"type": "offer", "sdp": await _datachannel_only_offer()}))
    assert status == 400 and answer["error"]["code"] == "no_audio"
    assert len(server.sessions) == 0  # nothing left behind by the failures


async def test_max_sessions(server_factory, peer_factory):
    async with server_factory(server={"max_sessions": 1}) as srv:
        await peer_factory(srv)
        status, answer = await _post(srv.url, '{"type": "offer", "sdp": "v=0"}')
        assert status == 503 and answer["error"]["code"] == "at_capacity"


async def test_health_and_metrics(server, peer_factory):
    peer = await peer_factory(server)
    peer.send({"type": "auth", "token": "anything", "id": "a"})
    ok = await peer.wait_for("auth:ok")
    assert ok["session_id"] == peer.session_id and ok["id"] == "a"
    peer.send({"type": "message", "text": "hello"})
    await peer.wait_for("metrics", lambda e: e.get("kind") == "text", timeout=20)
    async with aiohttp.ClientSession() as http:
        async with http.get(f"{server.url}/api/health") as r:
            health = await r.json()
        async with http.get(f"{server.url}/api/metrics") as r:
            metrics = await r.json()
        async with http.get(f"{server.url}/metrics") as r:
            prometheus = await r.text()
        async with http.get(f"{server.url}/api/nothing-here") as r:
            assert r.status == 404 and (await r.json())["error"]["code"] == "not_found"
    assert health == {
        "status": "ok",
        "service": "Sandra IA",
        "version": health["version"],
        "webrtc": {"connections": 1},
        "providers": {"stt": "scripted", "llm": "scripted", "tts": "scripted"},
    }
    assert metrics["connections"] == 1
    assert metrics["sessions"] == {"total": 1, "authenticated": 1, "activeCalls": 1, "activeLastMinute": 1}
    assert metrics["latency"]["tts_ttfb_ms"]["count"] >= 1
    assert "sandra_tts_ttfb_milliseconds_bucket" in prometheus
    assert "sandra_voice_to_voice_milliseconds_count" in prometheus


async def test_auth_token(server_factory, peer_factory, monkeypatch):
    from server import config as configuration
    from tests.conftest import SCRIPTED, LOOPBACK, run_server

    config = configuration.load(None, {"SANDRA_AUTH_TOKEN": "s3cret"}, **SCRIPTED, webrtc=LOOPBACK)
    async with run_server(config) as srv:
        status, answer = await _post(srv.url, '{"type": "offer", "sdp": "v=0"}')
        assert status == 401 and answer["error"]["code"] == "unauthorized"
        assert "s3cret" not in str(answer)
