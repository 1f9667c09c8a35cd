"""The `tickwire` command: serve | fleet | bots | sim | replay."""

from __future__ import annotations

import argparse
import logging
import os
import re
import ssl
import sys
from collections.abc import Sequence
from pathlib import Path

from server.fleet import REDIS_URL_ENV
from server.logs import LEVELS
from server.version import VERSION

log = logging.getLogger("tickwire")


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not value > 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"{text} is not a positive number of seconds")
    return value


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
                   help="largest inbound WebSocket message (default 4096)")
    p.add_argument("--max-fragment-bytes", type=_positive_int, default=4096,
                   help="largest single frame of a fragmented message (default 4096)")
    p.add_argument("--max-fragments", type=_positive_int, default=8,
                   help="most frames in one fragmented message; more closes 1008 (default 8)")
    p.add_argument("--backlog", type=float, default=10.0, metavar="S",
                   help="frames queued during a silence of up to S seconds (a stalled "
                        "network, a paused server) are a backlog, not a flood (default 10)")
    p.add_argument("--stall-timeout", type=float, default=5.0, metavar="S",
                   help="close a client whose send buffer stays full this long (default 5)")
    p.add_argument("--ping-timeout", type=float, default=5.0, metavar="S",
                   help="close a client that answers no ping for this long (default 5)")
    p.add_argument("--idle-timeout", type=float, default=30.0, metavar="S",
                   help="close a joined client that sends no input for this long (default 30)")
    p.add_argument("--socket-send-buffer", type=int, default=0, metavar="BYTES",
                   help="SO_SNDBUF per client socket; 0 = OS default (default 0)")
    p.add_argument("--reads", choices=("tick", "arrival"), default="tick",
                   help="when a seated client's socket is read: once per tick, just before "
                        "it (one wake-up per tick; TLS sockets are always read on arrival), "
                        "or on every arrival (default tick)")
    p.add_argument("--tls-cert", metavar="FILE", help="serve https/wss with this certificate")
    p.add_argument("--tls-key", metavar="FILE", help="private key for --tls-cert")
    p.add_argument("--allowed-origins", metavar="URL[,URL]", default="",
                   help="browser origins allowed to open /ws, or '*' (default: this "
                        "server's own origin only; clients without an Origin header pass)")
    p.add_argument("--public-origin", metavar="URL",
                   help="this server's own origin as browsers see it, e.g. "
                        "https://game.example (default: taken from each request's Host "
                        "header, which DNS rebinding can forge; see THREAT_MODEL.md)")
    p.add_argument("--join-secret", metavar="SECRET",
                   default=os.environ.get("TICKWIRE_JOIN_SECRET"),
                   help="require join tokens from POST /matchmake, signed with this secret "
                        "(16+ bytes; or TICKWIRE_JOIN_SECRET)")
    p.add_argument("--max-conns-per-ip", type=int, default=256, metavar="N",
                   help="open WebSockets allowed per client address; 0 = no cap (default 256)")
    p.add_argument("--connects-per-ip-per-s", type=float, default=20.0, metavar="R",
                   help="new WebSockets per client address per second, after a burst of 256; "
                        "0 = no limit (default 20; a load test from one host may need 0)")
    p.add_argument("--shutdown-timeout", type=float, default=5.0, metavar="S",
                   help="on SIGTERM/SIGINT, time allowed to drain before exit (default 5)")
    p.add_argument("--drain-grace", type=float, default=0.0, metavar="S",
                   help="on SIGTERM/SIGINT, keep playing this long while /healthz answers "
                        "503 and new players are refused, before the drain (default 0)")
    p.add_argument("--admin-token", metavar="TOKEN",
                   default=os.environ.get("TICKWIRE_ADMIN_TOKEN"),
                   help="enable /admin and its API, sent as 'Authorization: Bearer TOKEN' "
                        "(or TICKWIRE_ADMIN_TOKEN; default: admin routes off)")
    p.add_argument("--kick-ban-s", type=float, default=60.0, metavar="S",
                   help="an admin's kick keeps the player's name out this long (default 60; "
                        "0 = no ban; the admin page's Ban button also bans the address)")
    p.add_argument("--record", metavar="DIR",
                   help="record every room (seed, params, inputs, state hashes) into DIR "
                        "for `tickwire replay`")
    p.add_argument("--record-max-bytes", type=_positive_int, default=16 * 1024 * 1024,
                   metavar="BYTES", help="rotate a room's recording file at this size "
                                         "(default 16 MiB)")
    p.add_argument("--record-keep", type=_positive_int, default=4, metavar="N",
                   help="recording files kept per room (default 4)")
    p.add_argument("--record-hash-every", type=_positive_int, default=30, metavar="TICKS",
                   help="write a world state hash every this many ticks (default 30)")
    p.add_argument("--record-retain", type=int, default=64, metavar="N",
                   help="recording files kept in the --record directory, all rooms "
                        "together; older ones are deleted; 0 = keep all (default 64)")
    # -- the HTTP edge: connections before their first request, names, logs
    p.add_argument("--request-head-timeout", type=_positive_float, default=10.0, metavar="S",
                   help="close a connection that has not sent a complete HTTP request head "
                        "this long after connecting, or after its last response (default 10)")
    p.add_argument("--max-pending-connections", type=int, default=None, metavar="N",
                   help="connections allowed to wait for their first request head at once; "
                        "more are refused with 503; 0 = no cap (default: a quarter of the "
                        "open-file limit, at most 1024)")
    p.add_argument("--max-pending-per-ip", type=int, default=None, metavar="N",
                   help="of those, per client address; 0 = no cap (default: a quarter of "
                        "--max-pending-connections, at most 64)")
    p.add_argument("--public-player-names", action="store_true",
                   help="show player names in /rooms to anyone (default: only to requests "
                        "with the admin token)")
    add_fleet_args(p)
    p.add_argument("--log-level", default="info", choices=LEVELS,
                   help="least severe level logged (default info)")
    p.add_argument("--plain-logs", action="store_true",
                   help="human-readable lines with key=value fields, not JSON")
    p.set_defaults(func=run_serve)


