"""``python -m server --workers N``: the parent process.

It starts N worker processes (each ``server.app.serve`` on the same port with
SO_REUSEPORT) and starts a new one whenever one dies, until it is told to stop: SIGTERM or
SIGINT is forwarded to each worker once that worker can handle it (a worker still
importing gets it when it is ready, instead of dying from it); each drains its own calls
(``[server] drain_timeout_s``), and the parent waits for them all.

N > 1 needs Redis, or the workers would each see only their own calls. Without
``[cluster] redis_url`` / ``REDIS_URL`` the parent starts a private ``redis-server`` on
127.0.0.1 (a free port, no persistence, ended with the parent) when one is installed,
and refuses to start otherwise; ``REDIS_ENABLED=false`` with N > 1 is refused too.
"""

from __future__ import annotations

import ctypes
import logging
import multiprocessing
import multiprocessing.connection
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import replace
from typing import Any

from ..config import Config

log = logging.getLogger("sandra.supervisor")

RESTART_BACKOFF_S = 1.0  # a worker that dies this soon after starting is restarted after a pause


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _die_with_parent() -> None:  # pragma: no cover - runs in the child before exec
    try:
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except OSError:
        pass


class PrivateRedis:
    """A ``redis-server`` of our own on 127.0.0.1: no persistence, no config file. Also
    what the tests use (``stop()`` and ``start()`` again on the same port = a restart)."""

    def __init__(self, port: int | None = None, binary: str | None = None) -> None:
        self.binary = binary or shutil.which("redis-server") or "redis-server"
        self.port = port or _free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self._proc: subprocess.Popen[bytes] | None = None

    @staticmethod
    def available() -> bool:
        return shutil.which("redis-server") is not None

    def start(self, timeout_s: float = 10.0) -> PrivateRedis:
        cmd = [self.binary, "--bind", "127.0.0.1", "--port", str(self.port), "--save", "", "--appendonly", "no",
               "--protected-mode", "yes", "--daemonize", "no", "--loglevel", "warning", "--dir", "/tmp"]
        self._proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                      preexec_fn=_die_with_parent)
        deadline = time.monotonic() + timeout_s
        while not self.ping():
            if self._proc.poll() is not None:
                raise RuntimeError(f"redis-server exited: {self._proc.stderr.read().decode()[-500:]}")  # type: ignore[union-attr]
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"redis-server did not answer on port {self.port}")
            time.sleep(0.02)
        return self

    def ping(self) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=0.5) as s:
                s.sendall(b"PING\r\n")
                return s.recv(16).startswith(b"+PONG")
        except OSError:
            return False

    def stop(self) -> None:
        proc, self._proc = self._proc, None
        if proc is not None and proc.poll() is None:
            proc.kill()
            proc.wait(5)
        if proc is not None and proc.stderr is not None:
            proc.stderr.close()

    def __enter__(self) -> PrivateRedis:
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()


def _worker(config: Config, ready: Any) -> None:
    from ..app import serve

    serve(config, True, ready)


def run(config: Config, workers: int) -> int:
    """Run ``workers`` worker processes until told to stop; returns the exit code."""
    private: PrivateRedis | None = None
    if not config.cluster.active:
        if config.cluster.enabled == "false":
            print("sandra: --workers > 1 needs Redis, and REDIS_ENABLED=false turns it off", file=sys.stderr)
            return 2
        if not PrivateRedis.available():
            print("sandra: --workers > 1 needs Redis: set REDIS_URL (or [cluster] redis_url), or install "
                  "redis-server so that Sandra can start a private one", file=sys.stderr)
            return 2
        private = PrivateRedis().start()
        config = replace(config, cluster=replace(config.cluster, redis_url=private.url, enabled="true"))
        print(f"Sandra: started a private redis-server on 127.0.0.1:{private.port} for {workers} workers", flush=True)

    context = multiprocessing.get_context("spawn")
    procs: list[Any] = []
    ready: dict[int, Any] = {}  # pid -> the worker's "a signal would be handled now" event
    started: dict[int, float] = {}
    stopping: list[int] = []  # the signal we were told to stop with

    def spawn() -> Any:
        event = context.Event()
        proc = context.Process(target=_worker, args=(config, event), daemon=True)
        proc.start()
        started[proc.pid] = time.monotonic()
        ready[proc.pid] = event
        return proc

    signalled: set[int] = set()

    def forward(proc: Any, signum: int) -> None:
        if proc.pid not in signalled and proc.is_alive() and ready[proc.pid].is_set():
            signalled.add(proc.pid)
            os.kill(proc.pid, signum)

    def stop(signum: int, frame: object) -> None:
        stopping.append(signum)
        for proc in procs:
            forward(proc, signum)

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    try:
        procs.extend(spawn() for _ in range(workers))
        while not stopping:
            multiprocessing.connection.wait([p.sentinel for p in procs], timeout=0.5)
            for i, proc in enumerate(procs):
                if proc.is_alive() or stopping:
                    continue
                lived = time.monotonic() - started.pop(proc.pid, 0.0)
                print(f"sandra: worker {proc.pid} exited ({proc.exitcode}); starting a new one", file=sys.stderr,
                      flush=True)
                if lived < 5:
                    time.sleep(RESTART_BACKOFF_S)
                procs[i] = spawn()
        for proc in procs:  # a worker that was still starting gets the signal once it can drain
            while proc.is_alive() and not ready[proc.pid].wait(0.2):
                pass
            forward(proc, stopping[-1])
        for proc in procs:
            proc.join()
    finally:
        if private is not None:
            private.stop()
    return max((p.exitcode or 0) for p in procs) if procs else 0
