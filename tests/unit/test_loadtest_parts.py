"""The pure parts of the load tester: --fail-on, thresholds, quantiles, report building,
argument checks, the netsim delay line and the bots' behaviours. No sockets, no sleeps."""

from __future__ import annotations

import argparse
import itertools
import math
import random

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from client_demo import behaviors as bots
from client_demo import loadreport, loadtest
from client_demo.loadreport import Collector, ReportContext, histogram_quantile
from client_demo.netsim import DelayLine, NetConditions
from client_demo.stages import ramp_stages
from client_demo.thresholds import METRICS, OPS, Condition, UsageError, parse_fail_on

# -- --fail-on ------------------------------------------------------------------------------------


@pytest.mark.parametrize("text", [None, ""])
def test_no_fail_on_means_no_conditions(text):
    assert parse_fail_on(text) == []


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("rtt_p99_ms>150", [Condition("rtt_p99_ms", ">", 150.0)]),
        ("rtt_p99_ms>150,snapshots_per_s<28",
         [Condition("rtt_p99_ms", ">", 150.0), Condition("snapshots_per_s", "<", 28.0)]),
        ("  errors >= 1 , clients_failed<=0  ",
         [Condition("errors", ">=", 1.0), Condition("clients_failed", "<=", 0.0)]),
        ("\trtt_p50_ms\t<\t2.5\t", [Condition("rtt_p50_ms", "<", 2.5)]),
        ("interval_p99_ms>.5", [Condition("interval_p99_ms", ">", 0.5)]),
        ("bytes_in_per_s>1e4", [Condition("bytes_in_per_s", ">", 10_000.0)]),
        ("bytes_in_per_s>1.5E+3", [Condition("bytes_in_per_s", ">", 1500.0)]),
        ("client_rtt_p99_ms>=3.", [Condition("client_rtt_p99_ms", ">=", 3.0)]),
        ("rtt_p95_ms<-1", [Condition("rtt_p95_ms", "<", -1.0)]),
        ("rtt_p95_ms<+7", [Condition("rtt_p95_ms", "<", 7.0)]),
        ("errors>0,errors>0", [Condition("errors", ">", 0.0)] * 2),
    ],
)
def test_parse_valid_fail_on(text, expected):
    assert parse_fail_on(text) == expected


@pytest.mark.parametrize(
    ("text", "names"),
    [
        ("rtt_p99_ms", "cannot parse 'rtt_p99_ms'"),
        ("rtt_p99_ms=150", "cannot parse"),
        ("rtt_p99_ms==150", "cannot parse"),
        ("rtt_p99_ms=>150", "cannot parse"),
        ("rtt_p99_ms<>150", "cannot parse"),
        ("rtt_p99_ms>>150", "cannot parse"),
        ("rtt_p99_ms!=150", "cannot parse"),
        ("rtt_p99_ms>", "cannot parse"),
        (">150", "cannot parse"),
        ("rtt_p99_ms>abc", "cannot parse"),
        ("rtt_p99_ms>1 2", "cannot parse"),
        ("rtt_p99_ms>1.2.3", "cannot parse"),
        ("rtt_p99_ms>nan", "cannot parse"),
        ("rtt_p99_ms>inf", "cannot parse"),
        ("rtt_p99_ms>150ms", "cannot parse"),
        ("RTT_P99_MS>150", "cannot parse"),
        ("rtt p99>150", "cannot parse"),
        ("rtt_p99_ms>150;errors>0", "cannot parse"),
        ("latency>150", "unknown metric 'latency'"),
        ("rtt_p75_ms<5", "unknown metric 'rtt_p75_ms'"),
        ("rtt_p99_ms>150,", "empty condition"),
        (",rtt_p99_ms>150", "empty condition"),
        ("rtt_p99_ms>150,,errors>0", "empty condition"),
        ("rtt_p99_ms>150, ,errors>0", "empty condition"),
        ("  ", "empty condition"),
        ("errors>0,bogus<1", "unknown metric 'bogus'"),
    ],
)
def test_parse_invalid_fail_on_is_a_usage_error(text, names):
    with pytest.raises(UsageError, match="--fail-on") as err:
        parse_fail_on(text)
    assert names in str(err.value)
    assert isinstance(err.value, ValueError)  # the documented base class


