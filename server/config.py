"""What one `tickwire serve` process is configured with: `GatewayConfig`, built by the CLI
(or a test) and read by the gateway and its parts."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from server.bans import DEFAULT_KICK_BAN_S
from server.fleet.app import FleetSettings
from server.fleet.guard import MatchmakeLimits
from server.recording import RecordingConfig
from server.session import SessionLimits
from server.spectate_routes import SpectateLimits
from server.static import WEB_ROOT
from sim.params import Params

__all__ = ["GatewayConfig"]


@dataclass(frozen=True, slots=True)
class GatewayConfig:
    params: Params
    limits: SessionLimits
    max_rooms: int = 64
    close_timeout_s: float = 2.0
    # a seated client's socket is read once per tick, not on every arrival (server.tickreads)
    reads_at_tick: bool = True
    shutdown_timeout_s: float = 5.0
    web_root: Path = WEB_ROOT
    allowed_origins: tuple[str, ...] = ()  # () = the server's own origin only; "*" = any
    public_origin: str | None = None  # the server's own origin; None: from the Host header
    public_player_names: bool = False  # /rooms shows names without the admin token
    join_secret: bytes | None = None  # set: /ws needs a seat token from POST /matchmake
    join_token_ttl_s: float = 15.0  # a seat token's life (and how long it holds a seat)
    max_conns_per_ip: int = 256  # 0 = no cap; a load test from one host may need 0
    connects_per_ip_per_s: float = 20.0  # new sockets per address per second; 0 = no limit
    connect_burst_per_ip: float = 256.0  # a whole load-test swarm may arrive at once
    admin_token: str | None = None  # None: the /admin routes are off (404)
    admin_stall_s: float = 10.0  # an admin event stream not read this long is cut
    params_path: Path | None = None  # set: this TOML file is watched and applied live
    recording: RecordingConfig | None = None  # set: every room is recorded for replay
    kick_ban_s: float = DEFAULT_KICK_BAN_S  # an admin's kick keeps the name out this long
    # (name, params) of each game mode; () = one mode, "arena", with `params`
    modes: tuple[tuple[str, Params], ...] = ()
    # the registry: in-process unless redis_url
    fleet: FleetSettings = field(default_factory=FleetSettings)
    # per-address rates of POST /matchmake (all requests; those that create a room)
    matchmake: MatchmakeLimits = field(default_factory=MatchmakeLimits)
    # live spectator streams: caps (server, per address) and the stall cut-off
    spectate: SpectateLimits = field(default_factory=SpectateLimits)