def add_fleet_args(p: argparse.ArgumentParser) -> None:
    """Modes, matchmaking and fleet membership (`serve`)."""
    g = p.add_argument_group("modes and fleet")
    g.add_argument("--mode", action="append", default=[], metavar="NAME=PARAMS.toml",
                   help="a game mode and its parameters (repeatable; the first is the "
                        "default mode; default: one mode 'arena' with --params)")
    g.add_argument("--redis", metavar="URL", default=os.environ.get(REDIS_URL_ENV) or None,
                   help="join a fleet through this Redis, e.g. redis://127.0.0.1:6379/0 "
                        f"(default: ${REDIS_URL_ENV} if set, else no fleet: matchmaking "
                        "inside this process). A URL with a password is better given in "
                        f"${REDIS_URL_ENV}: a command line is readable by every local user")
    g.add_argument("--public-url", metavar="ws://HOST:PORT", default="",
                   help="where clients reach this node (behind a proxy: the proxy's URL "
                        "for this node; default with --redis: ws://HOST:PORT of the bind)")
    g.add_argument("--max-rooms", type=_positive_int, default=64, metavar="N",
                   help="rooms this process runs at most (default 64)")
    g.add_argument("--lease", type=float, default=10.0, metavar="S",
                   help="registry lease: a dead node's rooms vanish after this (default 10)")
    g.add_argument("--refresh", type=float, default=2.0, metavar="S",
                   help="how often the node renews its lease (default 2)")
    g.add_argument("--token-ttl", type=float, default=15.0, metavar="S",
                   help="a seat token's life, and how long it holds a seat (default 15)")
    g.add_argument("--matchmakes-per-ip-per-s", type=float, default=20.0, metavar="R",
                   help="POST /matchmake requests per client address per second, after a "
                        "burst of 256; past it 429; 0 = no limit (default 20)")
    g.add_argument("--room-creates-per-ip-per-min", type=float, default=6.0, metavar="R",
                   help='private rooms ("create": true) one address may create per minute, '
                        "after a burst of 4; 0 = no limit (default 6)")
    g.add_argument("--max-spectators", type=int, default=64, metavar="N",
                   help="open /spectate streams on this server; 0 = no cap (default 64)")
    g.add_argument("--spectators-per-ip", type=int, default=4, metavar="N",
                   help="open /spectate streams per client address; 0 = no cap (default 4)")