_spaces = st.text(alphabet=" \t", max_size=3)
_values = st.one_of(
    st.integers(-10**9, 10**9).map(float),
    st.floats(allow_nan=False, allow_infinity=False, width=64),
)
_conditions = st.tuples(st.sampled_from(sorted(METRICS)), st.sampled_from(sorted(OPS)), _values,
                        _spaces, _spaces, _spaces, _spaces)


@given(st.lists(_conditions, min_size=1, max_size=6))
@settings(max_examples=300, deadline=None)
def test_generated_fail_on_round_trips(conds):
    text = ",".join(f"{a}{m}{b}{op}{c}{v!r}{d}" for m, op, v, a, b, c, d in conds)
    parsed = parse_fail_on(text)
    assert parsed == [Condition(m, op, v) for m, op, v, *_ in conds]
    # str(Condition) is itself valid --fail-on text (its number printed with %g).
    again = parse_fail_on(",".join(str(c) for c in parsed))
    assert again == [Condition(c.metric, c.op, float(f"{c.value:g}")) for c in parsed]


# -- thresholds ---------------------------------------------------------------------------------


def _report(**over) -> dict:
    r = {
        "rtt_ms": {"p50": 20.0, "p90": 30.0, "p95": 40.0, "p99": 100.0, "max": 120.0},
        "client_rtt_ms": {"p50": 21.0, "p90": 31.0, "p95": 41.0, "p99": 101.0, "max": 121.0},
        "snapshots_per_s": 30.0,
        "snapshot_interval_ms": {"p50": 33.3, "p90": 40.0, "p95": 45.0, "p99": 50.0,
                                 "max": 80.0},
        "bytes_in_per_s": 5000.0,
        "errors": {"connect": 1, "closed": 2},
        "clients_failed": 0,
        "server": {"inputs_rejected_total": 7.0, "tick_rate_per_room_min": 29.5},
    }
    r.update(over)
    return r


@pytest.mark.parametrize(
    ("cond", "failed", "actual"),
    [
        ("rtt_p99_ms>150", False, 100.0),
        ("rtt_p99_ms>50", True, 100.0),
        ("rtt_p99_ms>100", False, 100.0),
        ("rtt_p99_ms>=100", True, 100.0),
        ("rtt_p99_ms<100", False, 100.0),
        ("rtt_p99_ms<=100", True, 100.0),
        ("rtt_p50_ms>10", True, 20.0),
        ("rtt_p95_ms<41", True, 40.0),
        ("client_rtt_p99_ms>101", False, 101.0),
        ("snapshots_per_s<28", False, 30.0),
        ("snapshots_per_s<31", True, 30.0),
        ("interval_p99_ms>=50", True, 50.0),
        ("bytes_in_per_s>4999.5", True, 5000.0),
        ("errors>2", True, 3.0),  # every kind of error counts
        ("errors>3", False, 3.0),
        ("clients_failed>0", False, 0.0),
        ("rtt_p90_ms>25", True, 30.0),
        ("rtt_max_ms>=120", True, 120.0),
        ("interval_max_ms<80", False, 80.0),
        ("inputs_rejected>0", True, 7.0),
        ("tick_rate_per_room<29", False, 29.5),
    ],
)
def test_a_condition_that_holds_fails_the_run(cond, failed, actual):
    (c,) = parse_fail_on(cond)
    assert c.failed(_report()) == (failed, actual)


@pytest.mark.parametrize("missing", [None, float("nan")])
@pytest.mark.parametrize("cond", ["rtt_p99_ms>150", "rtt_p99_ms<150", "rtt_p99_ms>=-1e9"])
def test_nothing_measured_cannot_pass_a_threshold(cond, missing):
    (c,) = parse_fail_on(cond)
    report = _report(rtt_ms={k: missing for k in ("p50", "p90", "p95", "p99", "max")})
    assert c.failed(report) == (True, None)


def test_condition_str():
    assert str(Condition("rtt_p99_ms", ">=", 150.0)) == "rtt_p99_ms>=150"
    assert str(Condition("snapshots_per_s", "<", 27.5)) == "snapshots_per_s<27.5"


# -- percentiles and histogram quantiles ----------------------------------------------------------


