"""One connection's policy: what its frames mean, how fast it may send, when to give up.

Sans-I/O. `parse_client_frame` turns bytes into a `ClientFrame` or a `ProtocolError` that
says which close code and reason to use and which metric label to count. `Session` holds
the per-connection state the gateway consults: the ping tracker (RTT and liveness), the
token buckets (frames and bytes), the abuse tracker (when drops turn into a close) and
the outbound policy (skip snapshots while the socket buffer is above the high-water mark,
close after a stall timeout).
"""

from __future__ import annotations

from dataclasses import dataclass

from google.protobuf.message import DecodeError

from proto import PROTOCOL_VERSION
from proto import tickwire_pb2 as pb
from server.latency import PingTracker
from server.ratelimit import AbuseTracker, TokenBucket

CLOSE_NORMAL = 1000
CLOSE_GOING_AWAY = 1001
CLOSE_UNSUPPORTED = 1003
CLOSE_INVALID_PAYLOAD = 1007
CLOSE_POLICY = 1008
CLOSE_TOO_BIG = 1009
CLOSE_INTERNAL_ERROR = 1011


class ProtocolError(Exception):
    """A frame the server refuses; the connection is closed with `code` and `reason`.

    `label` is the `reason` label of tickwire_frames_rejected_total.
    """

    def __init__(self, code: int, label: str, reason: str) -> None:
        super().__init__(reason)
        self.code = code
        self.label = label
        self.reason = reason


@dataclass(frozen=True, slots=True)
class SessionLimits:
    """Per-connection limits. Rates are per second; sizes in bytes; times in seconds."""

    max_frame_bytes: int = 4096
    frames_per_s: float = 120.0  # inputs at up to 128 Hz plus pings; 4x the default tick
    frame_burst: float = 60.0
    bytes_per_s: float = 64 * 1024
    byte_burst: float = 128 * 1024
    max_drops: int = 50  # dropped frames or rejected inputs within drop_window_s -> close
    drop_window_s: float = 5.0
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
    """State of one WebSocket connection, owned by the gateway's handler for it."""

    limits: SessionLimits
    opened_at: float
    pings: PingTracker
    frames: TokenBucket
    bytes_in: TokenBucket
    abuse: AbuseTracker
    outbound: OutboundPolicy
    player_id: int = 0
    room_id: str = ""
    closing: bool = False
    close_code: int | None = None  # the code the server closed with, if it closed first
    last_frame_at: float = 0.0  # the last complete data frame (binary or text)

    @classmethod
    def open(cls, limits: SessionLimits, now: float) -> Session:
        return cls(
            limits=limits,
            opened_at=now,
            last_frame_at=now,
            pings=PingTracker(interval_s=limits.ping_interval_s, timeout_s=limits.ping_timeout_s),
            frames=TokenBucket(limits.frames_per_s, limits.frame_burst, now),
            bytes_in=TokenBucket(limits.bytes_per_s, limits.byte_burst, now),
            abuse=AbuseTracker(limits.max_drops, limits.drop_window_s),
            outbound=OutboundPolicy(limits.send_high_water, limits.stall_timeout_s),
        )

    @property
    def joined(self) -> bool:
        return self.player_id != 0

    def admit_frame(self, size: int, now: float) -> bool:
        """Charge one inbound frame of `size` bytes; False means drop it (over budget)."""
        ok_frames = self.frames.take(now)
        ok_bytes = self.bytes_in.take(now, float(size))
        return ok_frames and ok_bytes

    def idle(self, now: float) -> bool:
        """True when no data frame arrived for the idle timeout."""
        return now - self.last_frame_at > self.limits.idle_timeout_s

    def record_drop(self, now: float) -> bool:
        """Count a dropped frame or rejected input; True when it is time to close."""
        return self.abuse.record_drop(now)
