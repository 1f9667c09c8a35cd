"""`tickwire replay`: the command line over `server.replay` (check a recording) and
`server.spectate` (serve it to the spectator page). Kept apart from both so that neither
imports the other's caller."""

from __future__ import annotations

import argparse
import asyncio
import sys

from server.recording import RecordingError
from server.replay import run_replay

__all__ = ["add_replay_parser"]


def add_replay_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("replay", help="re-simulate a recording and check its state hashes, "
                                      "or --serve it to a browser")
    p.add_argument("files", nargs="+", metavar="FILE",
                   help="recording files written by `tickwire serve --record DIR`")
    p.add_argument("--serve", action="store_true",
                   help="serve one FILE to the spectator page (play, pause, speed, seek, "
                        "follow a player) at http://HOST:PORT/")
    p.add_argument("--host", default="127.0.0.1", help="with --serve (default 127.0.0.1)")
    p.add_argument("--port", type=int, default=8090, help="with --serve (default 8090)")
    p.add_argument("--request-head-timeout", type=float, default=10.0, metavar="S",
                   help="with --serve: close a connection that has not sent a complete "
                        "request head this long after connecting (default 10)")
    p.set_defaults(func=_run_replay_command)


def _run_replay_command(args: argparse.Namespace) -> int:
    if not args.serve:
        return run_replay(args.files)
    if len(args.files) != 1:
        print("tickwire replay: --serve takes one FILE", file=sys.stderr)
        return 2
    from server.connguard import GuardLimits, default_max_pending, default_pending_per_ip
    from server.metrics import Metrics
    from server.serving import ListenError, ServeOptions, serve_until_signal
    from server.spectate import ReplayTimeline
    from server.spectate_routes import build_replay_app

    try:
        timeline = ReplayTimeline.load(args.files[0])
    except (RecordingError, OSError) as exc:
        print(f"tickwire replay: {exc}", file=sys.stderr)
        return 2
    if timeline.diverged:
        print(f"tickwire replay: {args.files[0]} diverged at {timeline.diverged}; "
              f"serving the ticks before it", file=sys.stderr)
    # The game server's listener (server.serving): a request-head deadline and caps on
    # connections still owing one, so a slowloris cannot hold every descriptor (with
    # web.run_app a connection that never finished its head stayed open for good).
    options = ServeOptions(host=args.host, port=args.port,
                           guard=GuardLimits(head_timeout_s=max(0.1, args.request_head_timeout),
                                             max_pending=default_max_pending(),
                                             max_pending_per_ip=default_pending_per_ip(
                                                 default_max_pending())))

    def listening(listener: object) -> None:
        print(f"serving {args.files[0]} (ticks {timeline.start_tick}..{timeline.end_tick}) "
              f"at http://{args.host}:{args.port}/", flush=True)

    try:
        asyncio.run(serve_until_signal(build_replay_app(timeline), Metrics(), options,
                                       on_listening=listening))
    except ListenError as exc:
        print(f"tickwire replay: {exc}", file=sys.stderr)
        return 2
    return 0