@given(st.lists(st.floats(-1e6, 1e6), min_size=1, max_size=200))
@settings(max_examples=100, deadline=None)
def test_pcts_match_numpy(values):
    arr = np.array(values)
    got = loadreport.pcts(arr)
    assert list(got) == ["p50", "p90", "p95", "p99", "max"]
    for name, q in {"p50": 50, "p90": 90, "p95": 95, "p99": 99, "max": 100}.items():
        assert got[name] == pytest.approx(round(float(np.percentile(arr, q)), 3), abs=1e-9)


def test_pcts_of_nothing_are_none():
    assert loadreport.pcts(np.empty(0)) == dict.fromkeys(("p50", "p90", "p95", "p99", "max"))


BUCKETS = [(0.1, 10.0), (0.5, 60.0), (1.0, 90.0), (math.inf, 100.0)]


@pytest.mark.parametrize(
    ("q", "expected"),
    [
        (0.05, 0.05),  # 5 of 10 in [0, 0.1]
        (0.1, 0.1),
        (0.5, 0.1 + 0.4 * (50 - 10) / 50),  # 0.42
        (0.75, 0.5 + 0.5 * (75 - 60) / 30),  # 0.75
        (0.9, 1.0),
        (0.95, 1.0),  # in the +Inf bucket: the highest finite bound
        (0.99, 1.0),
    ],
)
def test_histogram_quantile_hand_computed(q, expected):
    assert histogram_quantile(q, BUCKETS) == pytest.approx(expected)
    assert histogram_quantile(q, list(reversed(BUCKETS))) == pytest.approx(expected)


def test_histogram_quantile_edge_cases():
    assert histogram_quantile(0.99, []) is None
    assert histogram_quantile(0.99, [(0.1, 0.0), (math.inf, 0.0)]) is None
    # No +Inf bucket and a rank past every bucket's count: the top bound.
    assert histogram_quantile(0.5, [(0.25, 1.0), (0.5, 2.0)]) == pytest.approx(0.25)
    # An empty bucket reached exactly at its lower edge.
    assert histogram_quantile(0.0, [(0.1, 0.0), (0.2, 5.0)]) == pytest.approx(0.1)


@given(
    samples=st.lists(st.floats(1e-4, 10.0), min_size=1, max_size=300),
    q=st.floats(0.01, 1.0),
)
@settings(max_examples=200, deadline=None)
def test_histogram_quantile_lies_in_the_bucket_of_the_true_quantile(samples, q):
    bounds = [0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 2.5, 5.0, math.inf]
    arr = np.sort(np.array(samples))
    buckets = [(le, float((arr <= le).sum())) for le in bounds]
    est = histogram_quantile(q, buckets)
    # The ceil(q*n)-th smallest sample (what a rank of q*n lands on) and its bucket.
    k = max(1, math.ceil(q * len(arr) - 1e-9))
    true = arr[k - 1]
    i = next(j for j, le in enumerate(bounds) if true <= le)
    lo = 0.0 if i == 0 else bounds[i - 1]
    hi = bounds[i] if math.isfinite(bounds[i]) else lo
    assert lo - 1e-12 <= est <= hi + 1e-12


def _metrics(counts, total, overruns=0.0, skipped=0.0, players=4.0, rooms=1.0, rejected=None):
    name = "tickwire_tick_duration_seconds"
    out = {f'{name}_bucket{{le="{le}"}}': c for le, c in counts.items()}
    out.update({f"{name}_count": total, "tickwire_tick_overruns_total": overruns,
                "tickwire_ticks_skipped_total": skipped, "tickwire_players": players,
                "tickwire_rooms": rooms})
    for reason, n in (rejected or {}).items():
        out[f'tickwire_inputs_rejected_total{{reason="{reason}"}}'] = n
    return out


def test_the_ticks_off_cpu_time_is_over_the_window_too_and_none_from_an_older_server():
    name = "tickwire_tick_off_cpu_seconds"
    start = _metrics({"0.001": 100, "+Inf": 100}, 100)
    end = _metrics({"0.001": 1000, "+Inf": 1000}, 1000)
    assert loadreport.server_figures(start, end, 30.0)["tick_off_cpu_ms"]["p99"] is None
    start.update({f'{name}_bucket{{le="0.001"}}': 100, f'{name}_bucket{{le="0.016"}}': 100,
                  f'{name}_bucket{{le="+Inf"}}': 100})
    # Over the window: 800 ticks within 1 ms of off-CPU time, 100 between 1 and 16 ms.
    end.update({f'{name}_bucket{{le="0.001"}}': 900, f'{name}_bucket{{le="0.016"}}': 1000,
                f'{name}_bucket{{le="+Inf"}}': 1000})
    off = loadreport.server_figures(start, end, 30.0)["tick_off_cpu_ms"]
    assert off["p50"] == pytest.approx(450 / 800, abs=0.001)  # rounded to µs
    assert 1.0 < off["p99"] <= 16.0


