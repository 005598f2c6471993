"""``python -m server [--config PATH] [--host H] [--port P] [--workers N]``"""

from __future__ import annotations

import argparse
import os
import sys

from . import config as configuration
from .app import serve
from .errors import ConfigError


def main(argv: list[str] | None = None) -> int:
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
