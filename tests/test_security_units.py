"""The pure security cores: guest tokens (made with PyJWT), token buckets, message limits,
TURN credentials, redaction, client addresses and the config rules. No sockets."""

from __future__ import annotations

import base64
import hashlib
import hmac
import time

import jwt
import pytest

from server import config as configuration
from server.errors import ConfigError
from server.security import guest as guests
from server.security.calls import personal_greeting
from server.security.limits import MemoryLimitStore, MessageLimits, TokenBucket
from server.security.turn import credentials
from server.security.web import ClientAddress, content_security_policy, redact

SECRET = "a-test-secret-that-is-long-enough-0123"
NOW = 1_796_100_000.0  # 2026-11-30


def token(secret: str = SECRET, **claims: object) -> str:
    base = {"aud": "sandra", "sub": "booking-42", "exp": int(NOW + 3600)}
    base.update(claims)
    return jwt.encode({k: v for k, v in base.items() if v is not None}, secret, algorithm="HS256")


def code_of(tok: str | None, now: float = NOW) -> str:
    with pytest.raises(guests.TokenError) as err:
        guests.verify(tok, SECRET, now)
    return err.value.code


def test_valid_guest_token_gives_its_claims():
    guest = guests.verify(token(name="Ana", lang="es", max_calls=2, nbf=int(NOW - 10)), SECRET, NOW)
    assert guest == guests.Guest(sub="booking-42", name="Ana", lang="es", max_calls=2, exp=int(NOW + 3600),
                                 nbf=int(NOW - 10))
    assert guests.verify(token(), SECRET, NOW).max_calls == 1  # default


def test_refused_tokens_have_their_codes():
    assert code_of(None) == "auth_required"
    assert code_of("") == "auth_required"
    assert code_of(token(secret="another-secret-that-is-long-enough-99")) == "invalid_token"
    assert code_of(token(aud="someone-else")) == "invalid_token"
    assert code_of(token(aud=None)) == "invalid_token"
    assert code_of("not.a.jwt") == "invalid_token"
    assert code_of("garbage") == "invalid_token"
    assert code_of(token(exp=None)) == "invalid_token"
    assert code_of(token(lang="fr")) == "invalid_token"
    assert code_of(token(max_calls=0)) == "invalid_token"
    none_alg = jwt.encode({"aud": "sandra", "sub": "x", "exp": int(NOW + 60)}, None, algorithm="none")
    assert code_of(none_alg) == "invalid_token"


def test_expired_and_early_tokens_say_the_date():
    with pytest.raises(guests.TokenError) as err:
        guests.verify(token(exp=1_796_515_200), SECRET, 1_796_515_200)  # exactly at exp
    assert err.value.code == "token_expired" and "2026-12-06 00:00 UTC" in str(err.value)
    with pytest.raises(guests.TokenError) as err:
        guests.verify(token(nbf=int(NOW + 86400), exp=int(NOW + 2 * 86400)), SECRET, NOW)
    assert err.value.code == "token_not_yet_valid" and "2026-12-02 04:40 UTC" in str(err.value)


def test_issue_and_stay_round_trip():
    nbf, exp = guests.stay("2026-12-01", "2026-12-05")
    assert (nbf, exp) == (1_796_083_200, 1_796_515_200)  # 12-01 00:00 UTC .. end of 12-05
    tok = guests.issue(SECRET, sub="b-1", exp=exp, nbf=nbf, name="  Ana\n María ", lang="es", max_calls=3, now=NOW)
    claims = jwt.decode(tok, SECRET, algorithms=["HS256"], audience="sandra", options={"verify_nbf": False})
    assert claims["name"] == "Ana María" and claims["lang"] == "es" and claims["max_calls"] == 3
    assert guests.verify(tok, SECRET, nbf + 1).sub == "b-1"
    with pytest.raises(ValueError):
        guests.stay("2026-12-05", "2026-12-01")
    with pytest.raises(ValueError):
        guests.stay("tomorrow", "2026-12-01")


def test_greeting_with_the_guests_name():
    assert personal_greeting("Hi, I'm Sandra.", "Ana", "en") == "Welcome, Ana! Hi, I'm Sandra."
    assert personal_greeting("¡Hola!", "Ana", "es") == "¡Te damos la bienvenida, Ana! ¡Hola!"
    assert personal_greeting("Hi.", None, "en") == "Hi."


def test_token_bucket():
    bucket = TokenBucket.full(rate_per_s=1.0, burst=2.0, at=0.0)
    assert [bucket.take(0.0), bucket.take(0.0)] == [0.0, 0.0]
    assert bucket.take(0.0) == pytest.approx(1.0)
    assert bucket.take(0.5) == pytest.approx(0.5)
    assert bucket.take(1.0) == 0.0
    assert not bucket.idle(1.0) and bucket.idle(3.0)


async def test_memory_store_buckets_sets_and_forgetting():
    now = [0.0]
    store = MemoryLimitStore(clock=lambda: now[0], sweep_s=10.0)
    waits = [await store.take("ip:a", 0.5, 3) for _ in range(4)]
    assert waits[:3] == [0.0, 0.0, 0.0] and waits[3] == pytest.approx(2.0)
    assert await store.take("ip:b", 0.5, 3) == 0.0  # keys are independent
    assert await store.acquire("calls:x", "s1", 2) and await store.acquire("calls:x", "s2", 2)
    assert not await store.acquire("calls:x", "s3", 2)
    assert await store.acquire("calls:x", "s1", 2)  # already in: still allowed
    assert await store.count("calls:x") == 2
    await store.release("calls:x", "s1")
    assert await store.acquire("calls:x", "s3", 2)
    await store.release("calls:x", "s2")
    await store.release("calls:x", "s3")
    assert await store.count("calls:x") == 0
    assert len(store) == 2  # two buckets, no empty set kept
    now[0] = 100.0  # both buckets have refilled: the sweep forgets them
    await store.take("ip:c", 0.5, 3)
    assert len(store) == 1