def test_server_figures_are_over_the_window():
    start = _metrics({"0.001": 100, "0.005": 200, "0.01": 200, "+Inf": 200}, 200, 1, 0,
                     rejected={"rate": 5, "nan": 1})
    end = _metrics({"0.001": 100, "0.005": 1000, "0.01": 1090, "+Inf": 1100}, 1100, 4, 2, 7,
                   rejected={"rate": 2005, "nan": 1, "range": 3})
    fig = loadreport.server_figures(start, end, 30.0)
    # Window histogram: (0.001, 0), (0.005, 800), (0.01, 890), (+Inf, 900); p99 rank 891.
    assert fig["tick_duration_ms"]["p99"] == pytest.approx(10.0)
    assert fig["tick_duration_ms"]["p50"] == pytest.approx(1.0 + 4.0 * 450 / 800)
    assert (fig["ticks_per_s_all_rooms"], fig["overruns"], fig["ticks_skipped"],
            fig["players"]) == (30.0, 3, 2, 7)
    # Rejections over the window only, zero deltas left out; the total is a threshold.
    assert fig["inputs_rejected"] == {"range": 3, "rate": 2000}
    assert fig["inputs_rejected_total"] == 2003.0
    # Without /rooms: one room, so the sum is that room's rate.
    assert fig["rooms"] == 1 and fig["tick_rate_per_room"] == [30.0]
    assert loadreport.server_figures(None, end, 30.0) is None
    assert loadreport.server_figures(start, None, 30.0) is None
    assert loadreport.server_figures(start, end, 0.0)["ticks_per_s_all_rooms"] is None


def test_server_figures_give_each_room_its_own_rate():
    # Two rooms at 30 Hz: 60 ticks/s in all, 30 per room (the sum is not a tick rate).
    start = _metrics({"+Inf": 0}, 0, rooms=2.0)
    end = _metrics({"+Inf": 1200}, 1200, rooms=2.0)
    rooms0 = [{"id": 1, "players": 250, "tick": 100, "tick_rate": 30},
              {"id": 2, "players": 150, "tick": 10, "tick_rate": 30}]
    rooms1 = [{"id": 1, "players": 250, "tick": 700, "tick_rate": 30},
              {"id": 2, "players": 150, "tick": 598, "tick_rate": 30},
              {"id": 3, "players": 1, "tick": 5, "tick_rate": 30}]  # opened in the window
    fig = loadreport.server_figures(start, end, 20.0, rooms0, rooms1)
    assert fig["ticks_per_s_all_rooms"] == 60.0
    assert fig["rooms"] == 3 and fig["clients_per_room"] == [250, 150, 1]
    assert [r["tick_rate"] for r in fig["rooms_detail"]] == [30.0, 29.4, None]
    # A room without two readings: fall back to the sum over the room count.
    assert fig["tick_rate_per_room"] == [20.0, 20.0, 20.0]
    fig = loadreport.server_figures(start, end, 20.0, rooms0, rooms1[:2])
    assert fig["tick_rate_per_room"] == [30.0, 29.4] and fig["tick_rate_per_room_min"] == 29.4
    # No /rooms at all: the gauge's room count.
    fig = loadreport.server_figures(start, end, 20.0)
    assert fig["rooms"] == 2 and fig["tick_rate_per_room"] == [30.0, 30.0]
    assert fig["clients_per_room"] is None


# -- counters and report building -----------------------------------------------------------------


