"""Metrics: the exposed names are a contract; each Metrics has its own registry."""

from __future__ import annotations

import re

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from prometheus_client import REGISTRY, CollectorRegistry, Histogram
from prometheus_client.exposition import generate_latest

from server.metrics import (
    CONTRACT_NAMES,
    FLUSH_EVERY_S,
    RTT_BUCKETS_S,
    SNAPSHOT_BYTES_BUCKETS,
    BatchedHistogram,
    Metrics,
    parse_metrics,
)
from server.version import VERSION

EXPECTED = {
    "tickwire_tick_duration_seconds": "histogram",
    "tickwire_tick_jitter_seconds": "histogram",
    "tickwire_tick_off_cpu_seconds": "histogram",
    "tickwire_tick_overruns_total": "counter",
    "tickwire_ticks_skipped_total": "counter",
    "tickwire_players": "gauge",
    "tickwire_rooms": "gauge",
    "tickwire_snapshot_bytes": "histogram",
    "tickwire_bytes_sent_total": "counter",
    "tickwire_bytes_received_total": "counter",
    "tickwire_snapshots_sent_total": "counter",
    "tickwire_snapshots_skipped_total": "counter",
    "tickwire_keyframes_sent_total": "counter",
    "tickwire_rtt_seconds": "histogram",
    "tickwire_frames_rejected_total": "counter",
    "tickwire_inputs_rejected_total": "counter",
    "tickwire_connections_total": "counter",
    "tickwire_disconnects_total": "counter",
    "tickwire_tick_errors_total": "counter",
    "tickwire_hitscan_rewind_seconds": "histogram",
    "tickwire_hitscan_shots_total": "counter",
    "tickwire_hitscan_clamped_total": "counter",
    "tickwire_hitscan_hits_total": "counter",
    "tickwire_handshakes_rejected_total": "counter",
    "tickwire_room_tick_duration_seconds": "histogram",
    "tickwire_room_players": "gauge",
    "tickwire_interest_oldest_age_seconds": "gauge",
    "tickwire_build_info": "gauge",
    "tickwire_http_pending_connections": "gauge",
    "tickwire_http_connections_dropped_total": "counter",
    "tickwire_fd_near_limit_total": "counter",
    "tickwire_recording_failures_total": "counter",
    "tickwire_recordings_deleted_total": "counter",
    "process_open_fds": "gauge",
    "process_max_fds": "gauge",
    "process_resident_memory_bytes": "gauge",
    "process_cpu_seconds_total": "counter",
    "tickwire_params_updates_total": "counter",
}


def _types(body: bytes) -> dict[str, str]:
    return dict(re.findall(r"^# TYPE (\S+) (\S+)$", body.decode(), flags=re.M))


def test_every_contract_name_is_exposed_with_its_type() -> None:
    body, _ = Metrics().render()
    types = _types(body)
    for name, kind in EXPECTED.items():
        assert types.get(name) == kind, name
    assert set(CONTRACT_NAMES) == set(EXPECTED)


def test_no_counter_is_exposed_with_a_doubled_total_suffix() -> None:
    body, _ = Metrics().render()
    assert "_total_total" not in body.decode()


def test_render_returns_the_prometheus_content_type() -> None:
    body, content_type = Metrics().render()
    assert isinstance(body, bytes)
    assert content_type.startswith("text/plain")


def test_many_metrics_instances_coexist_and_stay_out_of_the_global_registry() -> None:
    first, second = Metrics(), Metrics()
    first.players.set(3)
    assert parse_metrics(second.render()[0].decode())["tickwire_players"] == 0.0
    assert REGISTRY.get_sample_value("tickwire_players") is None


