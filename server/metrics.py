"""Per-turn latency metrics: Prometheus histograms plus recent percentiles for /api/metrics.

One :class:`Metrics` per app (its own ``CollectorRegistry``, no global state).
"""

from __future__ import annotations

import asyncio
import os
import threading
import time
from collections import deque
from collections.abc import Mapping

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

from .events import BargeIn, Event, Resume, TurnMetrics

# The one list of per-turn latency metrics: Prometheus histograms, /api/metrics, the
# ``metrics`` event and both pages (served to them as /metric-names.js) all use it.
# name -> (English label, Spanish label) as the pages show them.
LATENCY_LABELS: dict[str, tuple[str, str]] = {
    "eos_ms": ("end of turn", "fin de turno"),
    "stt_ms": ("STT", "STT"),
    "llm_ttft_ms": ("LLM", "LLM"),
    "tts_ttfb_ms": ("voice", "voz"),
    "voice_to_voice_ms": ("voice to voice", "voz a voz"),
    "text_to_voice_ms": ("text to voice", "texto a voz"),
    "barge_in_ms": ("stop", "parada"),
}
LATENCIES = tuple(LATENCY_LABELS)
_BUCKETS_MS = (5, 10, 20, 40, 60, 80, 100, 150, 200, 300, 400, 500, 600, 800, 1000, 1500, 2000, 3000, 5000)


class Metrics:
    def __init__(self, window: int = 500) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self._histograms = {
            name: Histogram(
                f"sandra_{name[:-3]}_milliseconds",
                f"Per-turn {name[:-3].replace('_', ' ')} latency in milliseconds",
                buckets=_BUCKETS_MS,
                registry=self.registry,
            )
            for name in LATENCIES
        }
        self._recent: dict[str, deque[float]] = {name: deque(maxlen=window) for name in LATENCIES}
        self.turns = Counter("sandra_turns", "Turns answered", ["kind"], registry=self.registry)
        self.barge_ins = Counter("sandra_barge_ins", "Replies cut by a barge-in", ["source"], registry=self.registry)
        self.tentative_barge_ins = Counter(
            "sandra_tentative_barge_ins", "Voice over Sandra that paused her", registry=self.registry
        )
        self.resumes = Counter("sandra_resumes", "Replies resumed after a false alarm", registry=self.registry)
        self.provider_errors = Counter(
            "sandra_provider_errors", "Provider failures turned into apologies", ["role", "provider"],
            registry=self.registry,
        )
        # Our own defects, contained: a turn that raised, a message handler that raised,
        # a media task that died. ``part``: turn | message | core | inbound | outbound.
        self.failures = Counter("sandra_failures", "Internal failures contained", ["part"], registry=self.registry)
        self.calls = Counter("sandra_calls", "Calls answered", registry=self.registry)
        self.connections = Gauge("sandra_connections", "Open peer connections", registry=self.registry)

    def observe_event(self, event: Event) -> None:
        """Count what a server event reports (every event a call sends passes here)."""
        match event:
            case TurnMetrics():
                self.observe_turn(event.values)
                if event.interrupted is False and event.kind is not None:
                    self.turns.labels(event.kind).inc()
            case BargeIn(tentative=True):
                self.tentative_barge_ins.inc()
            case BargeIn():
                self.barge_ins.labels(event.source).inc()
            case Resume():
                self.resumes.inc()

    def observe_turn(self, values: Mapping[str, float | None]) -> None:
        for name in LATENCIES:
            value = values.get(name)
            if value is not None:
                self._histograms[name].observe(value)
                self._recent[name].append(value)

    def latency_summary(self) -> dict[str, dict[str, float | int | None]]:
        out: dict[str, dict[str, float | int | None]] = {}
        for name, values in self._recent.items():
            ordered = sorted(values)
            out[name] = {
                "count": len(ordered),
                "p50": _percentile(ordered, 50),
                "p95": _percentile(ordered, 95),
            }
        return out

    def turn_taking(self) -> dict[str, int]:
        """Counts for /api/metrics: tentative barge-ins, confirmed (voice) ones, resumes."""
        return {
            "tentative_barge_ins": int(self.tentative_barge_ins._value.get()),
            "confirmed_barge_ins": int(self.barge_ins.labels("voice")._value.get()),
            "client_barge_ins": int(self.barge_ins.labels("client")._value.get()),
            "resumes": int(self.resumes._value.get()),
        }

    def prometheus(self) -> bytes:
        return generate_latest(self.registry)


def _percentile(ordered: list[float], q: float) -> float | None:
    if not ordered:
        return None
    k = (len(ordered) - 1) * q / 100
    lo = int(k)
    hi = min(lo + 1, len(ordered) - 1)
    return round(ordered[lo] + (ordered[hi] - ordered[lo]) * (k - lo), 1)


def names_module() -> str:
    """The latency names as an ES module for the pages (``/metric-names.js``)."""
    rows = ",\n".join(
        f'  {{ name: "{name}", en: "{en}", es: "{es}" }}' for name, (en, es) in LATENCY_LABELS.items()
    )
    return f"// Generated by the server from server/metrics.py LATENCY_LABELS.\nexport const LATENCIES = [\n{rows},\n];\n"


def now_ms() -> int:
    return int(time.time() * 1000)


class LoopMonitor:
    """Event-loop lag: how late a 50 ms sleep wakes up. Audio pacing suffers beyond ~20 ms."""

    def __init__(self, interval_s: float = 0.05, window: int = 1200) -> None:
        self._interval = interval_s
        self._lags: deque[tuple[float, float]] = deque(maxlen=window)  # (monotonic time, lag ms)

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            started = loop.time()
            await asyncio.sleep(self._interval)
            now = loop.time()
            self._lags.append((now, max(0.0, (now - started - self._interval) * 1000)))

    def summary(self, last_s: float | None = None) -> dict[str, float | int | None]:
        """Lag percentiles over the window, or over its last ``last_s`` seconds."""
        since = -1.0 if last_s is None else time.monotonic() - last_s
        ordered = sorted(lag for at, lag in self._lags if at >= since)
        return {
            "n": len(ordered),
            "p50": _percentile(ordered, 50),
            "p99": _percentile(ordered, 99),
            "max": round(ordered[-1], 1) if ordered else None,
        }


def process_stats() -> dict[str, float | int]:
    """This process's footprint, for spotting leaks (see bench/soak.py)."""
    stats: dict[str, float | int] = {"threads": threading.active_count()}
    try:
        with open("/proc/self/statm") as f:
            stats["rss_mb"] = round(int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20, 1)
        stats["fds"] = len(os.listdir("/proc/self/fd"))
        with open("/proc/self/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        stats["cpu_s"] = round((int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK"), 2)
    except OSError:
        pass
    try:
        stats["tasks"] = len(asyncio.all_tasks())
    except RuntimeError:
        pass
    return stats