def test_counter_rates_and_decode_errors():
    counters = [
        (9.0, np.array([[0, 0, 0, 0], [1, 0, -1, 0]])),  # before the window
        (10.0, np.array([[0, 1000, 1500, 0], [1, 500, -1, 1]])),
        (11.0, np.array([[0, 3000, 4500, 1], [1, 1500, -1, 2]])),
        (12.2, np.array([[0, 5000, 7500, 1], [1, 2500, -1, 2]])),
        (13.0, np.array([[0, 9e9, 9e9, 5], [1, 9e9, -1, 7]]).astype(np.int64)),  # after
    ]
    ws, tcp = loadreport.counter_rates(counters, 10.0, 11.8)
    assert ws == pytest.approx(4000 / 2.2 + 2000 / 2.2)
    assert tcp == pytest.approx(6000 / 2.2)  # bot 1 has no TCP_INFO
    assert loadreport.counter_rates(counters, 10.0, 10.2) == (0.0, None)  # < 0.4 s apart
    assert loadreport.decode_errors(counters) == 12  # latest per bot


def _plan(conditions: str | None = None, count: int = 3, **over) -> ReportContext:
    ctx = ReportContext(url="ws://127.0.0.1:9/ws", count=count, behavior="wander",
                        stages=ramp_stages(count, 0.0), conditions=parse_fail_on(conditions),
                        procs=2)
    for k, v in over.items():
        setattr(ctx, k, v)
    return ctx


def _worker_report(t, bots_ids, snaps, crtt, counters, **over):
    payload = {
        "t": t, "connected": len(bots_ids), "failed": 0, "errors": {}, "close_codes": {},
        "connect_messages": [],
        "snap_bot": np.array([b for b, _ in snaps], dtype=np.int32),
        "snap": np.array([row for _, row in snaps], dtype=np.float64).reshape(-1, 6),
        "crtt_bot": np.zeros(len(crtt), dtype=np.int32),
        "crtt": np.array(crtt, dtype=np.float64),
        "counters": np.array(counters, dtype=np.int64).reshape(-1, 4),
        "dropped": 0,
    }
    payload.update(over)
    return payload


def test_report_merges_worker_reports_over_the_window():
    c = Collector(3)
    c.add("ready", 0, {"pid": 1})
    c.add("ready", 1, {"pid": 2})
    # Worker 0 runs bots 0 and 2, worker 1 bot 1. Columns: t, rtt_ms, payload bytes,
    # frame bytes, keyframe, entities. Samples at t=1 and t=30 are outside [10, 20).
    rows0 = [(0, (1.0, 999.0, 10, 12, 1, 0)), (0, (10.0, 10.0, 100, 110, 1, 5)),
             (0, (10.5, 20.0, 50, 60, 0, 5)), (2, (11.0, 30.0, 40, 50, 0, 4)),
             (2, (12.0, 40.0, 60, 70, 0, 6))]
    rows1 = [(1, (10.2, 50.0, 30, 40, 0, 3)), (1, (19.9, 60.0, 70, 80, 0, 7)),
             (1, (30.0, 999.0, 70, 80, 0, 7))]
    c.add("report", 0, _worker_report(10.0, [0, 2], rows0, [5.0, 7.0],
                                      [[0, 0, 0, 0], [2, 0, 0, 0]],
                                      errors={"closed": 1}, close_codes={"1000": 1}))
    c.add("report", 1, _worker_report(10.0, [1], rows1[:2], [9.0], [[1, 0, 0, 2]],
                                      errors={"closed": 2, "connect": 1}, dropped=3))
    c.add("done", 1, _worker_report(20.0, [1], rows1[2:], [], [[1, 1000, 2000, 2]],
                                    errors={"closed": 2, "connect": 1}, dropped=3))
    c.add("done", 0, _worker_report(20.0, [0, 2], [], [], [[0, 3000, 3000, 0],
                                                           [2, 2000, 2000, 1]],
                                    errors={"closed": 1}, close_codes={"1000": 1}))
    assert c.done == {0, 1}
    assert c.connected == 3 and c.ever_connected == {0, 1, 2}

    r = loadreport.build_report(_plan("rtt_p99_ms>100,errors>=3,snapshots_per_s<0.5"), c,
                              (10.0, 20.0), None, None)
    rtts = np.array([10.0, 20.0, 30.0, 40.0, 50.0, 60.0])
    assert r["rtt_ms"] == {k: round(float(np.percentile(rtts, q)), 3)
                           for k, q in (("p50", 50), ("p90", 90), ("p95", 95), ("p99", 99),
                                        ("max", 100))}
    assert r["client_rtt_ms"]["p50"] == pytest.approx(7.0)
    assert r["clients_connected"] == 3 and r["clients_failed"] == 0
    assert r["snapshots_per_s"] == pytest.approx(6 / 10 / 3, abs=1e-3)
    # Intervals within each bot: 0.5 s (bot 0), 1.0 s (bot 2), 9.7 s (bot 1).
    assert r["snapshot_interval_ms"]["max"] == pytest.approx(9700.0)
    assert r["keyframes"] == 1 and r["keyframes_total"] == 2
    assert r["entities_mean"] == pytest.approx(np.mean([5, 4, 6, 3, 7]), abs=0.05)
    assert r["bytes_per_entity_per_snapshot"] == pytest.approx(250 / 25, abs=1e-3)
    assert r["bytes_in_per_s"] == pytest.approx((300 + 200 + 100) / 3, abs=0.1)
    assert r["errors"] == {"closed": 3, "connect": 1, "decode": 3}
    assert r["close_codes"] == {"1000": 1}
    assert r["netsim_frames_dropped"] == 3
    assert r["server"] is None and any("metrics" in n for n in r["notes"])
    checks = {ch["condition"]: ch["failed"] for ch in r["thresholds"]}
    assert checks == {"rtt_p99_ms>100": False, "errors>=3": True, "snapshots_per_s<0.5": True}
    assert r["failures"] == ["errors>=3", "snapshots_per_s<0.5"]
    assert r["passed"] is False
    text = loadreport.format_report(r)
    assert "FAIL: errors>=3; snapshots_per_s<0.5" in text


