"""`tickwire replay`: the command line over `server.replay` (check a recording) and
`server.spectate` (serve it to the spectator page). Kept apart from both so that neither
imports the other's caller."""

from __future__ import annotations

import argparse
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
    p.set_defaults(func=_run_replay_command)


def _run_replay_command(args: argparse.Namespace) -> int:
    if not args.serve:
        return run_replay(args.files)
    if len(args.files) != 1:
        print("tickwire replay: --serve takes one FILE", file=sys.stderr)
        return 2
    from aiohttp import web

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
    print(f"serving {args.files[0]} (ticks {timeline.start_tick}..{timeline.end_tick}) "
          f"at http://{args.host}:{args.port}/", flush=True)
    web.run_app(build_replay_app(timeline), host=args.host, port=args.port, print=None,
                access_log=None)
    return 0