def test_recorded_values_round_trip_through_parse_metrics() -> None:
    m = Metrics()
    m.players.set(7)
    m.tick_overruns.inc(2)
    m.frames_rejected.labels(reason="too_big").inc()
    m.frames_rejected.labels(reason="bad_payload").inc(3)
    m.disconnects.labels(code="1008").inc()
    m.snapshots_skipped.labels(reason="backpressure").inc()
    m.rtt.observe(0.08)
    m.rtt.observe(0.12)
    m.snapshot_bytes.observe(300)
    samples = parse_metrics(m.render()[0].decode())
    assert samples["tickwire_players"] == 7
    assert samples["tickwire_tick_overruns_total"] == 2
    assert samples['tickwire_frames_rejected_total{reason="too_big"}'] == 1
    assert samples['tickwire_frames_rejected_total{reason="bad_payload"}'] == 3
    assert samples['tickwire_disconnects_total{code="1008"}'] == 1
    assert samples['tickwire_snapshots_skipped_total{reason="backpressure"}'] == 1
    assert samples["tickwire_rtt_seconds_count"] == 2
    assert samples["tickwire_rtt_seconds_sum"] == pytest.approx(0.2)
    assert samples['tickwire_rtt_seconds_bucket{le="0.1"}'] == 1
    assert samples['tickwire_snapshot_bytes_bucket{le="512.0"}'] == 1


def test_buckets_span_the_documented_ranges() -> None:
    samples = parse_metrics(Metrics().render()[0].decode())

    def bounds(name: str) -> list[float]:
        pattern = re.compile(rf'{name}_bucket\{{le="([^"]+)"\}}')
        les = [m.group(1) for k in samples if (m := pattern.fullmatch(k))]
        return sorted(float(le) for le in les if le != "+Inf")

    assert bounds("tickwire_tick_duration_seconds")[0] == 0.0001
    assert bounds("tickwire_tick_duration_seconds")[-1] == 0.1
    assert bounds("tickwire_snapshot_bytes")[0] == 16
    assert bounds("tickwire_snapshot_bytes")[-1] == 256 * 1024
    assert bounds("tickwire_rtt_seconds")[0] == 0.001
    assert bounds("tickwire_rtt_seconds")[-1] == 2.0


def test_parse_metrics_labels_are_sorted_and_escaped() -> None:
    text = '# TYPE x counter\nx_total{b="2",a="q\\"uote"} 5\n'
    assert parse_metrics(text) == {'x_total{a="q\\"uote",b="2"}': 5.0}


def test_close_codes_map_to_a_bounded_label_set() -> None:
    from server.metrics import close_code_label
    assert close_code_label(1008) == "1008" and close_code_label(None) == "1006"
    assert {close_code_label(c) for c in range(3000, 5000)} == {"application"}
    assert {close_code_label(c) for c in (0, 999, 1004, 1012, 2999, 5000, 65535)} == {"other"}


def test_plain_counts_reach_prometheus_at_the_flush_and_are_zeroed() -> None:
    m = Metrics()
    m.counts.bytes_received += 10
    m.counts.frame_rejected("flood")
    m.counts.input_rejected("non_finite", 3)
    m.counts.snapshot_sizes[100] = 2
    samples = parse_metrics(m.render()[0].decode())  # render flushes first
    assert samples["tickwire_bytes_received_total"] == 10
    assert samples['tickwire_frames_rejected_total{reason="flood"}'] == 1
    assert samples['tickwire_inputs_rejected_total{reason="non_finite"}'] == 3
    assert samples["tickwire_snapshot_bytes_count"] == 2
    assert m.counts.bytes_received == 0 and not m.counts.frames_rejected
def test_the_tick_loops_flush_at_most_every_flush_every_s_and_a_scrape_sees_everything(
        ) -> None:
    """`flush_if_due` after every tick exports the counts at most every FLUSH_EVERY_S;
    a /metrics render in between still sees every count (it flushes first)."""
    m = Metrics()
    m.flush_if_due(10.0)  # the first call flushes
    m.counts.bytes_received = 7
    m.counts.tick_durations.append(0.002)
    m.counts.tick_jitters.append(0.0005)
    m.counts.tick_off_cpu.extend((0.0, 0.012))
    m.flush_if_due(10.0 + FLUSH_EVERY_S / 2)
    assert m.counts.bytes_received == 7 and m.counts.tick_durations  # not yet
    m.flush_if_due(10.0 + FLUSH_EVERY_S)
    assert m.counts.bytes_received == 0 and not m.counts.tick_durations
    m.counts.bytes_received = 5
    m.counts.tick_durations.append(0.2)  # over the last bucket: +Inf
    m.flush_if_due(10.0 + FLUSH_EVERY_S * 1.5)
    samples = parse_metrics(m.render()[0].decode())
    assert samples["tickwire_bytes_received_total"] == 12
    assert samples["tickwire_tick_duration_seconds_count"] == 2
    assert samples['tickwire_tick_duration_seconds_bucket{le="0.002"}'] == 1
    assert samples['tickwire_tick_duration_seconds_bucket{le="+Inf"}'] == 2
    assert samples["tickwire_tick_duration_seconds_sum"] == pytest.approx(0.202)
    assert samples["tickwire_tick_jitter_seconds_count"] == 1
    assert samples["tickwire_tick_off_cpu_seconds_count"] == 2
    assert samples['tickwire_tick_off_cpu_seconds_bucket{le="0.008"}'] == 1