def test_report_passes_when_no_condition_holds_and_fails_with_no_bots():
    c = Collector(1)
    c.add("done", 0, _worker_report(5.0, [0], [(0, (5.0, 10.0, 10, 20, 0, 1))], [],
                                    [[0, 0, 0, 0]]))
    r = loadreport.build_report(_plan("rtt_p99_ms>100", count=1), c, (0.0, 10.0), None, None)
    assert r["passed"] is True and r["failures"] == []
    assert loadreport.format_report(r).endswith("PASS")
    empty = loadreport.build_report(_plan(None), Collector(3), (0.0, 10.0), None, None)
    assert empty["passed"] is False and empty["failures"] == ["no bot could connect"]
    assert set(empty["rtt_ms"].values()) == {None}
    # A threshold over nothing measured fails too.
    r = loadreport.build_report(_plan("rtt_p99_ms>1e9"), Collector(3), (0.0, 10.0), None, None)
    assert r["thresholds"] == [{"condition": "rtt_p99_ms>1e+09", "actual": None,
                                "failed": True, "default": False}]


# -- argument checks ------------------------------------------------------------------------------


def _args(**over) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    loadtest.add_bots_parser(parser.add_subparsers())
    args = parser.parse_args(["bots", "--url", "ws://localhost:8765/ws", "--count", "10",
                              "--duration", "5"])
    for k, v in over.items():
        setattr(args, k, v)
    return args


def test_plan_from_valid_args():
    plan = loadtest.plan_from_args(_args(fail_on="errors>0", procs=2))
    assert plan.metrics_url == "http://localhost:8765/metrics"
    assert plan.ramp_s == pytest.approx(0.5)  # min(5, N/20)
    assert plan.procs == 2 and plan.conditions == [Condition("errors", ">", 0.0)]
    assert loadtest.plan_from_args(_args(count=3, procs=8)).procs == 3
    assert loadtest.metrics_url_for("wss://h.example:443/ws?x=1") == \
        "https://h.example:443/metrics"


@pytest.mark.parametrize(
    ("over", "names"),
    [
        ({"url": "http://localhost/ws"}, "--url"),
        ({"url": "ws:///ws"}, "--url"),
        ({"count": 0}, "--count"),
        ({"count": loadtest.MAX_BOTS + 1}, "--count"),
        ({"duration": 0.0}, "--duration"),
        ({"duration": float("nan")}, "--duration"),
        ({"ramp": -1.0}, "--ramp"),
        ({"warmup": float("inf")}, "--warmup"),
        ({"procs": 0}, "--procs"),
        ({"procs": loadtest.MAX_PROCS + 1}, "--procs"),
        ({"latency_ms": -1.0}, "--latency-ms"),
        ({"jitter_ms": 1e9}, "--jitter-ms"),
        ({"loss": 1.0}, "--loss"),
        ({"loss": -0.1}, "--loss"),
        ({"ack_only": True, "behavior": "chase"}, "--ack-only"),
        ({"fail_on": "rtt>1"}, "--fail-on"),
    ],
)
def test_bad_args_are_usage_errors(over, names):
    with pytest.raises(UsageError, match=names):
        loadtest.plan_from_args(_args(**over))


