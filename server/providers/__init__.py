"""Provider registry: ``[stt|llm|tts] provider = "name"`` picks one class here.

Modules are imported only when chosen, so a cloud-only deployment never loads Whisper.
Every provider class is constructed as ``cls(config)`` with the whole :class:`Config`.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass

from ..config import Config
from ..errors import ConfigError
from .base import LLM, STT, TTS

REGISTRY: dict[str, dict[str, str]] = {
    "stt": {
        "local": "server.providers.local_stt:LocalWhisperSTT",
        "cartesia": "server.providers.cartesia_stt:CartesiaSTT",
        "openai": "server.providers.openai_stt:OpenAISTT",
        "scripted": "server.providers.scripted:ScriptedSTT",
    },
    "llm": {
        "concierge": "server.providers.concierge:ConciergeLLM",
        "anthropic": "server.providers.anthropic_llm:AnthropicLLM",
        "scripted": "server.providers.scripted:ScriptedLLM",
    },
    "tts": {
        "espeak": "server.providers.espeak_tts:EspeakTTS",
        "cartesia": "server.providers.cartesia_tts:CartesiaTTS",
        "scripted": "server.providers.scripted:ScriptedTTS",
    },
}


@dataclass(frozen=True)
class Providers:
    stt: STT
    llm: LLM
    tts: TTS

    async def start(self) -> None:
        for p in (self.stt, self.llm, self.tts):
            await p.start()

    async def aclose(self) -> None:
        for p in (self.stt, self.llm, self.tts):
            await p.aclose()

    def names(self) -> dict[str, str]:
        return {"stt": self.stt.name, "llm": self.llm.name, "tts": self.tts.name}


def _load(kind: str, name: str) -> type:
    try:
        target = REGISTRY[kind][name]
    except KeyError:
        raise ConfigError(f"[{kind}] provider = {name!r} is not one of: {', '.join(REGISTRY[kind])}") from None
    module, _, attr = target.partition(":")
    return getattr(importlib.import_module(module), attr)


def create(config: Config) -> Providers:
    """Instantiate the configured providers (``auto`` resolved from the secrets)."""
    config = config.resolved()
    return Providers(
        stt=_load("stt", config.stt.provider)(config),
        llm=_load("llm", config.llm.provider)(config),
        tts=_load("tts", config.tts.provider)(config),
    )
