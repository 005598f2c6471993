"""Configuration: config.toml, then environment overrides, read once into frozen dataclasses.

Nothing else in Sandra reads ``os.environ``: :func:`load` is handed the environment and
everything downstream is handed the :class:`Config` it returns.

Environment overrides:

- ``SANDRA_HOST``, ``SANDRA_PORT``; ``MAX_SESSIONS``, ``SESSION_TTL`` (seconds);
- ``SANDRA_<SECTION>_<KEY>`` for any scalar key, e.g. ``SANDRA_VAD_END_SILENCE_MS=400``;
- secrets: ``SANDRA_AUTH_TOKEN``, ``ANTHROPIC_API_KEY``, ``CARTESIA_API_KEY``, ``CARTESIA_VOICE_ID``,
  ``STT_API_KEY`` (or ``OPENAI_API_KEY``);
- vendor endpoints: ``ANTHROPIC_BASE_URL``, ``CARTESIA_BASE_URL``, ``STT_BASE_URL``.

A provider set to ``"auto"`` picks the cloud vendor when its key is present and the
embedded offline provider otherwise.
"""

from __future__ import annotations

import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from .errors import ConfigError

ROOT = Path(__file__).resolve().parent.parent


@dataclass(frozen=True)
class ServerConfig:
    host: str = "127.0.0.1"
    port: int = 8080
    max_sessions: int = 50
    session_ttl_s: float = 3600.0
    # A call with no ping and no inbound audio for this long is a dead peer.
    heartbeat_timeout_s: float = 5.0
    client_dir: str = "client"
    log_level: str = "INFO"


@dataclass(frozen=True)
class IceServer:
    urls: tuple[str, ...]
    username: str | None = None
    credential: str | None = None


@dataclass(frozen=True)
class WebRTCConfig:
    ice_servers: tuple[IceServer, ...] = ()
    # Empty: all interfaces. ["127.0.0.1"] keeps every ICE candidate on loopback.
    host_addresses: tuple[str, ...] = ()
    # Inbound packets allowed to wait for a missing one before it is skipped;
    # 0 keeps aiortc's own jitter buffer (80 ms, grows after loss).
    jitter_max_gap: int = 2


@dataclass(frozen=True)
class VADConfig:
    aggressiveness: int = 2
    # A voiced frame must also be this far above the noise floor (trims webrtcvad's
    # ~100 ms hangover at the end of speech); 0 turns the energy gate off.
    energy_margin_db: float = 10.0
    start_ms: int = 60
    end_silence_ms: int = 500
    barge_in_ms: int = 80
    pre_roll_ms: int = 300
    # Echo guard (server/media/echo.py): while Sandra speaks, inbound speech must be this
    # many dB louder than the echo of her voice learned on this call to count as barge-in.
    echo_margin_db: float = 6.0
    # The echo return assumed until the call's own has been measured, in dB.
    echo_return_db: float = -10.0


@dataclass(frozen=True)
class AudioConfig:
    # How far ahead of the wire the outbound queue may run (backpressure beyond it).
    outbound_lead_ms: int = 120
    sample_rate: int = 48000


@dataclass(frozen=True)
class STTConfig:
    provider: str = "auto"  # auto | local | cartesia | openai | scripted
    # local: the Whisper model for each language: "tiny.en" (packaged, English only),
    # "base" / "small" (multilingual, split across two wheels each), or a model directory.
    # Language detection (call:start with no language) uses model_es, else model_en, if
    # multilingual.
    model_en: str = "tiny.en"
    model_es: str = "base"
    # Compatibility: when set, one model for every language (overrides model_en/model_es).
    model: str = ""
    # Where split models are joined once; "" = $XDG_CACHE_HOME/sandra/models (~/.cache/...).
    model_cache: str = ""
    compute_type: str = "int8"
    cpu_threads: int = 2
    max_concurrency: int = 1
    no_speech_threshold: float = 0.6
    base_url: str = "https://api.openai.com"  # openai-compatible endpoint
    api_model: str = "whisper-1"  # openai: model name; cartesia: ink-whisper
    cartesia_model: str = "ink-whisper"
    timeout_s: float = 10.0


