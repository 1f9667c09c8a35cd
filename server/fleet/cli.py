"""`tickwire fleet`: N nodes on one machine, and a local redis-server when given no --redis.

Each node is a `tickwire serve --redis URL --public-url ws://HOST:PORT` child started with
`server.nodeproc.ServerProcess`. Ctrl-C or SIGTERM drains every node (SIGTERM to each, by
pid, all at once; bounded, then SIGKILL) and stops the redis-server this command started.
Nothing else is touched.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import threading
import time
from pathlib import Path

from server.fleet import REDIS_URL_ENV


def add_fleet_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("fleet", help="run N nodes and (without --redis) a local redis-server",
                       description=__doc__.split("\n\n")[0])
    p.add_argument("--workers", type=int, required=True, metavar="N",
                   help="nodes to start (1-64)")
    p.add_argument("--port", type=int, default=8080, metavar="P",
                   help="first node's port; nodes use P..P+N-1 (default 8080)")
    p.add_argument("--host", default="127.0.0.1", help="address the nodes bind")
    p.add_argument("--public-host", default=None, metavar="HOST",
                   help="host in each node's public URL (default: --host)")
    p.add_argument("--redis", metavar="URL", default=os.environ.get(REDIS_URL_ENV) or None,
                   help=f"an existing Redis (default: ${REDIS_URL_ENV} if set, else start "
                        "one); the nodes get it in their environment, not on their "
                        "command line")
    p.add_argument("--log-dir", default=None, metavar="DIR",
                   help="write each node's log to DIR/node-PORT.log (default: discard)")
    p.add_argument("--shutdown-timeout", type=float, default=5.0, metavar="S",
                   help="drain time allowed to each node (default 5)")
    p.add_argument("serve_args", nargs=argparse.REMAINDER, metavar="-- SERVE_ARGS",
                   help="anything after -- goes to every `tickwire serve` "
                        "(e.g. -- --mode arena=a.toml --lease 5)")
    p.set_defaults(func=run_fleet)


def run_fleet(args: argparse.Namespace) -> int:
    from server.nodeproc import ServerProcess
    from server.redis_server import RedisServer, RedisUnavailable

    if not 1 <= args.workers <= 64:
        print("tickwire fleet: --workers must be 1-64", file=sys.stderr)
        return 2
    extra = [a for a in args.serve_args if a != "--"]
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    redis = None
    redis_url = args.redis
    if not redis_url:
        try:
            redis = RedisServer.start()
        except RedisUnavailable as exc:
            print(f"tickwire fleet: {exc}", file=sys.stderr)
            return 2
        redis_url = redis.url
        print(f"redis-server {redis_url} (pid {redis.pid})", flush=True)
    public_host = args.public_host or args.host
    log_dir = Path(args.log_dir) if args.log_dir else None
    if log_dir is not None:
        log_dir.mkdir(parents=True, exist_ok=True)
    nodes: list[ServerProcess] = []
    code = 0
    origins = []
    if not any(a == "--allowed-origins" or a.startswith("--allowed-origins=") for a in extra):
        # The browser's page comes from one node and its socket may go to another: every
        # node lets every node's page origin in (an explicit --allowed-origins wins).
        origins = ["--allowed-origins", ",".join(
            f"http://{public_host}:{args.port + i}" for i in range(args.workers))]
    try:
        for i in range(args.workers):
            port = args.port + i
            node = ServerProcess(
                port=port, host=args.host, plain_logs=log_dir is not None,
                log_path=log_dir / f"node-{port}.log" if log_dir else None,
                # In the environment, not argv: a password in argv is readable by every
                # local user (ps); an environment only by this user.
                env={**os.environ, REDIS_URL_ENV: redis_url},
                extra_args=["--public-url",
                            f"ws://{public_host}:{port}",
                            "--shutdown-timeout", str(args.shutdown_timeout), *origins,
                            *extra])
            if stop.is_set():
                return 130
            node.start()
            nodes.append(node)
            print(f"node {i + 1}: http://{public_host}:{port}/ (pid {node.pid})", flush=True)
        print(f"fleet of {len(nodes)} up: POST /matchmake on any node; Ctrl-C stops it",
              flush=True)
        while not stop.wait(0.5):
            for node in nodes:
                if node.proc is not None and not node.running and node.returncode is not None:
                    print(f"node on port {node.port} exited with {node.returncode}",
                          file=sys.stderr, flush=True)
                    node.proc = None
    except RuntimeError as exc:
        print(f"tickwire fleet: a node did not start: {exc}", file=sys.stderr)
        code = 1
    finally:
        _drain_all(nodes, args.shutdown_timeout + 5.0)
        if redis is not None:
            redis.stop()
    print("fleet stopped", flush=True)
    return code


def _drain_all(nodes: list, timeout_s: float) -> None:
    """SIGTERM every node at once (each drains in parallel), then wait, bounded."""
    live = [n for n in nodes if n.running]
    for node in live:
        node.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + timeout_s
    for node in live:
        node.stop(timeout=max(0.1, deadline - time.monotonic()))
