"""Prometheus metrics. The exposed names are a contract (dashboards, load-test report).

Each :class:`Metrics` owns a private ``CollectorRegistry`` rather than the global
default one, so tests (and tools) can build many apps in one process without
"Duplicated timeseries" errors, and ``/metrics`` shows exactly Tickwire's series.

prometheus_client appends ``_total`` to Counter names by itself, so Counters are
declared without it: ``Counter("tickwire_tick_overruns", ...)`` is exposed as
``tickwire_tick_overruns_total``. :data:`CONTRACT_NAMES` lists the exposed names.

Units: seconds for durations, bytes for sizes. Labels have small closed value sets
(``reason`` strings chosen by the code, ``code`` = WebSocket close code as a string);
never put a player id or address in a label.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.exposition import CONTENT_TYPE_LATEST, generate_latest
from prometheus_client.parser import text_string_to_metric_families

__all__ = [
    "CONTRACT_NAMES",
    "RTT_BUCKETS_S",
    "SNAPSHOT_BYTES_BUCKETS",
    "TICK_BUCKETS_S",
    "Metrics",
    "parse_metrics",
]

#: Tick duration / jitter buckets, seconds: 0.1 ms … 100 ms (a 128 Hz period is 7.8 ms,
#: a 10 Hz one 100 ms; finer at the low end where healthy ticks live).
TICK_BUCKETS_S = (
    0.0001,
    0.00025,
    0.0005,
    0.001,
    0.002,
    0.004,
    0.006,
    0.008,
    0.012,
    0.016,
    0.025,
    0.033,
    0.05,
    0.1,
)
#: Snapshot payload sizes, bytes: powers of two 16 B … 256 KiB.
SNAPSHOT_BYTES_BUCKETS = tuple(float(2**k) for k in range(4, 19))
#: Round-trip time, seconds: 1 ms … 2 s, dense around the 50–200 ms players care about.
RTT_BUCKETS_S = (
    0.001,
    0.0025,
    0.005,
    0.01,
    0.02,
    0.035,
    0.05,
    0.075,
    0.1,
    0.125,
    0.15,
    0.2,
    0.3,
    0.5,
    0.75,
    1.0,
    2.0,
)

#: Every metric family name as exposed on /metrics (the contract).
CONTRACT_NAMES = (
    "tickwire_tick_duration_seconds",
    "tickwire_tick_jitter_seconds",
    "tickwire_tick_overruns_total",
    "tickwire_ticks_skipped_total",
    "tickwire_players",
    "tickwire_rooms",
    "tickwire_snapshot_bytes",
    "tickwire_bytes_sent_total",
    "tickwire_bytes_received_total",
    "tickwire_snapshots_sent_total",
    "tickwire_snapshots_skipped_total",
    "tickwire_keyframes_sent_total",
    "tickwire_rtt_seconds",
    "tickwire_frames_rejected_total",
    "tickwire_inputs_rejected_total",
    "tickwire_connections_total",
    "tickwire_disconnects_total",
    "tickwire_tick_errors_total",
    "tickwire_params_updates_total",
)


class Metrics:
    """All Tickwire metrics, registered in ``self.registry`` (private to this instance)."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        # Tick loop
        self.tick_duration = Histogram(
            "tickwire_tick_duration_seconds",
            "Time spent running one tick, seconds.",
            buckets=TICK_BUCKETS_S,
            registry=r,
        )
        self.tick_jitter = Histogram(
            "tickwire_tick_jitter_seconds",
            "How late a tick started after its deadline, seconds.",
            buckets=TICK_BUCKETS_S,
            registry=r,
        )
        self.tick_overruns = Counter(
            "tickwire_tick_overruns", "Ticks that took longer than one tick period.", registry=r
        )
        self.ticks_skipped = Counter(
            "tickwire_ticks_skipped",
            "Tick slots dropped because the loop fell more than max_catch_up behind.",
            registry=r,
        )
        self.tick_errors = Counter(
            "tickwire_tick_errors", "Ticks that raised an exception.", registry=r
        )
        # Population
        self.players = Gauge("tickwire_players", "Players currently connected.", registry=r)
        self.rooms = Gauge("tickwire_rooms", "Rooms currently open.", registry=r)
        # Snapshots and traffic
        self.snapshot_bytes = Histogram(
            "tickwire_snapshot_bytes",
            "Encoded snapshot payload size, bytes.",
            buckets=SNAPSHOT_BYTES_BUCKETS,
            registry=r,
        )
        self.bytes_sent = Counter(
            "tickwire_bytes_sent", "WebSocket payload bytes sent to clients.", registry=r
        )
        self.bytes_received = Counter(
            "tickwire_bytes_received", "WebSocket payload bytes received from clients.", registry=r
        )
        self.snapshots_sent = Counter(
            "tickwire_snapshots_sent", "Snapshots sent (deltas and keyframes).", registry=r
        )
        self.snapshots_skipped = Counter(
            "tickwire_snapshots_skipped",
            "Snapshots not sent to a client, by reason.",
            ["reason"],
            registry=r,
        )
        self.keyframes_sent = Counter(
            "tickwire_keyframes_sent",
            "Snapshots sent as keyframes (no usable baseline).",
            registry=r,
        )
        # Latency
        self.rtt = Histogram(
            "tickwire_rtt_seconds",
            "Round-trip time samples from WebSocket ping/pong, seconds.",
            buckets=RTT_BUCKETS_S,
            registry=r,
        )
        # Rejections and connections
        self.frames_rejected = Counter(
            "tickwire_frames_rejected",
            "Inbound frames rejected, by reason.",
            ["reason"],
            registry=r,
        )
        self.inputs_rejected = Counter(
            "tickwire_inputs_rejected", "Player inputs rejected, by reason.", ["reason"], registry=r
        )
        self.connections = Counter(
            "tickwire_connections", "WebSocket connections accepted.", registry=r
        )
        self.disconnects = Counter(
            "tickwire_disconnects",
            "Connections closed, by WebSocket close code.",
            ["code"],
            registry=r,
        )
        self.handshakes_rejected = Counter(
            "tickwire_handshakes_rejected",
            "WebSocket upgrades refused before the socket opened, by reason.",
            ["reason"],
            registry=r,
        )
        # Parameters (server/liveparams.py)
        self.params_updates = Counter(
            "tickwire_params_updates",
            "Parameter sets read from the file or sent by the admin API, by source "
            "(file, admin) and result (applied, rejected).",
            ["source", "result"],
            registry=r,
        )

    def render(self) -> tuple[bytes, str]:
        """The text exposition of this registry: ``(body, content_type)`` for /metrics."""
        return generate_latest(self.registry), CONTENT_TYPE_LATEST


def _sample_key(name: str, labels: dict[str, str]) -> str:
    if not labels:
        return name
    inner = ",".join(
        '{}="{}"'.format(k, v.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n"))
        for k, v in sorted(labels.items())
    )
    return f"{name}{{{inner}}}"


def parse_metrics(text: str) -> dict[str, float]:
    """Parse a Prometheus text exposition into ``{sample: value}``.

    Keys are the sample name with labels sorted by name in exposition syntax, e.g.
    ``tickwire_players``, ``tickwire_frames_rejected_total{reason="too_big"}``,
    ``tickwire_rtt_seconds_bucket{le="0.1"}``. Raises ``ValueError`` on malformed text.
    """
    out: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            out[_sample_key(sample.name, dict(sample.labels))] = float(sample.value)
    return out