@dataclass(frozen=True)
class LLMConfig:
    provider: str = "auto"  # auto | concierge | anthropic | scripted
    model: str = "claude-haiku-5-5"
    max_tokens: int = 400
    first_token_timeout_s: float = 4.0
    max_retries: int = 2
    history_turns: int = 12
    history_tokens: int = 4000
    host_inbox: str = "host-inbox.jsonl"


@dataclass(frozen=True)
class TTSConfig:
    provider: str = "auto"  # auto | espeak | cartesia | scripted
    model: str = "sonic-3.5"
    sample_rate: int = 24000
    voice_en: str = "en-us"  # espeak voice names
    voice_es: str = "es"
    rate_wpm: int = 165
    cartesia_version: str = "2026-03-01"


@dataclass(frozen=True)
class ScriptedConfig:
    transcript: str = "What time is check-in?"
    reply: str = "Check-in is from three in the afternoon. Anything else I can help with?"
    stt_ms: float = 0.0
    llm_first_ms: float = 0.0
    llm_piece_ms: float = 0.0
    tts_first_ms: float = 0.0


@dataclass(frozen=True)
class KnowledgeConfig:
    file: str = "knowledge.toml"


@dataclass(frozen=True, repr=False)
class Secrets:
    """API keys and vendor endpoints. ``repr`` never shows a value."""

    anthropic_api_key: str | None = None
    anthropic_base_url: str | None = None
    cartesia_api_key: str | None = None
    cartesia_voice_id: str | None = None
    cartesia_base_url: str = "https://api.cartesia.ai"
    stt_api_key: str | None = None
    stt_base_url: str | None = None
    # When set, POST /api/offer needs "Authorization: Bearer <token>" and the
    # datachannel "auth" message must carry it.
    auth_token: str | None = None

    def __repr__(self) -> str:
        shown = ", ".join(f"{f.name}={'set' if getattr(self, f.name) else None}" for f in fields(self))
        return f"Secrets({shown})"


@dataclass(frozen=True)
class Config:
    server: ServerConfig = field(default_factory=ServerConfig)
    webrtc: WebRTCConfig = field(default_factory=WebRTCConfig)
    vad: VADConfig = field(default_factory=VADConfig)
    audio: AudioConfig = field(default_factory=AudioConfig)
    stt: STTConfig = field(default_factory=STTConfig)
    llm: LLMConfig = field(default_factory=LLMConfig)
    tts: TTSConfig = field(default_factory=TTSConfig)
    scripted: ScriptedConfig = field(default_factory=ScriptedConfig)
    knowledge: KnowledgeConfig = field(default_factory=KnowledgeConfig)
    secrets: Secrets = field(default_factory=Secrets)
    root: Path = ROOT

    def path(self, value: str) -> Path:
        """A path from the config, relative to the repository root."""
        p = Path(value).expanduser()
        return p if p.is_absolute() else self.root / p

    def resolved(self) -> Config:
        """``auto`` providers replaced by what the secrets allow."""
        s = self.secrets
        stt, llm, tts = self.stt.provider, self.llm.provider, self.tts.provider
        if stt == "auto":
            stt = "cartesia" if s.cartesia_api_key else "local"
        if llm == "auto":
            llm = "anthropic" if s.anthropic_api_key else "concierge"
        if tts == "auto":
            tts = "cartesia" if s.cartesia_api_key and s.cartesia_voice_id else "espeak"
        return replace(
            self,
            stt=replace(self.stt, provider=stt),
            llm=replace(self.llm, provider=llm),
            tts=replace(self.tts, provider=tts),
        )


_SECTIONS = {f.name: f.type for f in fields(Config) if f.name not in ("secrets", "root")}


def _coerce(section: str, key: str, value: Any, kind: Any) -> Any:
    kind = str(kind)
    where = f"[{section}] {key}"
    try:
        if kind == "int":
            if isinstance(value, bool):
                raise TypeError
            return int(value)
        if kind == "float":
            return float(value)
        if kind == "str":
            if not isinstance(value, str):
                raise TypeError
            return value
        if "IceServer" in kind:
            return tuple(_ice_server(v) for v in value)
        if kind.startswith("tuple"):
            if isinstance(value, str):
                value = [v.strip() for v in value.split(",") if v.strip()]
            return tuple(str(v) for v in value)
    except (TypeError, ValueError, KeyError) as exc:
        raise ConfigError(f"{where}: {value!r} is not a valid {kind}") from exc
    return value