def test_message_limits_drop_then_close_a_sustained_flood():
    limits = MessageLimits(0.0, per_second=5, typed_per_minute=2, close_after_s=3.0)
    allowed = [limits.allow_message(0.0) for _ in range(12)]
    assert allowed == [True] * 10 + [False] * 2  # burst: twice the rate
    assert limits.flooding_since == 0.0 and not limits.flooded(0.0)
    at, verdicts = 0.0, []
    while at < 3.5:  # 50 messages a second: 5 get through, the rest are dropped
        at += 0.02
        verdicts.append(limits.allow_message(at))
    assert 10 <= verdicts.count(True) <= 20 and limits.flooded(at)
    calm = MessageLimits(0.0, per_second=5, close_after_s=3.0)
    for second in range(10):  # bursts with quiet gaps are not one flood
        for _ in range(12):
            calm.allow_message(second * 3.0)
    assert not calm.flooded(27.0)
    assert [limits.allow_typed(10.0), limits.allow_typed(10.0), limits.allow_typed(10.0)] == [True, True, False]
    assert limits.allow_typed(40.0)  # one more after 30 s at 2 a minute


def test_turn_credentials_recomputed():
    creds = credentials("turn-secret", ("turn:127.0.0.1:3478",), ident="guest:42", ttl_s=600, now=1000.5)
    assert creds.username == "1600:guest_42" and creds.expires_at == 1600
    expected = base64.b64encode(hmac.new(b"turn-secret", b"1600:guest_42", hashlib.sha1).digest()).decode()
    assert creds.credential == expected
    assert creds.to_json() == {"urls": ["turn:127.0.0.1:3478"], "username": "1600:guest_42", "credential": expected}
    assert "turn-secret" not in repr(creds) and expected not in repr(creds)


def test_redaction_and_client_address():
    assert redact("/?t=eyJabc.def.ghi") == "/?t=[redacted]"
    assert redact("/debug?x=1&token=abc&t=zz#f") == "/debug?x=1&token=[redacted]&t=[redacted]#f"
    assert redact("/style.css?v=2") == "/style.css?v=2"
    direct = ClientAddress(())
    assert direct.of("10.0.0.9", "1.2.3.4") == "10.0.0.9"  # nobody trusted: the header is ignored
    proxied = ClientAddress(("10.0.0.0/8", "127.0.0.1"))
    assert proxied.of("10.0.0.9", "1.2.3.4") == "1.2.3.4"
    assert proxied.of("10.0.0.9", "6.6.6.6, 1.2.3.4, 10.0.0.5") == "1.2.3.4"  # spoofed left part ignored
    assert proxied.of("8.8.8.8", "1.2.3.4") == "8.8.8.8"
    csp = content_security_policy(["https://host.example"])
    assert "script-src 'self'" in csp and "unsafe-inline" not in csp and "frame-ancestors 'self' https://host.example" in csp


def test_config_rules():
    with pytest.raises(ConfigError, match="SANDRA_JWT_SECRET"):
        configuration.load(None, {}, auth={"mode": "token"})
    with pytest.raises(ConfigError, match="SANDRA_JWT_SECRET"):
        configuration.load(None, {"SANDRA_JWT_SECRET": "short"}, auth={"mode": "open"})
    with pytest.raises(ConfigError, match="SANDRA_JWT_SECRET"):
        configuration.load(None, {}, server={"host": "0.0.0.0"})  # auto: token off loopback
    assert configuration.load(None, {}).auth.mode == "open"  # auto on loopback
    assert configuration.load(None, {"SANDRA_JWT_SECRET": SECRET}, server={"host": "0.0.0.0"}).auth.mode == "token"
    with pytest.raises(ConfigError, match="SANDRA_TURN_SECRET"):
        configuration.load(None, {}, webrtc={"turn_urls": ["turn:127.0.0.1:3478"]})
    config = configuration.load(None, {"SANDRA_JWT_SECRET": SECRET, "SANDRA_ADMIN_TOKEN": "adm-value-xyz", "SANDRA_TURN_SECRET": "t",
                                       "SANDRA_SERVER_CORS_ORIGINS": "https://a.example, https://b.example"})
    assert config.server.cors_origins == ("https://a.example", "https://b.example")
    assert SECRET not in repr(config) and "adm-value-xyz" not in repr(config.secrets)


def test_the_servers_own_peer_gets_fresh_turn_credentials():
    from server.sessions import rtc_configuration

    config = configuration.load(None, {"SANDRA_TURN_SECRET": "turn-secret"},
                                webrtc={"turn_urls": ["turn:127.0.0.1:3478?transport=udp"], "turn_ttl_s": 120,
                                        "ice_servers": [{"urls": "stun:127.0.0.1:3478"}]})
    stun, relay = rtc_configuration(config, "session-1").iceServers
    assert stun.urls == ["stun:127.0.0.1:3478"] and relay.urls == ["turn:127.0.0.1:3478?transport=udp"]
    expiry, ident = relay.username.split(":")
    assert ident == "session-1" and 100 < int(expiry) - time.time() <= 120
    mac = hmac.new(b"turn-secret", relay.username.encode(), hashlib.sha1).digest()
    assert relay.credential == base64.b64encode(mac).decode()
    assert rtc_configuration(configuration.load(None, {})).iceServers == []  # explicit empty list, no STUN