_MODE_NAME = re.compile(r"^[A-Za-z0-9_-]{1,32}$")


def parse_modes(specs: list[str], params_path: str | None) -> list[tuple[str, Path | None]]:
    """`--mode NAME=PATH` values as [(name, path)]; without any, [("arena", --params)].
    Raises ValueError with a sentence for the user."""
    if not specs:
        return [("arena", Path(params_path) if params_path else None)]
    if params_path:
        raise ValueError("give --params or --mode, not both (--mode NAME=PARAMS.toml)")
    modes: list[tuple[str, Path | None]] = []
    for spec in specs:
        name, sep, path = spec.partition("=")
        if not sep or not _MODE_NAME.match(name) or not path:
            raise ValueError(f"--mode {spec!r}: expected NAME=PARAMS.toml, NAME of "
                             f"1-32 letters, digits, _ or -")
        if any(name == n for n, _ in modes):
            raise ValueError(f"--mode {name!r} given twice")
        modes.append((name, Path(path)))
    return modes


def run_serve(args: argparse.Namespace) -> int:
    import asyncio

    import uvloop

    from server.connguard import GuardLimits, default_max_pending, default_pending_per_ip
    from server.fleet.app import FleetSettings, FleetStartError
    from server.fleet.guard import MatchmakeLimits
    from server.gateway import GATEWAY_KEY, GatewayConfig, build_app
    from server.logs import setup_logging
    from server.serving import ListenError, ServeOptions, serve_until_signal
    from server.session import SessionLimits
    from server.spectate_routes import SpectateLimits
    from sim.params import ParamsError, load_params

    def fail(message: str) -> int:
        print(f"tickwire serve: {message}", file=sys.stderr)
        return 2

    setup_logging(args.log_level, json_lines=not args.plain_logs)
    try:
        mode_files = parse_modes(args.mode, args.params)
        modes = []
        for name, path in mode_files:
            mode_params = load_params(path)
            if args.tick_rate is not None:
                mode_params = mode_params.with_changes({"world.tick_rate": args.tick_rate})
            modes.append((name, mode_params))
    except (ParamsError, OSError, ValueError) as exc:
        return fail(str(exc))
    params, params_file = modes[0][1], mode_files[0][1]
    public_url = args.public_url
    if args.redis and not public_url:
        if args.host in ("0.0.0.0", "::", ""):
            return fail(f"with --redis and --host {args.host}, give --public-url (the "
                        f"address clients use for this node)")
        public_url = f"{'wss' if args.tls_cert else 'ws'}://{args.host}:{args.port}"
    if public_url and not public_url.startswith(("ws://", "wss://")):
        return fail("--public-url must start with ws:// or wss://")
    if not 0 < args.refresh < args.lease:
        return fail("--refresh must be positive and shorter than --lease")
    ssl_context = None
    if args.tls_cert or args.tls_key:
        if not (args.tls_cert and args.tls_key):
            return fail("--tls-cert and --tls-key go together")
        ssl_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        try:
            ssl_context.load_cert_chain(args.tls_cert, args.tls_key)
        except (OSError, ssl.SSLError) as exc:
            return fail(f"cannot load the TLS certificate: {exc}")
    secret = args.join_secret.encode() if args.join_secret else None
    if secret is not None and len(secret) < 16:
        return fail("--join-secret must be at least 16 bytes")
    limits = SessionLimits.for_tick_rate(
        params.tick_rate, max_frame_bytes=args.max_frame_bytes,
        stall_timeout_s=args.stall_timeout, ping_timeout_s=args.ping_timeout,
        idle_timeout_s=args.idle_timeout, socket_send_buffer=args.socket_send_buffer,
        max_fragment_bytes=args.max_fragment_bytes, max_fragments=args.max_fragments,
        backlog_s=args.backlog)
    origins = tuple(o.strip() for o in args.allowed_origins.split(",") if o.strip())
    recording = None
    if args.record:
        from server.recording import RecordingConfig, check_directory
        problem = check_directory(Path(args.record))
        if problem is not None:
            return fail(problem)
        recording = RecordingConfig(Path(args.record), max_bytes=args.record_max_bytes,
                                    keep=args.record_keep, hash_every=args.record_hash_every,
                                    retain_files=max(0, args.record_retain))
    config = GatewayConfig(params=params, limits=limits, allowed_origins=origins,
                           public_origin=args.public_origin,
                           public_player_names=args.public_player_names,
                           join_secret=secret, max_conns_per_ip=args.max_conns_per_ip,
                           connects_per_ip_per_s=args.connects_per_ip_per_s,
                           shutdown_timeout_s=args.shutdown_timeout,
                           admin_token=args.admin_token or None,
                           params_path=params_file, recording=recording,
                           kick_ban_s=max(0.0, args.kick_ban_s),
                           max_rooms=args.max_rooms, join_token_ttl_s=args.token_ttl,
                           reads_at_tick=args.reads == "tick",
                           modes=tuple(modes),
                           matchmake=MatchmakeLimits(
                               rate_per_s=max(0.0, args.matchmakes_per_ip_per_s),
                               creates_per_min=max(0.0, args.room_creates_per_ip_per_min)),
                           spectate=SpectateLimits(max_streams=max(0, args.max_spectators),
                                                   per_ip=max(0, args.spectators_per_ip)),
                           fleet=FleetSettings(redis_url=args.redis or None,
                                               public_url=public_url.rstrip("/"),
                                               lease_s=args.lease, refresh_s=args.refresh))
    try:
        app = build_app(config)
    except ValueError as exc:  # e.g. an --allowed-origins or --public-origin that is no URL
        return fail(str(exc))
    pending = (default_max_pending() if args.max_pending_connections is None
               else max(0, args.max_pending_connections))
    per_ip = (default_pending_per_ip(pending) if args.max_pending_per_ip is None
              else max(0, args.max_pending_per_ip))
    options = ServeOptions(
        host=args.host, port=args.port, ssl_context=ssl_context,
        shutdown_timeout_s=args.shutdown_timeout, drain_grace_s=max(0.0, args.drain_grace),
        guard=GuardLimits(head_timeout_s=args.request_head_timeout,
                          max_pending=pending, max_pending_per_ip=per_ip))
    scheme = "https" if ssl_context else "http"

    def listening(listener: object) -> None:
        log.info("serving", extra={"url": f"{scheme}://{args.host}:{args.port}/",
                                   "tick_rate": params.tick_rate, "version": VERSION})

    gateway = app[GATEWAY_KEY]

    drain_tasks: list[asyncio.Task] = []

    def drain_started() -> None:
        gateway.draining = True  # /healthz 503, new upgrades 503, Join refused
        if gateway.fleet is not None:  # first of all: no new seat comes here
            drain_tasks.append(asyncio.get_running_loop().create_task(gateway.fleet.drain()))

    try:
        with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
            runner.run(serve_until_signal(app, gateway.metrics, options,
                                          on_listening=listening,
                                          on_drain_start=drain_started))
    except ListenError as exc:
        return fail(str(exc))
    except FleetStartError as exc:
        print(f"tickwire serve: {exc}", file=sys.stderr)
        return 1
    log.info("stopped")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="tickwire", description=__doc__)
    parser.add_argument("--version", action="version", version=f"tickwire {VERSION}")
    sub = parser.add_subparsers(dest="command", required=True)
    add_serve(sub)
    from server.fleet.cli import add_fleet_parser
    add_fleet_parser(sub)
    # Imported here so `tickwire serve` never loads the bots (numpy, aiohttp client).
    from client_demo.loadtest import add_bots_parser
    add_bots_parser(sub)
    from server.replaycli import add_replay_parser
    from server.simrunner import add_sim_parser
    add_sim_parser(sub)
    add_replay_parser(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
