"""``python -m server [--config PATH] [--host H] [--port P]``"""

from __future__ import annotations

import argparse
import logging
import os
import sys

from aiohttp import web

from . import config as configuration
from .app import create_app
from .errors import ConfigError


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m server", description="Sandra, the realtime voice concierge")
    parser.add_argument("--config", default=os.environ.get("SANDRA_CONFIG", "config.toml"), help="config.toml path")
    parser.add_argument("--host", help="listen address (default from [server] host)")
    parser.add_argument("--port", type=int, help="listen port (default from [server] port)")
    args = parser.parse_args(argv)
    env = dict(os.environ)
    if args.host:
        env["SANDRA_SERVER_HOST"] = args.host
    if args.port:
        env["SANDRA_SERVER_PORT"] = str(args.port)
    try:
        config = configuration.load(args.config, env)
        logging.basicConfig(
            level=config.server.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
        )
        app = create_app(config)
    except ConfigError as exc:
        print(f"sandra: configuration error: {exc}", file=sys.stderr)
        return 2
    print(f"Sandra listening on http://{config.server.host}:{config.server.port}", flush=True)
    web.run_app(app, host=config.server.host, port=config.server.port, print=None)
    return 0


if __name__ == "__main__":
    sys.exit(main())