def test_no_created_series_and_the_build_version_is_exposed() -> None:
    m = Metrics()
    m.tick_overruns.inc()
    m.rtt.observe(0.1)
    text = m.render()[0].decode()
    assert "_created" not in text
    samples = parse_metrics(text)
    assert samples[f'tickwire_build_info{{version="{VERSION}"}}'] == 1
    assert samples["process_open_fds"] > 0


def test_room_series_are_labelled_and_removed_when_the_room_is_forgotten() -> None:
    m = Metrics()
    m.for_room("r1").tick_duration.observe(0.002)
    m.for_room("r1").players.set(4)
    m.for_room("r2").players.set(1)
    samples = parse_metrics(m.render()[0].decode())
    assert samples['tickwire_room_players{room="r1"}'] == 4
    assert samples['tickwire_room_tick_duration_seconds_count{room="r1"}'] == 1
    m.forget_room("r1")
    m.forget_room("r1")  # idempotent
    samples = parse_metrics(m.render()[0].decode())
    assert not [k for k in samples if 'room="r1"' in k]
    assert samples['tickwire_room_players{room="r2"}'] == 1


def _exposed(registry: CollectorRegistry) -> dict[str, float]:
    return parse_metrics(generate_latest(registry).decode())


@settings(max_examples=60, deadline=None)
@given(st.lists(st.one_of(st.sampled_from(SNAPSHOT_BYTES_BUCKETS),  # exactly on a bound
                          st.integers(0, 2**19).map(float)), max_size=40),
       st.integers(1, 5))
def test_batched_histogram_is_exposed_exactly_as_a_prometheus_histogram(
        values: list[float], times: int) -> None:
    """The same observations, one by one into prometheus_client's Histogram and in
    batches (distinct values with counts, then a plain array) into BatchedHistogram."""
    ref_registry, batched_registry = CollectorRegistry(), CollectorRegistry()
    ref = Histogram("h_bytes", "doc", buckets=SNAPSHOT_BYTES_BUCKETS, registry=ref_registry)
    batched = BatchedHistogram("h_bytes", "doc", SNAPSHOT_BYTES_BUCKETS, batched_registry)
    for v in values:
        for _ in range(times):
            ref.observe(v)
        ref.observe(v)
    distinct, counts = np.unique(np.array(values, dtype=np.float64), return_counts=True)
    batched.observe_counts(distinct, counts * times)
    batched.observe_counts(np.array(values))
    assert batched.count == (times + 1) * len(values)
    assert _exposed(batched_registry) == pytest.approx(_exposed(ref_registry))
    assert _types(generate_latest(batched_registry)) == {"h_bytes": "histogram"}


def test_batched_histogram_single_observe_and_empty_batches() -> None:
    registry = CollectorRegistry()
    h = BatchedHistogram("rtt_seconds", "doc", RTT_BUCKETS_S, registry)
    h.observe_counts(np.array([]))
    h.observe(0.1)  # on a bound: counted in le="0.1"
    h.observe(3.0)  # above the last bound: +Inf only
    samples = _exposed(registry)
    assert samples['rtt_seconds_bucket{le="0.075"}'] == 0
    assert samples['rtt_seconds_bucket{le="0.1"}'] == 1
    assert samples['rtt_seconds_bucket{le="2.0"}'] == 1
    assert samples['rtt_seconds_bucket{le="+Inf"}'] == 2
    assert samples["rtt_seconds_count"] == 2
    assert samples["rtt_seconds_sum"] == pytest.approx(3.1)
