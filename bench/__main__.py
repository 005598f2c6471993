"""Run every benchmark: ``python -m bench`` (``make bench``), tens of minutes on 2 cores.

    .venv/bin/python -m bench [--quick] [--jobs N]

Each benchmark also runs on its own (``python -m bench.latency``, ``bench.load``,
``bench.soak``, ``bench.offline_providers``, ``bench.turns``, ``bench.stt``, ``bench.eot``,
``bench.recording``, ``bench.security``, ``bench.cluster``) and writes JSON under
bench/results/. ``--quick`` runs the first four with tiny parameters (the tests do this,
so they don't rot). ``--jobs N`` runs N at once (each on its own ports), their outputs
printed whole, in order: the tests use it for their time; the numbers are then measured
on a shared machine and mean nothing.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor

from .common import ROOT

FULL = [
    ["bench.latency"],
    ["bench.load"],
    ["bench.soak"],
    ["bench.offline_providers"],
    ["bench.turns"],
    ["bench.stt"],
    ["bench.eot"],
    ["bench.recording"],
    ["bench.security"],
    ["bench.cluster"],
]
QUICK = [
    ["bench.latency", "--turns", "1", "--barge-ins", "1", "--onsets", "1"],
    ["bench.load", "--calls", "1", "--duration", "1"],
    ["bench.soak", "--calls", "4", "--warmup", "2"],
    ["bench.offline_providers", "--repeat", "1"],
    # Not here, for the suite's time: bench.turns --quick (53 s of real Whisper; the same
    # path runs in tests/test_turn_taking_call.py) and the benchmarks of the other issues
    # (bench.recording has a smoke test of its own in tests/test_recording.py).
]


def main() -> int:
    parser = argparse.ArgumentParser(description="run all benchmarks")
    parser.add_argument("--quick", action="store_true", help="tiny parameters, to check they still run")
    parser.add_argument("--jobs", type=int, default=1, help="benchmarks at once (their numbers then mean nothing)")
    args = parser.parse_args()
    commands = QUICK if args.quick else FULL
    if args.jobs <= 1:
        failed = 0
        for command in commands:
            print(f"\n== python -m {' '.join(command)}", flush=True)
            failed += subprocess.run([sys.executable, "-m", *command], cwd=ROOT).returncode != 0
        return 1 if failed else 0

    def run(command: list[str]) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", *command], cwd=ROOT, capture_output=True, text=True)

    with ThreadPoolExecutor(args.jobs) as pool:
        done = list(pool.map(run, commands))
    for command, result in zip(commands, done):
        print(f"\n== python -m {' '.join(command)} (exit {result.returncode})\n{result.stdout}{result.stderr}", flush=True)
    return 1 if any(r.returncode for r in done) else 0


if __name__ == "__main__":
    sys.exit(main())
