"""The host's admin API: auth, calls (live and recorded), audio with ranges, the inbox, retention."""

from __future__ import annotations

import asyncio
import json
import os
import time

import aiohttp

TOKEN = "host-secret-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


def admin_config(tmp_path):  # type: ignore[no-untyped-def]
    return {"recording": {"enabled": True, "dir": str(tmp_path / "rec")}, "llm": {"provider": "scripted",
            "host_inbox": str(tmp_path / "inbox.jsonl")}}


async def test_admin_api_needs_the_admin_token(server_factory, tmp_path):
    async with server_factory(**admin_config(tmp_path)) as srv, aiohttp.ClientSession() as http:
        # no admin token configured: the admin API is off
        for path in ("/api/calls", "/api/inbox", "/api/calls/abc", "/api/calls/abc/audio"):
            async with http.get(srv.url + path, headers=AUTH) as r:
                assert r.status == 401 and (await r.json())["error"]["code"] == "admin_required"
        async with http.get(srv.url + "/admin") as r:  # the page itself is public: it asks for the token
            assert r.status == 200 and "text/html" in r.headers["Content-Type"]


async def test_calls_audio_ranges_and_inbox(server_factory, peer_factory, tmp_path):
    from server import config as configuration
    from tests.conftest import LOOPBACK, SCRIPTED, run_server

    sections = {**{k: dict(v) for k, v in SCRIPTED.items()}, "webrtc": dict(LOOPBACK)}
    for k, v in admin_config(tmp_path).items():
        sections.setdefault(k, {}).update(v)
    config = configuration.load(None, {"SANDRA_ADMIN_TOKEN": TOKEN}, **sections)
    inbox = tmp_path / "inbox.jsonl"
    inbox.write_text(
        json.dumps({"time": "2026-12-01T10:00:00+00:00", "urgency": "high", "message": "No hot water", "language": "en"})
        + "\n" + json.dumps({"time": "2026-12-01T11:00:00+00:00", "urgency": "normal", "message": "Late check-out?"}) + "\n")

    async with run_server(config) as srv, aiohttp.ClientSession() as http:
        async with http.get(srv.url + "/api/calls", headers={"Authorization": "Bearer wrong"}) as r:
            assert r.status == 401
        peer = await peer_factory(srv)
        peer.send({"type": "call:start", "language": "en"})
        await peer.wait_for("state", lambda e: e["state"] == "speaking")
        async with http.get(srv.url + "/api/calls?live=1", headers=AUTH) as r:
            live = (await r.json())["live"]
        assert [c["session_id"] for c in live] == [peer.session_id]
        assert live[0]["state"] == "speaking" and live[0]["language"] == "en" and live[0]["recording"] is True
        await peer.wait_for("response:done")
        await peer.wait_for("metrics")
        async with http.get(srv.url + f"/api/calls/{peer.session_id}", headers=AUTH) as r:
            doc = await r.json()
        assert doc["live"] is True and doc["turns"][0]["who"] == "sandra"
        peer.send({"type": "call:end"})
        await peer.wait_for("call:ended")
        await asyncio.wait_for(_gone(srv, peer.session_id), 10)

        async with http.get(srv.url + "/api/calls", headers=AUTH) as r:
            listing = await r.json()
        assert listing["live"] == []
        [call] = listing["calls"]
        assert call["session_id"] == peer.session_id and call["recording"] is True and call["turns"] == 1
        assert call["interrupted"] == 0 and call["duration_s"] > 1 and "voice_to_voice_ms" not in call["metrics"][0]
        async with http.get(srv.url + f"/api/calls/{peer.session_id}", headers=AUTH) as r:
            doc = await r.json()
        assert doc["close_reason"] == "caller hung up" and doc["live"] is False
        signed = doc["audio_url"]
        assert signed.startswith(f"/api/calls/{peer.session_id}/audio?exp=") and TOKEN not in signed

        async with http.get(srv.url + f"/api/calls/{peer.session_id}/audio", headers=AUTH) as r:
            whole = await r.read()
            assert r.status == 200 and r.headers["Content-Type"] == "audio/ogg" and whole[:4] == b"OggS"
        async with http.get(srv.url + f"/api/calls/{peer.session_id}/audio", headers={**AUTH, "Range": "bytes=100-199"}) as r:
            assert r.status == 206 and await r.read() == whole[100:200]
            assert r.headers["Content-Range"] == f"bytes 100-199/{len(whole)}"
        async with http.get(srv.url + signed, headers={"Range": "bytes=0-99"}) as r:  # no token: the <audio> element
            assert r.status == 206 and await r.read() == whole[:100]
        for tampered in (signed.replace("sig=", "sig=0"), signed.replace("exp=", "exp=1"), signed.split("?")[0]):
            async with http.get(srv.url + tampered) as r:
                assert r.status == 401 and (await r.json())["error"]["code"] == "admin_required"
        for bad in ("nope", "..%2F..%2Fetc", "a.b"):
            async with http.get(srv.url + f"/api/calls/{bad}/audio", headers=AUTH) as r:
                assert r.status == 404 and (await r.json())["error"]["code"] == "no_recording"

        async with http.get(srv.url + "/api/inbox", headers=AUTH) as r:
            box = await r.json()
        assert [m["message"] for m in box["messages"]] == ["Late check-out?", "No hot water"]
        assert box["unhandled"] == 2 and box["messages"][1]["urgency"] == "high"
        target = box["messages"][1]["id"]
        async with http.post(srv.url + f"/api/inbox/{target}/handled", headers=AUTH) as r:
            assert r.status == 200 and await r.json() == {"id": target, "handled": True}
        async with http.post(srv.url + "/api/inbox/0123456789abcdef/handled", headers=AUTH) as r:
            assert r.status == 404 and (await r.json())["error"]["code"] == "no_such_message"
        async with http.post(srv.url + "/api/inbox/bad/handled", headers=AUTH) as r:
            assert r.status == 400
        async with http.get(srv.url + "/api/inbox", headers=AUTH) as r:
            box = await r.json()
        assert [m["handled"] for m in box["messages"]] == [False, True] and box["unhandled"] == 1


async def _gone(srv, session_id):  # type: ignore[no-untyped-def]
    while session_id in srv.sessions.calls:
        await asyncio.sleep(0.05)


async def test_retention_runs_at_startup(server_factory, tmp_path):
    old = tmp_path / "rec" / "2020-01-01" / "old.ogg"
    old.parent.mkdir(parents=True)
    old.write_bytes(b"OggS")
    stamp = time.time() - 40 * 86400
    os.utime(old, (stamp, stamp))
    kept = tmp_path / "rec" / "2020-01-01" / "kept.json"
    kept.write_text("{}")
    async with server_factory(recording={"enabled": True, "dir": str(tmp_path / "rec"), "keep_days": 30}):
        deadline = time.monotonic() + 5
        while old.exists() and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        assert not old.exists() and kept.exists()
