"""The security edge over real HTTP and real aiortc peers: guest tokens on /api/offer,
max_calls, admin, guest links, /api/ice, offer and datachannel floods, CORS, headers and
the redacted access log."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import logging
import time
from typing import Any

import aiohttp
import jwt
from aiohttp import web
from aiortc import RTCConfiguration, RTCPeerConnection, RTCSessionDescription

from server import config as configuration
from server.app import create_app
from server.security.web import RedactingAccessLogger
from tests.conftest import LOOPBACK, SCRIPTED, run_server
from tests.support.peer import ClientPeer

SECRET = "a-test-secret-that-is-long-enough-0123"
ADMIN = "admin-token-for-tests"


def load(env: dict[str, str] | None = None, **sections: dict[str, Any]):  # type: ignore[no-untyped-def]
    merged: dict[str, dict[str, Any]] = {k: dict(v) for k, v in SCRIPTED.items()}
    merged["webrtc"] = dict(LOOPBACK)
    for name, values in sections.items():
        merged.setdefault(name, {}).update(values)
    return configuration.load(None, env or {}, **merged)


def token(secret: str = SECRET, **claims: Any) -> str:
    base = {"aud": "sandra", "sub": "booking-42", "exp": int(time.time() + 3600)}
    base.update(claims)
    return jwt.encode({k: v for k, v in base.items() if v is not None}, secret, algorithm="HS256")


async def offer_sdp() -> tuple[RTCPeerConnection, str]:
    pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    pc.addTransceiver("audio", direction="sendrecv")
    pc.createDataChannel("control")
    await pc.setLocalDescription(await pc.createOffer())
    return pc, pc.localDescription.sdp


async def request(method: str, url: str, *, body: Any = None, headers: dict[str, str] | None = None):  # type: ignore[no-untyped-def]
    async with aiohttp.ClientSession() as http:
        data = body if isinstance(body, (str, bytes)) or body is None else json.dumps(body)
        async with http.request(method, url, data=data, headers=headers or {}) as r:
            text = await r.text()
            return r.status, (json.loads(text) if text and r.content_type == "application/json" else text), r.headers


def bearer(value: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {value}"}


class GuestPeer(ClientPeer):
    """A ClientPeer whose offer carries a guest token."""

    def __init__(self, base_url: str, token: str, **kwargs: Any) -> None:
        super().__init__(base_url, **kwargs)
        self.token = token

    async def connect(self) -> str:
        await self.pc.setLocalDescription(await self.pc.createOffer())
        status, body, _ = await request("POST", f"{self.base_url}/api/offer", headers=bearer(self.token),
                                        body={"sdp": self.pc.localDescription.sdp, "type": "offer"})
        assert status == 200, body
        await self.pc.setRemoteDescription(RTCSessionDescription(sdp=body["sdp"], type="answer"))
        self.session_id = body["session_id"]
        await asyncio.wait_for(self._open.wait(), 10)
        return self.session_id


async def test_guest_tokens_on_the_offer():
    config = load({"SANDRA_JWT_SECRET": SECRET, "SANDRA_AUTH_TOKEN": "static-token"}, auth={"mode": "token"})
    async with run_server(config) as srv:
        url = f"{srv.url}/api/offer"
        pcs = []
        cases = [
            (None, 401, "auth_required"),
            (token(exp=int(time.time() - 60)), 401, "token_expired"),
            (token(nbf=int(time.time() + 86400), exp=int(time.time() + 2 * 86400)), 401, "token_not_yet_valid"),
            (token(secret="another-secret-that-is-long-enough-99"), 401, "invalid_token"),
            (token(aud="other"), 401, "invalid_token"),
            ("abc.def.ghi", 401, "invalid_token"),
        ]
        for tok, status, code in cases:
            pc, sdp = await offer_sdp()
            pcs.append(pc)
            got, body, _ = await request("POST", url, body={"sdp": sdp, "type": "offer"},
                                         headers=bearer(tok) if tok else None)
            assert (got, body["error"]["code"]) == (status, code), (tok, body)
            assert SECRET not in json.dumps(body)
        two = token(sub="booking-7", max_calls=2)
        answers = []
        for _ in range(3):
            pc, sdp = await offer_sdp()
            pcs.append(pc)
            answers.append(await request("POST", url, body={"sdp": sdp, "type": "offer"}, headers=bearer(two)))
        assert [a[0] for a in answers] == [200, 200, 429]
        assert answers[2][1]["error"]["code"] == "too_many_calls"
        await request("DELETE", f"{srv.url}/api/sessions/{answers[0][1]['session_id']}")  # frees a slot
        pc, sdp = await offer_sdp()
        pcs.append(pc)
        assert (await request("POST", url, body={"sdp": sdp, "type": "offer"}, headers=bearer(two)))[0] == 200
        pc, sdp = await offer_sdp()  # the static token keeps working
        pcs.append(pc)
        assert (await request("POST", url, body={"sdp": sdp, "type": "offer"}, headers=bearer("static-token")))[0] == 200
        for pc in pcs:
            await pc.close()


async def test_guest_call_greets_by_name_in_the_links_language_and_auth_accepts_the_jwt():
    config = load({"SANDRA_JWT_SECRET": SECRET}, auth={"mode": "token"})
    tok = token(name="Ana", lang="es")
    async with run_server(config) as srv:
        peer = GuestPeer(srv.url, tok)
        try:
            await peer.connect()
            peer.send({"type": "auth", "token": tok, "id": "a"})
            assert (await peer.wait_for("auth:ok"))["id"] == "a"
            peer.send({"type": "auth", "token": token(secret="another-secret-that-is-long-enough-99"), "id": "b"})
            assert (await peer.wait_for("error", lambda e: e.get("id") == "b"))["code"] == "unauthorized"
            peer.send({"type": "call:start"})
            started = await peer.wait_for("call:started")
            assert started["language"] == "es"
            done = await peer.wait_for("response:done", timeout=30)
            assert done["text"].startswith("¡Te damos la bienvenida, Ana!")
        finally:
            await peer.close()


async def test_admin_guest_links_and_ice():
    env = {"SANDRA_JWT_SECRET": SECRET, "SANDRA_ADMIN_TOKEN": ADMIN, "SANDRA_TURN_SECRET": "turn-secret"}
    config = load(env, auth={"mode": "token", "base_url": "https://sandra.example"},
                  webrtc={"turn_urls": ["turn:127.0.0.1:3478"], "turn_ttl_s": 600})
    async with run_server(config) as srv:
        link = {"name": "Ana", "lang": "es", "from": "2026-01-01", "to": "2099-12-31", "max_calls": 2}
        status, body, _ = await request("POST", f"{srv.url}/api/guest-links", body=link)
        assert (status, body["error"]["code"]) == (401, "admin_required")
        status, body, _ = await request("POST", f"{srv.url}/api/guest-links", body=link, headers=bearer("wrong"))
        assert (status, body["error"]["code"]) == (401, "admin_required")
        status, body, _ = await request("POST", f"{srv.url}/api/guest-links", body=link, headers=bearer(ADMIN))
        assert status == 201, body
        assert body["url"] == f"https://sandra.example/?t={body['token']}" and body["expires_at"] == "2100-01-01T00:00:00Z"
        claims = jwt.decode(body["token"], SECRET, algorithms=["HS256"], audience="sandra")
        assert (claims["name"], claims["lang"], claims["max_calls"]) == ("Ana", "es", 2)
        for bad in ({"to": "2099-01-01"}, {"from": "x", "to": "2099-01-01"}, {"from": "2026-01-01", "to": "2026-01-02"},
                    {"from": "2026-01-01", "to": "2099-01-01", "lang": "fr"}, {"from": "2026-01-01", "to": "2099-01-01",
                                                                            "color": "red"}):
            status, answer, _ = await request("POST", f"{srv.url}/api/guest-links", body=bad, headers=bearer(ADMIN))
            assert (status, answer["error"]["code"]) == (400, "bad_guest_link"), bad
        status, answer, _ = await request("DELETE", f"{srv.url}/api/sessions/nope")
        assert (status, answer["error"]["code"]) == (401, "admin_required")
        status, answer, _ = await request("DELETE", f"{srv.url}/api/sessions/nope", headers=bearer(ADMIN))
        assert (status, answer["error"]["code"]) == (404, "no_such_session")

        status, answer, _ = await request("GET", f"{srv.url}/api/ice")
        assert (status, answer["error"]["code"]) == (401, "auth_required")
        before = time.time()
        status, ice, headers = await request("GET", f"{srv.url}/api/ice", headers=bearer(body["token"]))
        assert status == 200 and ice["ttl"] == 600 and headers["Cache-Control"] == "no-store"
        (server,) = ice["iceServers"]
        expiry, ident = server["username"].split(":", 1)
        assert ident == claims["sub"] and before + 600 - 1 <= int(expiry) <= time.time() + 600
        mac = hmac.new(b"turn-secret", server["username"].encode(), hashlib.sha1).digest()
        assert server["credential"] == base64.b64encode(mac).decode() and server["urls"] == ["turn:127.0.0.1:3478"]


async def test_guest_links_need_the_admin_token_even_when_unset():
    async with run_server(load({"SANDRA_JWT_SECRET": SECRET})) as srv:
        status, body, _ = await request("POST", f"{srv.url}/api/guest-links", body={"from": "2026-01-01", "to": "2099-01-01"})
        assert (status, body["error"]["code"]) == (401, "admin_required")
        assert "SANDRA_ADMIN_TOKEN" in body["error"]["message"]


async def test_offer_flood_gets_429_with_retry_after_per_client_ip():
    config = load(limits={"offers_per_minute": 3}, server={"trusted_proxies": ["127.0.0.1"]})
    async with run_server(config) as srv:
        url = f"{srv.url}/api/offer"
        statuses = [(await request("POST", url, body="{bad"))[0] for _ in range(3)]
        assert statuses == [400, 400, 400]  # invalid offers count too
        status, body, headers = await request("POST", url, body="{bad")
        assert (status, body["error"]["code"]) == (429, "rate_limited")
        assert 1 <= int(headers["Retry-After"]) <= 20
        # behind a trusted proxy, X-Forwarded-For is the client: another guest is not limited
        status, _, _ = await request("POST", url, body="{bad", headers={"X-Forwarded-For": "203.0.113.9"})
        assert status == 400
    async with run_server(load(limits={"offers_per_minute": 2})) as srv:  # no trusted proxy: the header is ignored
        url = f"{srv.url}/api/offer"
        got = [(await request("POST", url, body="{bad", headers={"X-Forwarded-For": f"203.0.113.{i}"}))[0]
               for i in range(3)]
        assert got == [400, 400, 429]


async def test_datachannel_flood_typed_limit_and_sustained_flood_closes_the_call(peer_factory):
    config = load(limits={"messages_per_second": 10, "messages_per_minute": 2, "flood_close_s": 1.5})
    async with run_server(config) as srv:
        peer = await peer_factory(srv)
        for i in range(30):
            peer.send({"type": "ping", "t": i, "id": f"p{i}"})
        await peer.wait_until(lambda: len([e for e in peer.events if e["type"] in ("pong", "error")]) >= 30,
                              what="30 answers", audio=False)
        pongs = [e for e in peer.events if e["type"] == "pong"]
        limited = [e for e in peer.events if e["type"] == "error" and e["code"] == "rate_limited"]
        assert 20 <= len(pongs) <= 26 and len(pongs) + len(limited) == 30  # burst of 20 (twice the rate), some refill
        await asyncio.sleep(1.2)  # a quiet second: the flood is over and the bucket refills
        for i in range(3):
            peer.send({"type": "message", "text": f"question {i}", "id": f"m{i}"})
        refused = await peer.wait_for("error", lambda e: e.get("id") == "m2")
        assert refused["code"] == "rate_limited"
        user_turns = [e for e in peer.events if e["type"] == "metrics" and e.get("kind") == "text"]
        assert len(user_turns) <= 1  # m0 may be answered (m1 interrupts it); m2 never starts a turn
        start = time.monotonic()
        while time.monotonic() - start < 4 and not any(e["type"] == "call:ended" for e in peer.events):
            for _ in range(5):
                peer.send({"type": "ping", "t": 0})
            await asyncio.sleep(0.05)
        ended = await peer.wait_for("call:ended", timeout=2)
        assert ended["reason"].startswith("rate_limited")
        assert 1.4 <= time.monotonic() - start < 5


async def test_cors_preflight_and_security_headers():
    config = load(server={"cors_origins": ["https://host.example"]})
    async with run_server(config) as srv:
        pre = {"Access-Control-Request-Method": "POST", "Access-Control-Request-Headers": "authorization, content-type"}
        status, _, headers = await request("OPTIONS", f"{srv.url}/api/offer", headers={"Origin": "https://host.example", **pre})
        assert status == 204
        assert headers["Access-Control-Allow-Origin"] == "https://host.example"
        assert {"POST", "DELETE"} <= {m.strip() for m in headers["Access-Control-Allow-Methods"].split(",")}
        assert {"Authorization", "Content-Type"} <= {h.strip() for h in headers["Access-Control-Allow-Headers"].split(",")}
        status, _, headers = await request("OPTIONS", f"{srv.url}/api/offer", headers={"Origin": "https://evil.example", **pre})
        assert status == 403 and not any(h.startswith("Access-Control-") for h in headers)
        _, _, headers = await request("POST", f"{srv.url}/api/offer", body="{bad", headers={"Origin": "https://host.example"})
        assert headers["Access-Control-Allow-Origin"] == "https://host.example"
        _, _, headers = await request("POST", f"{srv.url}/api/offer", body="{bad", headers={"Origin": "https://evil.example"})
        assert "Access-Control-Allow-Origin" not in headers
        for path in ("/", "/debug", "/app.js", "/api/health"):
            status, _, headers = await request("GET", f"{srv.url}{path}")
            assert status == 200, path
            csp = headers["Content-Security-Policy"]
            assert "script-src 'self'" in csp and "unsafe-inline" not in csp and "frame-ancestors 'self' https://host.example" in csp
            assert headers["X-Content-Type-Options"] == "nosniff"
            assert headers["Referrer-Policy"] == "no-referrer"
            assert "microphone=(self)" in headers["Permissions-Policy"]


async def test_access_log_never_shows_a_token():
    lines: list[str] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            lines.append(record.getMessage())

    logger = logging.getLogger("test.sandra.access")
    logger.setLevel(logging.INFO)
    logger.addHandler(Keep())
    logger.propagate = False
    app = create_app(load())
    runner = web.AppRunner(app, access_log_class=RedactingAccessLogger, access_log=logger)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    secret = token(name="Ana")
    try:
        assert (await request("GET", f"http://127.0.0.1:{port}/?t={secret}"))[0] == 200
        assert (await request("GET", f"http://127.0.0.1:{port}/debug?x=1&token={secret}"))[0] == 200
    finally:
        await runner.cleanup()
    assert len(lines) == 2 and all(secret not in line for line in lines), lines
    assert '"GET /?t=[redacted] HTTP/1.1" 200' in lines[0] and "/debug?x=1&token=[redacted]" in lines[1]
