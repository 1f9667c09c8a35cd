"""Prometheus metrics. The exposed names are a contract (dashboards, load-test report).

Each :class:`Metrics` owns a private ``CollectorRegistry`` rather than the global
default one, so tests (and tools) can build many apps in one process without
"Duplicated timeseries" errors, and ``/metrics`` shows exactly Tickwire's series.

prometheus_client appends ``_total`` to Counter names by itself, so Counters are
declared without it: ``Counter("tickwire_tick_overruns", ...)`` is exposed as
``tickwire_tick_overruns_total``. :data:`CONTRACT_NAMES` lists the exposed names.

Units: seconds for durations, bytes for sizes. Labels have small closed value sets
(``reason`` strings chosen by the code, ``code`` = WebSocket close code as a string);
never put a player id or address in a label. The ``room`` label of the
``tickwire_room_*`` families is bounded by ``max_rooms`` (64): a disposed room's series
are removed (``forget_room``).

``_created`` series are not exported (``disable_created_metrics``: they double the
counters' series and no dashboard reads them). ``process_*`` come from prometheus_client's
``ProcessCollector`` on this registry.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    Info,
    ProcessCollector,
    disable_created_metrics,
)
from prometheus_client.exposition import CONTENT_TYPE_LATEST, generate_latest
from prometheus_client.metrics_core import HistogramMetricFamily
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.registry import Collector
from prometheus_client.utils import floatToGoString

__all__ = [
    "CLOSE_CODE_LABELS",
    "CONTRACT_NAMES",
    "FLUSH_EVERY_S",
    "RTT_BUCKETS_S",
    "SNAPSHOT_BYTES_BUCKETS",
    "TICK_BUCKETS_S",
    "BatchedHistogram",
    "Counts",
    "Metrics",
    "RoomMetrics",
    "close_code_label",
    "parse_metrics",
]

disable_created_metrics()

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
    "tickwire_tick_off_cpu_seconds",
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
    "tickwire_hitscan_rewind_seconds",
    "tickwire_hitscan_shots_total",
    "tickwire_hitscan_clamped_total",
    "tickwire_hitscan_hits_total",
    "tickwire_handshakes_rejected_total",
    "tickwire_room_tick_duration_seconds",
    "tickwire_room_players",
    "tickwire_interest_oldest_age_seconds",
    "tickwire_build_info",
    "tickwire_http_pending_connections",
    "tickwire_http_connections_dropped_total",
    "tickwire_fd_near_limit_total",
    "tickwire_recording_failures_total",
    "tickwire_recordings_deleted_total",
    "process_open_fds",
    "process_max_fds",
    "process_resident_memory_bytes",
    "process_cpu_seconds_total",
    "tickwire_params_updates_total",
)


#: The ``code`` label of tickwire_disconnects_total: close codes the server or a client
#: can meaningfully send keep their number; anything else a client chose (3000-4999,
#: unassigned codes) collapses into one of two labels, so the series stay bounded.
CLOSE_CODE_LABELS = {c: str(c) for c in (1000, 1001, 1002, 1003, 1005, 1006, 1007, 1008,
                                         1009, 1010, 1011)}


def close_code_label(code: int | None) -> str:
    """The bounded ``code`` label for a close code (None: no close frame, i.e. 1006)."""
    if code is None:
        return "1006"
    label = CLOSE_CODE_LABELS.get(code)
    if label is not None:
        return label
    return "application" if 3000 <= code <= 4999 else "other"


#: How often the tick loops export `Counts` to Prometheus (a flush is a dozen NumPy and
#: prometheus_client calls, and after a tick's sleep the caches are cold: once per tick
#: it was about a tenth of a one-player room's CPU). /metrics flushes first anyway.
FLUSH_EVERY_S = 0.25


class Counts:
    """Counts made on the hot paths (per frame, per seat) as plain integers.

    Nothing here takes a lock or calls Prometheus: `Metrics.flush` adds them to the
    Prometheus series and zeroes them, every `FLUSH_EVERY_S` from the tick loops and
    before every /metrics render (so a scrape always sees every count).
    """

    __slots__ = ("backlogs", "bytes_received", "bytes_sent", "frames_rejected", "inputs_rejected",
                 "keyframes_sent", "rtt_samples", "snapshot_sizes",
                 "snapshots_sent", "snapshots_skipped", "tick_durations", "tick_jitters",
                 "tick_off_cpu")

    def __init__(self) -> None:
        self.bytes_received = 0
        self.bytes_sent = 0
        self.backlogs = 0
        self.snapshots_sent = 0
        self.keyframes_sent = 0
        self.snapshots_skipped = 0
        self.frames_rejected: dict[str, int] = {}
        self.inputs_rejected: dict[str, int] = {}
        self.rtt_samples: list[float] = []
        self.snapshot_sizes: dict[int, int] = {}  # size in bytes -> snapshots of that size
        self.tick_durations: list[float] = []  # seconds, one per tick run (every room)
        self.tick_jitters: list[float] = []  # seconds late, one per tick run
        self.tick_off_cpu: list[float] = []  # seconds not on the CPU, one per tick run

    def frame_rejected(self, label: str, n: int = 1) -> None:
        self.frames_rejected[label] = self.frames_rejected.get(label, 0) + n

    def input_rejected(self, reason: str, n: int = 1) -> None:
        self.inputs_rejected[reason] = self.inputs_rejected.get(reason, 0) + n



class BatchedHistogram(Collector):
    """An unlabelled histogram whose observations are added in batches, exposed exactly
    as a prometheus_client ``Histogram`` of the same name and buckets would be.

    prometheus_client's ``Histogram.observe`` takes a lock and walks the buckets in Python
    once per value; a tick's snapshots (one per seat, 6,000 a second at 200 players) and
    RTT samples are counted here with one NumPy ``searchsorted`` + ``bincount`` per flush.
    Bucket rule as Prometheus's: a value falls in the first bucket whose bound is >= it.
    Not thread-safe: it is fed and collected on the event loop's thread.
    """

    def __init__(self, name: str, documentation: str, buckets: tuple[float, ...],
                 registry: CollectorRegistry) -> None:
        self.name = name
        self.documentation = documentation
        self._bounds = np.array(buckets, dtype=np.float64)  # +Inf is the extra last slot
        self._les = [floatToGoString(b) for b in buckets] + ["+Inf"]
        self._counts = np.zeros(len(buckets) + 1, dtype=np.int64)
        self._sum = 0.0
        registry.register(self)

    def observe(self, value: float) -> None:
        """One observation (off the hot paths; those batch through `observe_counts`)."""
        self._counts[int(np.searchsorted(self._bounds, value, side="left"))] += 1
        self._sum += value

    def observe_counts(self, values: np.ndarray, counts: np.ndarray | None = None) -> None:
        """Observe each of `values` `counts` times (once each when counts is None)."""
        values = np.asarray(values, dtype=np.float64)
        if not values.size:
            return
        slots = np.searchsorted(self._bounds, values, side="left")
        if counts is None:
            self._counts += np.bincount(slots, minlength=self._counts.size)
            self._sum += float(values.sum())
        else:
            counts = np.asarray(counts, dtype=np.int64)
            self._counts += np.bincount(slots, weights=counts, minlength=self._counts.size
                                        ).astype(np.int64)
            self._sum += float(values @ counts)

    @property
    def count(self) -> int:
        """Observations so far."""
        return int(self._counts.sum())

    def collect(self) -> Iterator[HistogramMetricFamily]:
        cumulative = np.cumsum(self._counts).tolist()
        yield HistogramMetricFamily(self.name, self.documentation,
                                    buckets=list(zip(self._les, cumulative, strict=True)),
                                    sum_value=self._sum)


@dataclass(frozen=True, slots=True)
class RoomMetrics:
    """One room's labelled children, looked up once (``labels()`` takes a lock)."""

    tick_duration: Histogram
    players: Gauge
    interest_oldest_age: Gauge


