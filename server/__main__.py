"""``python -m server [--config PATH] [--host H] [--port P] [--workers N]``

``python -m server [--config PATH] guest-link --from DAY --to DAY [--name N] ...``: a guest
link and its QR code (see :mod:`server.security.links`).
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import signal
import sys
import time

from . import config as configuration
from .errors import ConfigError


def guest_link(config_path: str, argv: list[str]) -> int:
    from .security import links

    try:
        config = configuration.load(config_path, dict(os.environ))
    except ConfigError as exc:
        print(f"sandra: configuration error: {exc}", file=sys.stderr)
        return 2
    return links.main(config, argv, now=time.time())


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if "guest-link" in argv:
        at = argv.index("guest-link")
        before = argparse.ArgumentParser(prog="python -m server")
        before.add_argument("--config", default=os.environ.get("SANDRA_CONFIG", "config.toml"))
        return guest_link(before.parse_args(argv[:at]).config, argv[at + 1:])
    parser = argparse.ArgumentParser(prog="python -m server", description="Sandra, the realtime voice concierge")
    parser.add_argument("--config", default=os.environ.get("SANDRA_CONFIG", "config.toml"), help="config.toml path")
    parser.add_argument("--host", help="listen address (default from [server] host)")
    parser.add_argument("--port", type=int, help="listen port (default from [server] port)")
    parser.add_argument(
        "--workers", type=int, default=1,
        help="server processes sharing the port (SO_REUSEPORT); each owns its own calls and max_sessions",
    )
    args = parser.parse_args(argv)
    env = dict(os.environ)
    if args.host:
        env["SANDRA_SERVER_HOST"] = args.host
    if args.port:
        env["SANDRA_SERVER_PORT"] = str(args.port)
    try:
        config = configuration.load(args.config, env)
        config.resolved()
    except ConfigError as exc:
        print(f"sandra: configuration error: {exc}", file=sys.stderr)
        return 2
    from .app import serve  # here: `guest-link` and a configuration error need none of the media stack

    print(f"Sandra listening on http://{config.server.host}:{config.server.port}", flush=True)
    if args.workers <= 1:
        try:
            serve(config)
        except ConfigError as exc:
            print(f"sandra: configuration error: {exc}", file=sys.stderr)
            return 2
        return 0

    context = multiprocessing.get_context("spawn")
    ready = [context.Event() for _ in range(args.workers)]
    workers = [context.Process(target=serve, args=(config, True, r), daemon=True) for r in ready]
    requested: list[int] = []

    def forward(worker: multiprocessing.process.BaseProcess, signum: int) -> None:
        if worker.pid is not None and worker.is_alive():
            os.kill(worker.pid, signum)

    def stop(signum: int, frame: object) -> None:
        requested.append(signum)
        for worker, started in zip(workers, ready):  # each worker drains its own calls
            if started.is_set():
                forward(worker, signum)

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    for worker in workers:
        worker.start()
    for worker, started in zip(workers, ready):
        while not started.wait(0.2) and worker.is_alive():
            pass  # a worker still importing: a signal now would kill it instead of draining it
        if requested:
            forward(worker, requested[-1])
    for worker in workers:
        worker.join()
    codes = [w.exitcode or 0 for w in workers]
    for number, code in enumerate(codes):
        if code != 0:
            print(f"sandra: worker {number} exited with {code}", file=sys.stderr)
    return 0 if all(c == 0 for c in codes) else 1


if __name__ == "__main__":
    sys.exit(main())