def test_run_bots_usage_error_exits_2(capsys):
    assert loadtest.run_bots(_args(fail_on="nope<1")) == 2
    assert "unknown metric 'nope'" in capsys.readouterr().err


# -- netsim's delay line --------------------------------------------------------------------------


@pytest.mark.parametrize(
    "kwargs", [{"latency_ms": -1.0}, {"jitter_ms": -0.1}, {"loss": 1.0}, {"loss": -0.01}]
)
def test_net_conditions_validate(kwargs):
    with pytest.raises(ValueError):
        NetConditions(**kwargs)


def test_net_conditions_active():
    assert not NetConditions().active
    assert NetConditions(latency_ms=1).active and NetConditions(jitter_ms=1).active
    assert NetConditions(loss=0.1).active


def test_delay_line_without_conditions_is_immediate():
    line: DelayLine[int] = DelayLine(NetConditions(), random.Random(0))
    for i in range(5):
        assert line.push(i, 1.0)
    assert line.next_due() == 1.0 and len(line) == 5
    assert line.pop_due(0.999) == []
    assert line.pop_due(1.0) == [0, 1, 2, 3, 4]
    assert line.next_due() is None and len(line) == 0


def test_delay_line_latency():
    line: DelayLine[str] = DelayLine(NetConditions(latency_ms=50), random.Random(0))
    line.push("a", 10.0)
    line.push("b", 10.02)
    assert line.next_due() == pytest.approx(10.05)
    assert line.pop_due(10.049) == []
    assert line.pop_due(10.05) == ["a"]
    assert line.pop_due(10.069) == []
    assert line.pop_due(11.0) == ["b"]


def _drive(line: DelayLine, pushes: list[tuple[float, bool]]) -> list[tuple[int, float, bool]]:
    """Push items at the given times; returns (item, push time, kept) for each."""
    return [(i, t, line.push(i, t, droppable=d)) for i, (t, d) in enumerate(pushes)]


@given(
    seed=st.integers(0, 2**32 - 1),
    latency=st.floats(0, 500),
    jitter=st.floats(0, 500),
    loss=st.floats(0, 0.9),
    gaps=st.lists(st.tuples(st.floats(0, 0.2), st.booleans()), min_size=1, max_size=80),
    polls=st.lists(st.floats(0, 0.3), max_size=40),
)
@settings(max_examples=300, deadline=None)
def test_delay_line_keeps_order_and_never_delivers_early(seed, latency, jitter, loss, gaps,
                                                          polls):
    cond = NetConditions(latency_ms=latency, jitter_ms=jitter, loss=loss)
    line: DelayLine[int] = DelayLine(cond, random.Random(seed))
    t, pushes = 0.0, []
    for gap, droppable in gaps:
        t += gap
        pushes.append((t, droppable))
    log = _drive(line, pushes)
    kept = [i for i, _, k in log if k]
    # Only droppable items are ever lost.
    assert all(k for (_, d), (_, _, k) in zip(pushes, log, strict=True) if not d)
    assert line.dropped == len(log) - len(kept)
    # Dues are non-decreasing (FIFO), and no item is due before push + latency - jitter.
    dues = [due for due, _ in line._queue]
    assert dues == sorted(dues)
    earliest = {i: pt + max(0.0, latency - jitter) / 1000.0 for i, pt, k in log if k}
    latest_own = {i: pt + (latency + jitter) / 1000.0 for i, pt, k in log if k}
    for (due, item), prev in zip(line._queue, [-math.inf, *dues], strict=False):
        assert due >= earliest[item] - 1e-12
        # Late only because of the item in front (head-of-line), never otherwise.
        assert due <= max(latest_own[item], prev) + 1e-12
    # Popping at arbitrary increasing times yields the kept items in push order.
    got, now = [], 0.0
    for p in polls:
        now += p
        batch = line.pop_due(now)
        assert all(earliest[i] <= now + 1e-12 for i in batch)
        got.extend(batch)
    got.extend(line.pop_due(math.inf))
    assert got == kept


