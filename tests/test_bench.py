"""Every benchmark runs, with tiny parameters, so they don't rot. Numbers are not
asserted here (bench/ prints them); only that each runs and writes its results."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_the_benchmarks_run(tmp_path):
    env = {**os.environ, "SANDRA_BENCH_RESULTS": str(tmp_path)}
    done = subprocess.run([sys.executable, "-m", "bench", "--quick", "--jobs", "4"], cwd=ROOT, capture_output=True,
                          text=True, timeout=600, env=env)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    for name in ("latency", "load", "soak"):
        result = json.loads((tmp_path / f"{name}.json").read_text())
        assert result["benchmark"] == name
    assert "voice-to-voice overhead" in done.stdout
    assert "sandra_max_real_time_calls" in done.stdout