class Metrics:
    """All Tickwire metrics, registered in ``self.registry`` (private to this instance)."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        # Tick loop
        # One value per tick each: batched like the snapshot sizes (Counts.tick_durations,
        # Counts.tick_jitters), not a locked prometheus_client observe per tick.
        self.tick_duration = BatchedHistogram(
            "tickwire_tick_duration_seconds",
            "Time spent running one tick, seconds.",
            buckets=TICK_BUCKETS_S,
            registry=r,
        )
        self.tick_jitter = BatchedHistogram(
            "tickwire_tick_jitter_seconds",
            "How late a tick started after its deadline, seconds.",
            buckets=TICK_BUCKETS_S,
            registry=r,
        )
        # Wall time minus the thread's CPU time over the tick: what the host took from it.
        # A tick slow on both clocks is slow code; slow on the wall only is a starved server.
        self.tick_off_cpu = BatchedHistogram(
            "tickwire_tick_off_cpu_seconds",
            "Time within one tick the server's thread was not running (wall time minus "
            "its CPU time): the host ran other processes, or a system call blocked, seconds.",
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
        self.snapshot_bytes = BatchedHistogram(
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
        self.rtt = BatchedHistogram(
            "tickwire_rtt_seconds",
            "Round-trip time samples from WebSocket ping/pong, seconds.",
            buckets=RTT_BUCKETS_S,
            registry=r,
        )
        # Lag-compensated hitscan (server.shotstats.ShotStats.export feeds these)
        self.hitscan_rewind = Histogram(
            "tickwire_hitscan_rewind_seconds",
            "How far back each hitscan shot was tested (its shooter's view), seconds.",
            buckets=(0.0, 0.025, 0.05, 0.1, 0.15, 0.2, 0.25, 0.3, 0.5, 1.0),
            registry=r,
        )
        self.hitscan_shots = Counter(
            "tickwire_hitscan_shots", "Hitscan shots fired.", registry=r
        )
        self.hitscan_clamped = Counter(
            "tickwire_hitscan_clamped",
            "Hitscan shots whose claimed view was deeper than allowed (weapon.max_rewind_ms "
            "or the shooter's RTT plus interpolation) and was clamped.",
            registry=r,
        )
        self.hitscan_hits = Counter("tickwire_hitscan_hits", "Hitscan shots that hit.",
                                    registry=r)
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
        self.backlogs = Counter(
            "tickwire_backlogs",
            "Reads after a client's silence that held more frames than the burst, taken as "
            "a backlog (what it queued meanwhile), not as a flood.",
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

        self.counts = Counts()
        self._flush_at = -math.inf  # the next flush_if_due that flushes (server clock, s)
        # Per room (label ``room``)
        self.room_tick_duration = Histogram(
            "tickwire_room_tick_duration_seconds",
            "Time spent running one tick of this room, seconds.",
            ["room"],
            buckets=TICK_BUCKETS_S,
            registry=r,
        )
        self.room_players = Gauge(
            "tickwire_room_players",
            "Seats held in this room (connected or waiting for a resume).",
            ["room"],
            registry=r,
        )
        self.room_interest_oldest_age = Gauge(
            "tickwire_interest_oldest_age_seconds",
            "Interest management: how long the longest-waiting in-interest cell (holding "
            "entities) of any client has gone unsent, seconds, at the last tick.",
            ["room"],
            registry=r,
        )
        self._rooms: dict[str, RoomMetrics] = {}
        # The HTTP edge (server.connguard)
        self.http_pending = Gauge(
            "tickwire_http_pending_connections",
            "Accepted connections that have not yet sent a complete request head.",
            registry=r,
        )
        self.http_dropped = Counter(
            "tickwire_http_connections_dropped",
            "Connections closed before their first request, by reason "
            "(head_timeout, pending_cap, pending_ip_cap).",
            ["reason"],
            registry=r,
        )
        self.fd_near_limit = Counter(
            "tickwire_fd_near_limit",
            "Times the open file descriptors crossed 80% of RLIMIT_NOFILE.",
            registry=r,
        )
        self.recording_failures = Counter(
            "tickwire_recording_failures",
            "Room recordings stopped by a write error or a disk too slow (the room goes on).",
            registry=r,
        )
        self.recordings_deleted = Counter(
            "tickwire_recordings_deleted",
            "Old recording files deleted to keep --record-retain files.",
            registry=r,
        )
        # Process and build
        ProcessCollector(registry=r)
        from server.version import VERSION

        self.build_info = Info("tickwire_build", "The running Tickwire version.", registry=r)
        self.build_info.info({"version": VERSION})

    def flush_if_due(self, now: float) -> None:
        """`flush` at most once per FLUSH_EVERY_S of `now` (seconds, the server's clock):
        what the tick loops call after every tick."""
        if now >= self._flush_at:
            self._flush_at = now + FLUSH_EVERY_S
            self.flush()

    def flush(self) -> None:
        """Add the plain-int `counts` to the Prometheus series and zero them."""
        c = self.counts
        if c.bytes_received:
            self.bytes_received.inc(c.bytes_received)
            c.bytes_received = 0
        if c.bytes_sent:
            self.bytes_sent.inc(c.bytes_sent)
            c.bytes_sent = 0
        if c.backlogs:
            self.backlogs.inc(c.backlogs)
            c.backlogs = 0
        if c.snapshots_sent:
            self.snapshots_sent.inc(c.snapshots_sent)
            c.snapshots_sent = 0
        if c.keyframes_sent:
            self.keyframes_sent.inc(c.keyframes_sent)
            c.keyframes_sent = 0
        if c.snapshots_skipped:
            self.snapshots_skipped.labels(reason="backpressure").inc(c.snapshots_skipped)
            c.snapshots_skipped = 0
        for family, pending in ((self.frames_rejected, c.frames_rejected),
                                (self.inputs_rejected, c.inputs_rejected)):
            if pending:
                for label, n in pending.items():
                    family.labels(reason=label).inc(n)
                pending.clear()
        for histogram, values in ((self.rtt, c.rtt_samples),
                                  (self.tick_duration, c.tick_durations),
                                  (self.tick_jitter, c.tick_jitters),
                                  (self.tick_off_cpu, c.tick_off_cpu)):
            if values:
                histogram.observe_counts(np.array(values))
                values.clear()
        if c.snapshot_sizes:
            # A tick's snapshots share a few sizes (one per baseline): one batch of a
            # handful of (size, snapshots) pairs instead of one observe per snapshot.
            sizes = c.snapshot_sizes
            self.snapshot_bytes.observe_counts(np.fromiter(sizes.keys(), np.float64, len(sizes)),
                                               np.fromiter(sizes.values(), np.int64, len(sizes)))
            sizes.clear()

    def for_room(self, room_id: str) -> RoomMetrics:
        """The room's labelled children (created on first use)."""
        found = self._rooms.get(room_id)
        if found is None:
            found = self._rooms[room_id] = RoomMetrics(
                self.room_tick_duration.labels(room=room_id),
                self.room_players.labels(room=room_id),
                self.room_interest_oldest_age.labels(room=room_id))
        return found

    def forget_room(self, room_id: str) -> None:
        """Remove a disposed room's series, so the label set stays bounded by live rooms."""
        if self._rooms.pop(room_id, None) is not None:
            self.room_tick_duration.remove(room_id)
            self.room_players.remove(room_id)
            self.room_interest_oldest_age.remove(room_id)

    def render(self) -> tuple[bytes, str]:
        """The text exposition of this registry: ``(body, content_type)`` for /metrics."""
        self.flush()
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
