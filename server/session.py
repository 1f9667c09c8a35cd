"""One connection's policy: what its frames mean, how fast it may send, when to give up.

Sans-I/O. `parse_client_frame` turns bytes into a `ClientFrame` or a `ProtocolError` that
says which close code and reason to use and which metric label to count. `Session` holds
the per-connection state the connection protocol consults: the ping tracker (RTT and
liveness), the inbound budget (every wire frame and byte), the abuse tracker (when drops
turn into a close) and the outbound policy (skip snapshots while the socket buffer is
above the high-water mark, close after a stall timeout).
"""

from __future__ import annotations

from dataclasses import dataclass

from google.protobuf.message import DecodeError

from proto import PROTOCOL_VERSION
from proto import tickwire_pb2 as pb
from server.errors import (
    CLOSE_GOING_AWAY,
    CLOSE_INTERNAL_ERROR,
    CLOSE_INVALID_PAYLOAD,
    CLOSE_NORMAL,
    CLOSE_POLICY,
    CLOSE_PROTOCOL_ERROR,
    CLOSE_TOO_BIG,
    CLOSE_UNSUPPORTED,
    ProtocolError,
)
from server.framing import FrameLimits
from server.latency import PingTracker
from server.ratelimit import AbuseTracker, InboundBudget

__all__ = [
    "CLOSE_GOING_AWAY",
    "CLOSE_INTERNAL_ERROR",
    "CLOSE_INVALID_PAYLOAD",
    "CLOSE_NORMAL",
    "CLOSE_POLICY",
    "CLOSE_PROTOCOL_ERROR",
    "CLOSE_TOO_BIG",
    "CLOSE_UNSUPPORTED",
    "OutboundPolicy",
    "ProtocolError",
    "Session",
    "SessionLimits",
    "check_version",
    "parse_client_frame",
]

@dataclass(frozen=True, slots=True)
class SessionLimits:
    """Per-connection limits. Rates are per second; sizes in bytes; times in seconds."""

    max_frame_bytes: int = 4096  # one whole message
    max_fragment_bytes: int = 4096  # one frame of a message
    max_fragments: int = 8  # frames in one fragmented message
    frames_per_s: float = 120.0  # inputs at up to 128 Hz plus pings; 4x the default tick
    frame_burst: float = 60.0
    bytes_per_s: float = 64 * 1024
    byte_burst: float = 128 * 1024
    max_drops: int = 50  # dropped frames or rejected inputs within drop_window_s -> close
    drop_window_s: float = 5.0
    # After a silence from a client (its network stalled, or this server was paused), the
    # frames it queued meanwhile arrive at once: up to this many seconds of them are
    # taken as a backlog, not a flood (see ratelimit.InboundBudget).
    backlog_s: float = 10.0
    send_high_water: int = 256 * 1024
    # SO_SNDBUF for each client socket (0 = the OS default, which autotunes up to MiBs on
    # Linux). Smaller means a stalled reader is noticed sooner and holds less kernel memory;
    # snapshots waiting in a deep buffer are stale by the time they arrive anyway.
    socket_send_buffer: int = 0
    stall_timeout_s: float = 5.0
    ping_interval_s: float = 1.0
    ping_timeout_s: float = 5.0
    join_timeout_s: float = 5.0
    # A joined client that sends no complete data frame for this long is closed: players
    # send an input every tick (even a background tab does about once a second), so this
    # only catches stuck or hostile clients, such as one that opens a fragmented message
    # and never finishes it while still answering pings.
    idle_timeout_s: float = 30.0

    @classmethod
    def for_tick_rate(cls, tick_rate: int, **overrides: float) -> SessionLimits:
        """Frame budget sized from the tick rate: one input per tick, 4x headroom."""
        frames = max(40.0, 4.0 * tick_rate)
        base = {"frames_per_s": frames, "frame_burst": frames / 2}
        base.update(overrides)
        return cls(**base)


def parse_client_frame(data: bytes) -> pb.ClientFrame:
    """Parse one binary frame. Raises ProtocolError for anything a client must not send."""
    frame = pb.ClientFrame()
    try:
        frame.ParseFromString(data)
    except DecodeError as exc:
        raise ProtocolError(CLOSE_INVALID_PAYLOAD, "invalid_protobuf",
                            f"invalid protobuf: {exc}"[:120]) from None
    # Empty bytes and some garbage parse as a valid, empty message: check the meaning.
    if frame.WhichOneof("kind") is None:
        raise ProtocolError(CLOSE_POLICY, "empty_frame", "ClientFrame has no message set")
    return frame


def check_version(version: int) -> None:
    if version != PROTOCOL_VERSION:
        raise ProtocolError(CLOSE_POLICY, "bad_version",
                            f"protocol version {version} unsupported (server speaks "
                            f"{PROTOCOL_VERSION})")


@dataclass(slots=True)
class OutboundPolicy:
    """Skip snapshots while the send buffer is over the high-water mark; give up after a
    stall. Snapshots need no retransmission: the next delta is against the client's last
    ack, so skipping costs the client nothing but freshness."""

    high_water: int
    stall_timeout_s: float
    over_since: float | None = None
    skipped: int = 0

    def admit(self, buffered_bytes: int, now: float) -> bool:
        """True: send this tick's snapshot. False: skip it (and start the stall clock)."""
        if buffered_bytes <= self.high_water:
            self.over_since = None
            return True
        if self.over_since is None:
            self.over_since = now
        self.skipped += 1
        return False

    def stalled(self, now: float) -> bool:
        return self.over_since is not None and now - self.over_since >= self.stall_timeout_s


@dataclass(slots=True)
class Session:
    """Per-connection policy state, owned by the connection's `ConnectionProtocol`."""

    limits: SessionLimits
    opened_at: float
    pings: PingTracker
    budget: InboundBudget
    abuse: AbuseTracker
    outbound: OutboundPolicy
    player_id: int = 0
    room_id: str = ""
    last_frame_at: float = 0.0  # the last complete data message (binary or text)
    last_read_at: float = 0.0  # the last read from the socket, whatever it held

    @classmethod
    def open(cls, limits: SessionLimits, now: float) -> Session:
        return cls(
            limits=limits,
            opened_at=now,
            last_frame_at=now,
            last_read_at=now,
            pings=PingTracker(interval_s=limits.ping_interval_s, timeout_s=limits.ping_timeout_s),
            budget=InboundBudget(limits.frames_per_s, limits.frame_burst, limits.bytes_per_s,
                                 limits.byte_burst, limits.backlog_s, now),
            abuse=AbuseTracker(limits.max_drops, limits.drop_window_s),
            outbound=OutboundPolicy(limits.send_high_water, limits.stall_timeout_s),
        )

    @property
    def joined(self) -> bool:
        return self.player_id != 0

    @property
    def frame_limits(self) -> FrameLimits:
        lim = self.limits
        return FrameLimits(lim.max_frame_bytes, lim.max_fragment_bytes, lim.max_fragments)

    def idle(self, now: float) -> bool:
        """True when no data frame arrived for the idle timeout."""
        return now - self.last_frame_at > self.limits.idle_timeout_s

    def record_drop(self, now: float) -> bool:
        """Count a dropped frame or rejected input; True when it is time to close."""
        return self.abuse.record_drop(now)
