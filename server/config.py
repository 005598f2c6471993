"""Configuration: config.toml, then environment overrides, read once into frozen dataclasses.

Nothing else in Sandra reads ``os.environ``: :func:`load` is handed the environment and
everything downstream is handed the :class:`Config` it returns.

Environment overrides:

- ``SANDRA_HOST``, ``SANDRA_PORT``; ``MAX_SESSIONS``, ``SESSION_TTL`` (seconds);
- ``SANDRA_<SECTION>_<KEY>`` for any scalar key, e.g. ``SANDRA_VAD_END_SILENCE_MS=400``;
- secrets: ``SANDRA_AUTH_TOKEN``, ``SANDRA_JWT_SECRET``, ``SANDRA_ADMIN_TOKEN``, ``SANDRA_TURN_SECRET``, ``ANTHROPIC_API_KEY``, ``CARTESIA_API_KEY``, ``CARTESIA_VOICE_ID``,
  ``STT_API_KEY`` (or ``OPENAI_API_KEY``);
- vendor endpoints: ``ANTHROPIC_BASE_URL``, ``CARTESIA_BASE_URL``, ``STT_BASE_URL``;
- the cluster: ``REDIS_URL``, ``REDIS_ENABLED`` (``auto``/``true``/``false``), ``SANDRA_RESUME_SECRET``.

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
LOOPBACK_HOSTS = ("127.0.0.1", "::1", "localhost")
MIN_JWT_SECRET_BYTES = 32


@dataclass(frozen=True)
class ServerConfig:
    host: str = "127.0.0.1"
    port: int = 8080
    max_sessions: int = 50
    session_ttl_s: float = 3600.0
    # A call with no ping and no inbound audio for this long is a dead peer.
    heartbeat_timeout_s: float = 5.0
    # A session whose peer connection is not connected by then is closed, freeing its slot.
    connect_timeout_s: float = 10.0
    client_dir: str = "client"
    log_level: str = "INFO"
    # Origins allowed to call /api/* from a browser (CORS); empty: the same origin only.
    cors_origins: tuple[str, ...] = ()
    # Reverse proxies (addresses or CIDRs) whose X-Forwarded-For names the client.
    trusted_proxies: tuple[str, ...] = ()
    # SIGTERM/SIGINT: calls in progress may go on this long before they are ended.
    drain_timeout_s: float = 20.0


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
    # TURN servers given short-lived credentials signed with SANDRA_TURN_SECRET.
    turn_urls: tuple[str, ...] = ()
    turn_ttl_s: float = 3600.0


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


# [stt] window values (server/providers/whisper_window.py).
STT_WINDOWS = ("short", "full")

# [turn] detector values (server/turn/detector.py implements them).
TURN_DETECTORS = ("smart", "silence")


@dataclass(frozen=True)
class TurnConfig:
    """End of turn and two-step barge-in (issue 10; server/turn/)."""

    detector: str = "smart"  # smart (audio model + words) | silence ([vad] end_silence_ms alone)
    # Silence after which the detector is first asked; the turn ends at max_silence_ms whatever it says.
    min_silence_ms: int = 200
    max_silence_ms: int = 2000
    # Voice over Sandra longer than this confirms a barge-in even without words.
    confirm_ms: int = 1200
    # After a false alarm (noise, backchannel) Sandra resumes within this of its end.
    resume_ms: int = 400
    # Smart Turn probability at or above which the audio says "complete".
    threshold: float = 0.5
    # The Smart Turn v3.2 ONNX file (scripts/fetch-smart-turn.py puts it there).
    # Empty: server/turn/data/smart-turn-v3.2-cpu.onnx, where `make` fetches it.
    model: str = ""
    # onnxruntime intra-op threads per inference.
    threads: int = 1
    # Judge again after this much more silence (0: never; measured: more silence makes
    # unfinished turns sound finished, see README "Turn-taking").
    rejudge_ms: int = 0
    # Silence that ends a sound over Sandra (then: backchannel or real interruption?).
    sound_end_ms: int = 100
    # Start the reply on the speculative transcript, its text and audio held back until the
    # turn ends with that same transcript (else it is thrown away unheard).
    preemptive: bool = True


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
    # local: "short" = Whisper's encoder hears the utterance plus 4 s of silence (about 4x
    # faster, server/providers/whisper_window.py); "full" = its 30 s window, always.
    window: str = "short"
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
    # Fault injection for outside tests: "" (none) | "stt" | "llm" | "tts" (that provider
    # raises its ProviderError) | "bug" (the LLM raises RuntimeError after its first piece)
    # | "handler" (the call's handler of a typed message raises RuntimeError), on the
    # caller's turns listed in fault_turns (counted from 1, the greeting not counted).
    fault: str = ""
    fault_turns: tuple[int, ...] = ()
    # Utterances shorter than short_ms (0: none) are transcribed as short_transcript
    # ("" = no words: a cough; "Uh-huh." = a backchannel), as a recogniser would.
    short_ms: float = 0.0
    short_transcript: str = ""


FAULTS = ("", "stt", "llm", "tts", "bug", "handler")


@dataclass(frozen=True)
class AuthConfig:
    # "open": anyone who reaches the server may call; "token": POST /api/offer needs a guest
    # link (JWT signed with SANDRA_JWT_SECRET); "auto": open on loopback, token otherwise.
    mode: str = "auto"
    # The base of guest links (https://sandra.example.com); empty: http://host:port.
    base_url: str = ""


@dataclass(frozen=True)
class LimitsConfig:
    offers_per_minute: float = 30.0  # per client IP, every POST /api/offer counts
    messages_per_second: float = 20.0  # datachannel messages per call, burst twice that
    messages_per_minute: float = 12.0  # typed messages per call (each one is an LLM turn)
    flood_close_s: float = 10.0  # sustained flooding for this long ends the call


@dataclass(frozen=True)
class KnowledgeConfig:
    file: str = "knowledge.toml"


@dataclass(frozen=True)
class RecordingConfig:
    # Opt-in: stereo Ogg/Opus + JSON transcript per call under dir/<YYYY-MM-DD>/.
    enabled: bool = False
    dir: str = "recordings"
    keep_days: float = 30.0


@dataclass(frozen=True)
class ClusterConfig:
    """Several workers (processes, machines) sharing one Redis; see server/cluster/."""

    # redis://host:port/db (REDIS_URL). Empty: one process, everything in memory.
    redis_url: str = ""
    # REDIS_ENABLED: auto (on when redis_url is set) | true | false
    enabled: str = "auto"
    # A worker refreshes its registry entry this often; its sessions vanish after ttl.
    heartbeat_s: float = 1.0
    heartbeat_ttl_s: float = 3.0
    # Longest a Redis command may take before an offer is refused (503 cluster_unavailable).
    redis_timeout_s: float = 1.0
    key_prefix: str = "sandra"
    # DELETE /api/sessions/{id} on another worker: how long to wait for the owner.
    hang_up_timeout_s: float = 5.0

    @property
    def active(self) -> bool:
        return self.enabled != "false" and bool(self.redis_url)


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
    # HS256 key of guest links (at least 32 bytes); needed in [auth] mode "token".
    jwt_secret: str | None = None
    # When set, DELETE /api/sessions/{id} and POST /api/guest-links need it as a bearer token.
    admin_token: str | None = None
    # coturn's static-auth-secret: TURN credentials for [webrtc] turn_urls.
    turn_secret: str | None = None
    # Signs resume tokens (SANDRA_RESUME_SECRET); unset: a random secret shared through
    # Redis (or per process without it).
    resume_secret: str | None = None

    def __repr__(self) -> str:
        shown = ", ".join(f"{f.name}={'set' if getattr(self, f.name) else None}" for f in fields(self))
        return f"Secrets({shown})"


@dataclass(frozen=True)
class Config:
    server: ServerConfig = field(default_factory=ServerConfig)
    webrtc: WebRTCConfig = field(default_factory=WebRTCConfig)
    vad: VADConfig = field(default_factory=VADConfig)
    turn: TurnConfig = field(default_factory=TurnConfig)
    audio: AudioConfig = field(default_factory=AudioConfig)
    stt: STTConfig = field(default_factory=STTConfig)
    llm: LLMConfig = field(default_factory=LLMConfig)
    tts: TTSConfig = field(default_factory=TTSConfig)
    scripted: ScriptedConfig = field(default_factory=ScriptedConfig)
    knowledge: KnowledgeConfig = field(default_factory=KnowledgeConfig)
    recording: RecordingConfig = field(default_factory=RecordingConfig)
    auth: AuthConfig = field(default_factory=AuthConfig)
    limits: LimitsConfig = field(default_factory=LimitsConfig)
    cluster: ClusterConfig = field(default_factory=ClusterConfig)
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
        if kind == "bool":
            if isinstance(value, str) and value.strip().lower() in ("1", "true", "yes", "on", "0", "false", "no", "off"):
                return value.strip().lower() in ("1", "true", "yes", "on")
            if not isinstance(value, bool):
                raise TypeError
            return value
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
            if kind.startswith("tuple[int"):
                if any(isinstance(v, bool) for v in value):
                    raise TypeError
                return tuple(int(v) for v in value)
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
        "REDIS_URL": "SANDRA_CLUSTER_REDIS_URL",
        "REDIS_ENABLED": "SANDRA_CLUSTER_ENABLED",
    }
    for alias, full in aliases.items():
        if alias in env and full not in env:
            env[full] = env[alias]
    if "SANDRA_CLUSTER_ENABLED" in env:  # REDIS_ENABLED=true|false (also 1/0, yes/no, on/off)
        flag = env["SANDRA_CLUSTER_ENABLED"].strip().lower()
        env["SANDRA_CLUSTER_ENABLED"] = {"1": "true", "yes": "true", "on": "true",
                                         "0": "false", "no": "false", "off": "false"}.get(flag, flag)

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
        jwt_secret=env.get("SANDRA_JWT_SECRET") or None,
        admin_token=env.get("SANDRA_ADMIN_TOKEN") or None,
        turn_secret=env.get("SANDRA_TURN_SECRET") or None,
        resume_secret=env.get("SANDRA_RESUME_SECRET") or None,
    )
    auth = sections["auth"]
    if auth.mode == "auto":
        loopback = sections["server"].host in LOOPBACK_HOSTS
        sections["auth"] = replace(auth, mode="open" if loopback else "token")
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
    _validate_turn(config.turn)
    if config.scripted.fault not in FAULTS:
        raise ConfigError(f"[scripted] fault must be one of {', '.join(repr(f) for f in FAULTS)}")
    if config.server.connect_timeout_s <= 0:
        raise ConfigError("[server] connect_timeout_s must be positive")
    if config.server.max_sessions < 1:
        raise ConfigError("[server] max_sessions must be at least 1")
    if config.recording.keep_days <= 0:
        raise ConfigError("[recording] keep_days must be more than 0")
    if config.audio.outbound_lead_ms < 20:
        raise ConfigError("[audio] outbound_lead_ms must be at least 20")
    if config.auth.mode not in ("open", "token"):
        raise ConfigError(f"[auth] mode must be \"auto\", \"open\" or \"token\" (got {config.auth.mode!r})")
    jwt_secret = config.secrets.jwt_secret
    if jwt_secret is not None and len(jwt_secret.encode()) < MIN_JWT_SECRET_BYTES:
        raise ConfigError(f"SANDRA_JWT_SECRET must be at least {MIN_JWT_SECRET_BYTES} bytes long")
    if config.auth.mode == "token" and jwt_secret is None:
        raise ConfigError(
            f"[auth] mode is \"token\" (the default off loopback): set SANDRA_JWT_SECRET to a random string "
            f"of at least {MIN_JWT_SECRET_BYTES} bytes, or set [auth] mode = \"open\""
        )
    if config.webrtc.turn_urls and not config.secrets.turn_secret:
        raise ConfigError("[webrtc] turn_urls is set: set SANDRA_TURN_SECRET (the TURN server's static-auth-secret)")
    for key in ("offers_per_minute", "messages_per_second", "messages_per_minute"):
        if getattr(config.limits, key) <= 0:
            raise ConfigError(f"[limits] {key} must be positive")
    if config.stt.window not in STT_WINDOWS:
        raise ConfigError(f"[stt] window must be \"short\" or \"full\" (got {config.stt.window!r})")
    cluster = config.cluster
    if cluster.enabled not in ("auto", "true", "false"):
        raise ConfigError(f"[cluster] enabled (REDIS_ENABLED) must be auto, true or false (got {cluster.enabled!r})")
    if cluster.enabled == "true" and not cluster.redis_url:
        raise ConfigError("REDIS_ENABLED=true needs REDIS_URL ([cluster] redis_url)")
    if cluster.redis_url and not cluster.redis_url.startswith(("redis://", "rediss://", "unix://")):
        raise ConfigError("[cluster] redis_url must start with redis://, rediss:// or unix://")
    if not 0 < cluster.heartbeat_s < cluster.heartbeat_ttl_s:
        raise ConfigError("[cluster] heartbeat_ttl_s must be longer than heartbeat_s (and both positive)")


def _validate_turn(turn: TurnConfig) -> None:
    if turn.detector not in TURN_DETECTORS:
        raise ConfigError(f"[turn] detector must be \"smart\" or \"silence\" (got {turn.detector!r})")
    for key in ("min_silence_ms", "max_silence_ms", "confirm_ms", "resume_ms", "rejudge_ms", "sound_end_ms"):
        value = getattr(turn, key)
        if value < 0 or value % 20:
            raise ConfigError(f"[turn] {key} must be a non-negative multiple of 20 ms (got {value})")
    if turn.min_silence_ms <= 0 or turn.sound_end_ms <= 0:
        raise ConfigError("[turn] min_silence_ms and sound_end_ms must be positive")
    if turn.min_silence_ms >= turn.max_silence_ms:
        raise ConfigError(
            f"[turn] min_silence_ms ({turn.min_silence_ms}) must be less than max_silence_ms ({turn.max_silence_ms})"
        )
    if not 0.0 < turn.threshold < 1.0:
        raise ConfigError(f"[turn] threshold must be between 0 and 1 (got {turn.threshold})")
    if not 1 <= turn.threads <= 16:
        raise ConfigError(f"[turn] threads must be between 1 and 16 (got {turn.threads})")