@pytest.mark.parametrize("loss", [0.01, 0.1, 0.3, 0.5])
def test_delay_line_loss_rate_is_near_configured(loss):
    n = 20_000
    line: DelayLine[int] = DelayLine(NetConditions(loss=loss), random.Random(1234))
    kept = sum(line.push(i, 0.0) for i in range(n))
    frac = line.dropped / n
    assert line.dropped + kept == n
    assert abs(frac - loss) < 4 * math.sqrt(loss * (1 - loss) / n) + 1e-3


def test_delay_line_never_drops_undroppable_items():
    line: DelayLine[int] = DelayLine(NetConditions(loss=0.99), random.Random(5))
    assert all(line.push(i, float(i), droppable=False) for i in range(1000))
    assert line.dropped == 0 and len(line) == 1000


def test_delay_line_is_deterministic_for_a_seed():
    def run(seed):
        line: DelayLine[int] = DelayLine(NetConditions(latency_ms=30, jitter_ms=20, loss=0.2),
                                         random.Random(seed))
        return [line.push(i, i * 0.01) for i in range(200)], list(line._queue)

    assert run(7) == run(7)
    assert run(7) != run(8)


# -- bots' behaviours (sans-I/O) ------------------------------------------------------------------


@pytest.mark.parametrize("name", bots.BEHAVIORS)
def test_make_behavior_knows_every_behavior(name):
    b = bots.make_behavior(name, random.Random(1), 30)
    for _ in range(200):
        dx, dy, aim, fire = b.command((100.0, 100.0), np.array([[150.0, 100.0]]))
        assert math.hypot(dx, dy) <= 1.0 + 1e-9
        assert -math.pi <= aim <= math.pi
        assert isinstance(fire, bool)


def test_make_behavior_rejects_unknown():
    with pytest.raises(ValueError, match="unknown behaviour 'dance'"):
        bots.make_behavior("dance", random.Random(1), 30)


def test_behaviors_are_deterministic_per_seed():
    def run(name, seed):
        b = bots.make_behavior(name, random.Random(seed), 30)
        return [b.command(None, None) for _ in range(300)]

    for name in bots.BEHAVIORS:
        assert run(name, 3) == run(name, 3)


def test_idle_does_not_move():
    b = bots.make_behavior("idle", random.Random(0), 30)
    assert {b.command((1.0, 1.0), None) for _ in range(10)} == {(0.0, 0.0, 0.0, False)}


def test_arena_turns_every_60_inputs_and_never_fires():
    b = bots.make_behavior("arena", random.Random(0), 30)
    cmds = [b.command(None, None) for _ in range(180)]
    assert not any(c[3] for c in cmds)
    dirs = [c[:2] for c in cmds]
    for block in range(3):
        assert len(set(dirs[block * 60 : block * 60 + 60])) == 1
    assert math.hypot(*dirs[0]) == pytest.approx(1.0)


def test_wander_turns_about_every_two_seconds():
    b = bots.make_behavior("wander", random.Random(0), 30)
    dirs = [b.command(None, None)[:2] for _ in range(3000)]
    runs, n = [], 1
    for a, c in itertools.pairwise(dirs):
        if a == c:
            n += 1
        else:
            runs.append(n)
            n = 1
    assert all(45 <= r <= 75 for r in runs)  # 60 inputs ±25%
    spam = bots.make_behavior("spam", random.Random(0), 30)
    assert spam.rate_factor == 2.0


def test_chase_heads_for_the_nearest_and_fires_in_range():
    b = bots.make_behavior("chase", random.Random(0), 30)
    others = np.array([[1000.0, 0.0], [0.0, 300.0], [-500.0, -500.0]])
    dx, dy, aim, fire = b.command((0.0, 0.0), others)
    assert (dx, dy) == pytest.approx((0.0, 1.0))
    assert aim == pytest.approx(math.pi / 2) and fire is True
    dx, dy, _, fire = b.command((0.0, 0.0), np.array([[1000.0, 0.0]]))
    assert (dx, dy) == pytest.approx((1.0, 0.0)) and fire is False
    assert b.command((5.0, 5.0), np.array([[5.0, 5.0]]))[::3] == (0.0, True)
    # Nothing to chase: wander without firing.
    assert not any(b.command(None, None)[3] for _ in range(500))
