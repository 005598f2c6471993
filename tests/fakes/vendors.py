"""All the fake vendors on one local aiohttp server, for ``async with FakeVendors() as fake``.

``fake.anthropic_url``, ``fake.cartesia_url``, ``fake.openai_url`` are the base URLs to hand
to the providers (``fake.config(...)`` builds a whole :class:`Config` with the fake's keys
and URLs); ``fake.anthropic``, ``fake.tts``, ``fake.stt``, ``fake.openai`` hold the knobs
and what each received; ``await fake.until(lambda: ...)`` waits for something recorded.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from pathlib import Path
from typing import Any

from aiohttp import web

from server import config as config_module
from server.config import Config

from . import anthropic_fake, cartesia_fake, openai_fake
from .anthropic_fake import AnthropicFake
from .cartesia_fake import CartesiaSTTFake, CartesiaTTSFake
from .common import Changes
from .openai_fake import OpenAIFake


class FakeVendors:
    def __init__(self) -> None:
        self.changes = Changes()
        self.anthropic = AnthropicFake(self.changes)
        self.tts = CartesiaTTSFake(self.changes)
        self.stt = CartesiaSTTFake(self.changes)
        self.openai = OpenAIFake(self.changes)
        self._runner: web.AppRunner | None = None
        self.url = ""

    @property
    def anthropic_url(self) -> str:
        return self.url

    @property
    def cartesia_url(self) -> str:
        return self.url

    @property
    def openai_url(self) -> str:
        return self.url

    def env(self) -> dict[str, str]:
        """The environment a Sandra server would need to talk to these fakes."""
        return {
            "ANTHROPIC_API_KEY": anthropic_fake.API_KEY,
            "ANTHROPIC_BASE_URL": self.anthropic_url,
            "CARTESIA_API_KEY": cartesia_fake.API_KEY,
            "CARTESIA_VOICE_ID": cartesia_fake.VOICE_ID,
            "CARTESIA_BASE_URL": self.cartesia_url,
            "STT_API_KEY": openai_fake.API_KEY,
            "STT_BASE_URL": self.openai_url,
        }

    def config(self, root: Path | None = None, env: dict[str, str] | None = None, **sections: Any) -> Config:
        """A Config pointing every cloud provider at this fake; ``sections`` as for ``config.load``."""
        cfg = config_module.load(env={**self.env(), **(env or {})}, **sections)
        return dataclasses.replace(cfg, root=root) if root is not None else cfg

    async def until(self, predicate: Callable[[], object], timeout: float = 5.0, what: str = "") -> None:
        await self.changes.until(predicate, timeout, what)

    async def __aenter__(self) -> FakeVendors:
        app = web.Application()
        for fake in (self.anthropic, self.tts, self.stt, self.openai):
            app.add_routes(fake.routes())

        async def close_sockets(app: web.Application) -> None:
            await self.tts.close_all()
            await self.stt.close_all()

        app.on_shutdown.append(close_sockets)
        self._runner = web.AppRunner(app, handler_cancellation=True, shutdown_timeout=1.0, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        host, port = self._runner.addresses[0][:2]
        self.url = f"http://{host}:{port}"
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._runner is not None:
            runner, self._runner = self._runner, None
            await runner.cleanup()
