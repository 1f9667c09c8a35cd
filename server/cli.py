"""The `tickwire` command: serve | bots | sim | replay."""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence

log = logging.getLogger("tickwire")


def _positive_int(text: str) -> int:
    value = int(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"{value} is not a positive integer")
    return value


def add_serve(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("serve", help="run the game server")
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    p.add_argument("--port", type=int, default=8080, help="port (default 8080)")
    p.add_argument("--params", metavar="FILE", help="sim parameters TOML (default: built in)")
    p.add_argument("--tick-rate", type=_positive_int, metavar="HZ",
                   help="ticks per second, 10-128 (overrides world.tick_rate)")
    p.add_argument("--max-frame-bytes", type=_positive_int, default=4096,
                   help="largest inbound WebSocket frame (default 4096)")
    p.add_argument("--stall-timeout", type=float, default=5.0, metavar="S",
                   help="close a client whose send buffer stays full this long (default 5)")
    p.add_argument("--ping-timeout", type=float, default=5.0, metavar="S",
                   help="close a client that answers no ping for this long (default 5)")
    p.add_argument("--log-level", default="info")
    p.add_argument("--plain-logs", action="store_true", help="human-readable logs, not JSON")
    p.set_defaults(func=run_serve)


def run_serve(args: argparse.Namespace) -> int:
    import uvloop
    from aiohttp import web

    from server.gateway import GatewayConfig, build_app
    from server.logs import setup_logging
    from server.session import SessionLimits
    from sim.params import ParamsError, load_params

    setup_logging(args.log_level, json_lines=not args.plain_logs)
    try:
        params = load_params(args.params)
        if args.tick_rate is not None:
            params = params.with_changes({"world.tick_rate": args.tick_rate})
    except (ParamsError, OSError) as exc:
        print(f"tickwire serve: {exc}", file=sys.stderr)
        return 2
    limits = SessionLimits.for_tick_rate(
        params.tick_rate, max_frame_bytes=args.max_frame_bytes,
        stall_timeout_s=args.stall_timeout, ping_timeout_s=args.ping_timeout)
    app = build_app(GatewayConfig(params=params, limits=limits))
    log.info("serving", extra={"url": f"http://{args.host}:{args.port}/",
                               "tick_rate": params.tick_rate})
    web.run_app(app, host=args.host, port=args.port, print=None,
                loop=uvloop.new_event_loop(), access_log=None)
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="tickwire", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    add_serve(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
