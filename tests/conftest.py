"""Shared fixtures: a Sandra server on 127.0.0.1 and real aiortc client peers.

All traffic stays on loopback: ICE host candidates are restricted to 127.0.0.1 and no
STUN/TURN server is configured (an explicit empty list).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import pytest
from aiohttp import web

from server import config as configuration
from server.app import SESSIONS, create_app
from server.config import Config
from server.media.ice import restrict_host_addresses
from tests.fakes.vendors import FakeVendors
from tests.support.peer import ClientPeer

LOOPBACK = {"host_addresses": ["127.0.0.1"], "ice_servers": []}
SCRIPTED = {"stt": {"provider": "scripted"}, "llm": {"provider": "scripted"}, "tts": {"provider": "scripted"}}
# Tests of everything but the end-of-turn detector end turns on silence: espeak speech is
# no evidence for an audio model (tests/test_smart_turn*.py cover the detector).
SILENCE = {"turn": {"detector": "silence"}}


def make_config(**sections: dict[str, Any]) -> Config:
    merged: dict[str, dict[str, Any]] = {k: dict(v) for k, v in {**SCRIPTED, **SILENCE}.items()}
    merged["webrtc"] = dict(LOOPBACK)
    for name, values in sections.items():
        merged.setdefault(name, {}).update(values)
    return configuration.load(None, {}, **merged)


class Running:
    def __init__(self, app: web.Application, url: str) -> None:
        self.app = app
        self.url = url

    @property
    def sessions(self):  # type: ignore[no-untyped-def]
        return self.app[SESSIONS]


@asynccontextmanager
async def run_server(config: Config) -> AsyncIterator[Running]:
    app = create_app(config)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    try:
        yield Running(app, f"http://127.0.0.1:{port}")
    finally:
        await runner.cleanup()
        restrict_host_addresses(())


@pytest.fixture
def server_factory() -> Callable[..., Any]:
    """``async with server_factory(vad={...}) as srv:`` — a server with scripted providers."""

    def factory(**sections: dict[str, Any]):  # type: ignore[no-untyped-def]
        return run_server(make_config(**sections))

    return factory


@pytest.fixture
async def server() -> AsyncIterator[Running]:
    async with run_server(make_config()) as running:
        yield running


@pytest.fixture
async def peer_factory() -> AsyncIterator[Callable[..., Any]]:
    peers: list[ClientPeer] = []

    async def connect(srv: Running, **kwargs: Any) -> ClientPeer:
        peer = ClientPeer(srv.url, **kwargs)
        peers.append(peer)
        await peer.connect()
        return peer

    yield connect
    for peer in peers:
        await peer.close()


@pytest.fixture
async def fake() -> AsyncIterator[FakeVendors]:
    """Local fake vendor servers (Anthropic, Cartesia, OpenAI-style) on 127.0.0.1."""
    async with FakeVendors() as vendors:
        yield vendors


@pytest.fixture
async def provider_factory(fake: FakeVendors, tmp_path: Any) -> AsyncIterator[Callable[..., Any]]:
    """``make(cls, env=None, **sections)``: a provider pointed at the fakes, closed after the test."""
    made: list[Any] = []

    def make(cls: type, env: dict[str, str] | None = None, **sections: Any) -> Any:
        provider = cls(fake.config(root=tmp_path, env=env, **sections))
        made.append(provider)
        return provider

    yield make
    for provider in made:
        await provider.aclose()
