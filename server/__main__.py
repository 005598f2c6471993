"""``python -m server [--config PATH] [--host H] [--port P] [--workers N]``

``python -m server [--config PATH] guest-link --from DAY --to DAY [--name N] ...``: a guest
link and its QR code (see :mod:`server.security.links`).
"""

from __future__ import annotations

import argparse
import os
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
        help="server processes sharing the port (SO_REUSEPORT) and one Redis (REDIS_URL, or a private "
             "redis-server when installed); a worker that dies is restarted",
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

    from .cluster import supervisor  # --workers N: restarts dead workers; needs Redis (issue 12)

    return supervisor.run(config, args.workers)


if __name__ == "__main__":
    sys.exit(main())