def _ice_server(value: Any) -> IceServer:
    urls = value["urls"]
    return IceServer(
        urls=(urls,) if isinstance(urls, str) else tuple(urls),
        username=value.get("username"),
        credential=value.get("credential"),
    )


def _section(name: str, cls: type, raw: Mapping[str, Any], env: Mapping[str, str]) -> Any:
    known = {f.name: f for f in fields(cls)}
    values: dict[str, Any] = {}
    for key, value in raw.items():
        if key not in known:
            raise ConfigError(f"[{name}] {key}: unknown key (known: {', '.join(known)})")
        values[key] = _coerce(name, key, value, known[key].type)
    for key, f in known.items():
        env_name = f"SANDRA_{name}_{key}".upper()
        if env_name in env:
            values[key] = _coerce(name, key, env[env_name], f.type)
    return cls(**values)


def load(path: str | Path | None = None, env: Mapping[str, str] | None = None, **overrides: Any) -> Config:
    """Read ``path`` (TOML) and ``env``; ``overrides`` are per-section dicts for tests."""
    env = {} if env is None else env
    raw: dict[str, Any] = {}
    root = ROOT
    if path is not None:
        path = Path(path)
        try:
            raw = tomllib.loads(path.read_text())
        except FileNotFoundError as exc:
            raise ConfigError(f"config file not found: {path}") from exc
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"{path}: {exc}") from exc
        root = path.resolve().parent
    for name, section in overrides.items():
        raw.setdefault(name, {}).update(section)
    unknown = set(raw) - set(_SECTIONS)
    if unknown:
        raise ConfigError(f"unknown config section(s): {', '.join(sorted(unknown))}")

    env = dict(env)
    aliases = {
        "SANDRA_HOST": "SANDRA_SERVER_HOST",
        "SANDRA_PORT": "SANDRA_SERVER_PORT",
        "MAX_SESSIONS": "SANDRA_SERVER_MAX_SESSIONS",
        "SESSION_TTL": "SANDRA_SERVER_SESSION_TTL_S",
    }
    for alias, full in aliases.items():
        if alias in env and full not in env:
            env[full] = env[alias]

    sections = {
        name: _section(name, eval_type(kind), raw.get(name, {}), env) for name, kind in _SECTIONS.items()
    }
    secrets = Secrets(
        anthropic_api_key=env.get("ANTHROPIC_API_KEY") or None,
        anthropic_base_url=env.get("ANTHROPIC_BASE_URL") or None,
        cartesia_api_key=env.get("CARTESIA_API_KEY") or None,
        cartesia_voice_id=env.get("CARTESIA_VOICE_ID") or None,
        cartesia_base_url=env.get("CARTESIA_BASE_URL") or Secrets.cartesia_base_url,
        stt_api_key=env.get("STT_API_KEY") or env.get("OPENAI_API_KEY") or None,
        stt_base_url=env.get("STT_BASE_URL") or None,
        auth_token=env.get("SANDRA_AUTH_TOKEN") or None,
    )
    if not sections["stt"].model_cache:  # the [stt] model cache: XDG base directory spec
        cache_home = env.get("XDG_CACHE_HOME") or str(Path(env.get("HOME") or Path.home()) / ".cache")
        sections["stt"] = replace(sections["stt"], model_cache=str(Path(cache_home) / "sandra" / "models"))
    config = Config(**sections, secrets=secrets, root=root)
    _validate(config)
    return config


def eval_type(kind: Any) -> type:
    return globals()[kind] if isinstance(kind, str) else kind


def _validate(config: Config) -> None:
    vad = config.vad
    if not 0 <= vad.aggressiveness <= 3:
        raise ConfigError("[vad] aggressiveness must be 0, 1, 2 or 3")
    for key in ("start_ms", "end_silence_ms", "barge_in_ms", "pre_roll_ms"):
        value = getattr(vad, key)
        if value < 0 or value % 20:
            raise ConfigError(f"[vad] {key} must be a non-negative multiple of 20 ms (got {value})")
    if config.server.max_sessions < 1:
        raise ConfigError("[server] max_sessions must be at least 1")
    if config.audio.outbound_lead_ms < 20:
        raise ConfigError("[audio] outbound_lead_ms must be at least 20")
