"""Run every benchmark: ``python -m bench`` (``make bench``), a few minutes on 2 cores.

    .venv/bin/python -m bench [--quick]

Each benchmark also runs on its own (``python -m bench.latency``, ``bench.load``,
``bench.soak``, ``bench.offline_providers``, ``bench.turns``) and writes JSON under bench/results/.
``--quick`` runs each with tiny parameters (the tests do this, so they don't rot).
"""

from __future__ import annotations

import argparse
import subprocess
import sys

from .common import ROOT

FULL = [
    ["bench.latency"],
    ["bench.load"],
    ["bench.soak"],
    ["bench.offline_providers"],
    ["bench.turns"],
]
QUICK = [
    ["bench.latency", "--turns", "1", "--barge-ins", "1", "--onsets", "1"],
    ["bench.load", "--calls", "1", "--duration", "1"],
    ["bench.soak", "--calls", "4", "--warmup", "2"],
    ["bench.offline_providers", "--repeat", "1"],
    ["bench.turns", "--quick"],
]


def main() -> int:
    parser = argparse.ArgumentParser(description="run all benchmarks")
    parser.add_argument("--quick", action="store_true", help="tiny parameters, to check they still run")
    args = parser.parse_args()
    failed = 0
    for command in QUICK if args.quick else FULL:
        print(f"\n== python -m {' '.join(command)}", flush=True)
        failed += subprocess.run([sys.executable, "-m", *command], cwd=ROOT).returncode != 0
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
