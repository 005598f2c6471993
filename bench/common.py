"""What every benchmark needs: a server in its own process, statistics, result files.

Servers run as ``python -m server`` (or ``bench.echo_server``) with the ``scripted``
providers and ICE on 127.0.0.1 only; every client peer is a real aiortc peer. Nothing
leaves the machine.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import statistics
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
# Where results go; the tests point this elsewhere so they never overwrite real results.
RESULTS = Path(os.environ.get("SANDRA_BENCH_RESULTS", ROOT / "bench" / "results"))

SCRIPTED_ENV = {
    "SANDRA_STT_PROVIDER": "scripted",
    "SANDRA_LLM_PROVIDER": "scripted",
    "SANDRA_TTS_PROVIDER": "scripted",
    "SANDRA_WEBRTC_HOST_ADDRESSES": "127.0.0.1",
    "SANDRA_SERVER_LOG_LEVEL": "WARNING",
    "SANDRA_SERVER_MAX_SESSIONS": "500",
    # Sandra's own overhead on the fixed silence rule (as the README's earlier numbers);
    # bench/turns.py measures the smart end-of-turn detector through the real pipeline.
    "SANDRA_TURN_DETECTOR": "silence",
}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass(frozen=True)
class Server:
    url: str
    pid: int

    def cpu_seconds(self) -> float:
        """CPU time used so far by the server process and its children (workers)."""
        return sum(_cpu_seconds(pid) for pid in [self.pid, *_children(self.pid)])


def _children(pid: int) -> list[int]:
    out = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[1]) == pid:
                out.append(int(entry.name))
    return out


def _cpu_seconds(pid: int) -> float:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


@contextlib.contextmanager
def server_process(
    env: dict[str, str] | None = None, *, module: str = "server", args: Sequence[str] = ()
) -> Iterator[Server]:
    """Run a server in its own process; yields it (URL, pid). Stopped on exit."""
    port = free_port()
    full_env = {**os.environ, **SCRIPTED_ENV, **(env or {})}
    for key in ("ANTHROPIC_API_KEY", "CARTESIA_API_KEY", "CARTESIA_VOICE_ID", "STT_API_KEY", "OPENAI_API_KEY"):
        full_env.pop(key, None)
    cmd = [sys.executable, "-m", module, "--port", str(port), *args]
    if module == "server":
        cmd += ["--config", str(ROOT / "config.toml")]
    proc = subprocess.Popen(cmd, cwd=ROOT, env=full_env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"{module} exited: {proc.stderr.read().decode()[-2000:]}")  # type: ignore[union-attr]
            try:
                with urllib.request.urlopen(f"{url}/api/health", timeout=1):
                    break
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)
        yield Server(url, proc.pid)
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def get_json(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=5) as response:
        return json.load(response)


def percentiles(values: Sequence[float]) -> dict[str, float | int | None]:
    if not values:
        return {"n": 0, "p50": None, "p95": None, "p99": None, "max": None}
    ordered = sorted(values)

    def q(p: float) -> float:
        k = (len(ordered) - 1) * p / 100
        lo = int(k)
        hi = min(lo + 1, len(ordered) - 1)
        return round(ordered[lo] + (ordered[hi] - ordered[lo]) * (k - lo), 1)

    return {"n": len(ordered), "p50": q(50), "p95": q(95), "p99": q(99), "max": round(ordered[-1], 1),
            "mean": round(statistics.fmean(ordered), 1)}


def commit() -> str:
    try:
        return subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True,
                              text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def save(name: str, data: dict[str, Any]) -> Path:
    RESULTS.mkdir(parents=True, exist_ok=True)
    data = {"benchmark": name, "date": time.strftime("%Y-%m-%d %H:%M:%S"), "commit": commit(),
            "cpus": os.cpu_count(), **data}
    path = RESULTS / f"{name}.json"
    path.write_text(json.dumps(data, indent=2) + "\n")
    return path


def table(rows: list[dict[str, Any]], columns: Sequence[str]) -> str:
    widths = {c: max([len(c), *(len(_fmt(r.get(c))) for r in rows)]) for c in columns}
    lines = ["  ".join(c.ljust(widths[c]) for c in columns), "  ".join("-" * widths[c] for c in columns)]
    lines += ["  ".join(_fmt(r.get(c)).ljust(widths[c]) for c in columns) for r in rows]
    return "\n".join(lines)


def _fmt(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.1f}"
    return str(value)
