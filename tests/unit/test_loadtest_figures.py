"""The load tester's newer pure parts: ramp stages, the live line, the per-second series,
default failure, CSV/HTML output and the master/worker wire. No sockets, no sleeps."""

from __future__ import annotations

import contextlib
import io
import json
import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from client_demo import botfleet, loadhtml, loadreport, thresholds
from client_demo.loadreport import Collector, ReportContext
from client_demo.stages import (
    Stage,
    StageError,
    bot_intervals,
    client_seconds,
    parse_stages,
    peak,
    ramp_stages,
    target_at,
    total_s,
)

# -- stages ---------------------------------------------------------------------------------------


def test_parse_stages_as_k6_writes_them():
    st_ = parse_stages("10s:50,30s:50,10s:0", 1000)
    assert st_ == (Stage(10.0, 50), Stage(30.0, 50), Stage(10.0, 0))
    assert total_s(st_) == 50.0 and peak(st_) == 50
    assert parse_stages("500ms:2, 1m:3 ,1h:0,7:1", 10) == (
        Stage(0.5, 2), Stage(60.0, 3), Stage(3600.0, 0), Stage(7.0, 1))


@pytest.mark.parametrize(("text", "names"), [
    ("", "give 1 to"), ("10s", "cannot parse '10s'"), ("10s:-1", "cannot parse"),
    ("10x:5", "cannot parse"), ("10s:5,", "cannot parse ''"), ("10s:0,5s:0", "no stage"),
    ("0s:5", "0 s in total"), ("10s:11", "more than 10"), ("25h:1", "out of range"),
    ("nan:1", "cannot parse"), ("10s:1.5", "cannot parse"),
])
def test_bad_stages_name_the_bad_part(text, names):
    with pytest.raises(StageError, match=names):
        parse_stages(text, 10)


def test_target_is_linear_within_each_stage_and_holds_after():
    st_ = parse_stages("10s:50,30s:50,10s:0", 100)
    assert [target_at(st_, t) for t in (0, 5, 10, 25, 40, 45, 50, 99)] == \
        [0, 25, 50, 50, 50, 25, 0, 0]


def test_bot_intervals_follow_the_target():
    st_ = parse_stages("10s:50,30s:50,10s:0", 100)
    assert bot_intervals(st_, 0) == [(0.0, 50.0)]  # first in, last out
    assert bot_intervals(st_, 49) == [(pytest.approx(9.8), pytest.approx(40.2))]
    assert bot_intervals(st_, 50) == []  # never needed
    # A target that rises again brings the bot back (as a new player); the plain run holds.
    assert bot_intervals(parse_stages("10:4,10:0,10:4", 10), 3) == [(7.5, 12.5), (27.5, math.inf)]
    assert bot_intervals(ramp_stages(10, 5.0), 3) == [(1.5, math.inf)]
    assert bot_intervals(ramp_stages(10, 0.0), 9) == [(0.0, math.inf)]


@given(st.lists(st.tuples(st.one_of(st.just(0.0), st.floats(0.01, 100.0)), st.integers(0, 20)),
                min_size=1, max_size=6),
       st.floats(0.0, 700.0))
@settings(max_examples=200, deadline=None)
def test_bots_connected_at_any_time_match_the_target(stages, t):
    st_ = tuple(Stage(d, n) for d, n in stages)
    if total_s(st_) <= 0:
        return
    on = sum(any(a <= t < b for a, b in bot_intervals(st_, i)) for i in range(25))
    # Bot i is on while target > i, i.e. ceil(target) bots; only at the instant the target
    # crosses a whole number may float rounding put a bot on either side.
    target = target_at(st_, t)
    if abs(target - round(target)) > 1e-6:
        assert on == math.ceil(target)
    else:
        assert abs(on - round(target)) <= 1


def test_client_seconds_counts_only_the_window():
    st_ = parse_stages("10s:2,10s:2,10s:0", 10)  # bot 0 on [0, 30), bot 1 on [5, 25)
    assert client_seconds(st_, [0, 1], 0.0, 30.0) == pytest.approx(30 + 20)
    assert client_seconds(st_, [1], 10.0, 20.0) == pytest.approx(10)
    assert client_seconds(ramp_stages(3, 0.0), [0, 1, 2], 10.0, 20.0) == pytest.approx(30)


# -- worker messages ---------------------------------------------------------------------------


def _payload(t, bot_rows, connected=1, errors=None, counters=None):
    snap = np.array([r for _, r in bot_rows], dtype=np.float64).reshape(-1, 6)
    return {"t": t, "connected": connected, "failed": 0, "errors": errors or {},
            "close_codes": {}, "connect_messages": [],
            "snap_bot": np.array([b for b, _ in bot_rows], dtype=np.int32), "snap": snap,
            "crtt_bot": np.zeros(0, dtype=np.int32), "crtt": np.zeros(0),
            "counters": np.array(counters if counters is not None
                                 else [[b, 0, 0, 0] for b in {b for b, _ in bot_rows}],
                                 dtype=np.int64).reshape(-1, 4),
            "dropped": 0}


def _snaps(bot, t0, t1, rate=30.0, rtt=10.0):
    """Snapshot rows of one bot at `rate` per second over [t0, t1)."""
    n = round((t1 - t0) * rate)
    return [(bot, (t0 + k / rate, rtt, 50, 60, 0, 10)) for k in range(n)]


def test_live_line_counts_what_every_worker_has_reported_not_what_is_in_flight():
    # Two workers of one bot each at 30 snapshots/s; reports every 0.5 s, the second
    # worker a quarter second behind the first. At any moment part of the last second is
    # still in flight: the old "last second before now" count saw about 20% less.
    c = Collector(2)
    for k in range(1, 9):
        t = k * 0.5
        c.add("report", 0, _payload(t, _snaps(0, t - 0.5, t)))
        if k > 1:
            t1 = t - 0.25
            c.add("report", 1, _payload(t1, _snaps(1, t1 - 0.5, t1)))
    live = c.live()
    assert live["complete_s"] == pytest.approx(3.75)
    assert live["snapshots_per_s"] == 60  # both bots, a whole second
    assert live["rtt_p50"] == pytest.approx(10.0)
    # The same samples counted up to "now" (4.0 s, the newest report) fall short.
    rows = np.concatenate(c.snap)
    naive = int(((rows[:, 0] >= 3.0) & (rows[:, 0] < 4.0)).sum())
    assert naive < 60
    line = loadreport.progress_line(c, 65.0, 90.0, "measure")
    assert "1:05" in line and "left 0:25" in line and "snapshots/s     60" in line
    assert "(30.0/client)" in line


def test_a_finished_worker_no_longer_holds_the_live_line_back():
    c = Collector(2)
    c.add("report", 0, _payload(1.0, _snaps(0, 0.0, 1.0)))
    c.add("done", 1, _payload(0.5, _snaps(1, 0.0, 0.5)))
    assert c.live()["complete_s"] == 1.0


def test_timeseries_has_one_row_per_second():
    c = Collector(2)
    rows = _snaps(0, 0.0, 3.0) + _snaps(1, 1.0, 3.0, rtt=30.0)
    c.add("report", 0, _payload(1.0, rows[:30] + [r for r in rows[90:] if r[1][0] < 1.0],
                                connected=1))
    c.add("report", 0, _payload(2.0, [r for r in rows if 1.0 <= r[1][0] < 2.0], connected=2,
                                errors={"closed": 1}))
    c.add("done", 0, _payload(3.0, [r for r in rows if 2.0 <= r[1][0] < 3.0], connected=2,
                              errors={"closed": 3}))
    ts = loadreport.timeseries(c, np.concatenate(c.snap), 3.0)
    assert [r["t_s"] for r in ts] == [1, 2, 3]
    assert [r["clients"] for r in ts] == [1, 2, 2]
    assert [r["snapshots_per_s"] for r in ts] == [30, 60, 60]
    assert [r["bytes_in"] for r in ts] == [1800, 3600, 3600]
    assert [r["errors"] for r in ts] == [0, 1, 2]
    assert ts[0]["rtt_p50_ms"] == 10.0 and ts[1]["rtt_p99_ms"] == pytest.approx(30.0)


def _ctx(**over):
    ctx = ReportContext(url="ws://127.0.0.1:9/ws", count=2, behavior="wander",
                        stages=ramp_stages(2, 0.0), conditions=[])
    for k, v in over.items():
        setattr(ctx, k, v)
    return ctx


def _two_bots(errors=None, failed=0):
    c = Collector(2)
    p = _payload(5.0, _snaps(0, 0.0, 5.0) + _snaps(1, 0.0, 5.0), connected=2,
                 errors=errors, counters=[[0, 0, 0, 0], [1, 0, 0, 0]])
    p["failed"] = failed
    c.add("done", 0, p)
    return c


def test_by_default_a_run_fails_on_errors_and_failed_clients():
    clean = loadreport.build_report(_ctx(), _two_bots(), (0.0, 5.0), None, None)
    assert clean["passed"] and [ch["condition"] for ch in clean["thresholds"]] == \
        ["errors>0", "clients_failed>0"]
    closed = loadreport.build_report(_ctx(), _two_bots({"closed": 12}), (0.0, 5.0), None, None)
    assert not closed["passed"] and closed["failures"] == ["errors>0"]
    failed = loadreport.build_report(_ctx(), _two_bots({"connect": 1}, failed=1), (0.0, 5.0),
                                     None, None)
    assert failed["failures"] == ["errors>0", "clients_failed>0"]
    assert "default check" in loadreport.format_report(failed)
    # --allow-errors, or any explicit threshold, replaces the default checks.
    allowed = loadreport.build_report(_ctx(default_fail=False), _two_bots({"closed": 12}),
                                      (0.0, 5.0), None, None)
    assert allowed["passed"] and allowed["thresholds"] == []
    explicit = loadreport.build_report(
        _ctx(conditions=thresholds.parse_fail_on("rtt_p99_ms>100")), _two_bots({"closed": 1}),
        (0.0, 5.0), None, None)
    assert explicit["passed"]


def test_an_interrupted_run_still_reports_and_says_so():
    c = _two_bots()
    r = loadreport.build_report(_ctx(interrupted="SIGTERM"), c, (0.0, 2.5), None, None)
    assert r["interrupted"] is True and r["passed"] is False
    assert r["failures"][0] == "interrupted by SIGTERM"
    assert r["duration_s"] == 2.5 and r["snapshots_per_s"] == pytest.approx(30.0)


def test_a_lost_worker_is_an_error_and_a_note():
    c = _two_bots()
    c.add("ready", 1, {"pid": 7, "where": "hostb:7"})
    c.add("lost", 1, {"reason": "heartbeat expired"})
    r = loadreport.build_report(_ctx(), c, (0.0, 5.0), None, None)
    assert r["errors"]["worker_lost"] == 1
    assert any("hostb:7" in n and "heartbeat expired" in n for n in r["notes"])
    assert not r["passed"]


def test_csv_and_html_carry_the_series_and_the_summary():
    r = loadreport.build_report(_ctx(), _two_bots(), (0.0, 5.0), None, None)
    out = io.StringIO()
    loadhtml.write_csv(r, out)
    lines = out.getvalue().splitlines()
    assert lines[0] == "t_s,clients,snapshots_per_s,rtt_p50_ms,rtt_p99_ms,bytes_in,errors"
    assert len(lines) == 1 + len(r["timeseries"]) == 6
    # One report, at 5 s: the clients count is known from then on.
    assert lines[1] == "1,0,60,10.0,10.0,3600,0" and lines[5] == "5,2,60,10.0,10.0,3600,0"
    page = loadhtml.render_html(r)
    assert page.count("<svg") == 1 and "PASS" in page
    assert "rtt (server) ms" in page and "p90" in page
    assert page.count("<tr><td>") == 5  # the series table


# -- the master/worker wire ------------------------------------------------------------------------


def test_messages_round_trip_through_json():
    p = _payload(1.5, _snaps(3, 0.0, 0.2), counters=[[3, 10, -1, 0]])
    kind, worker, back = botfleet.decode_message(botfleet.encode_message(("report", 2, p)))
    assert (kind, worker) == ("report", 2)
    for key, value in p.items():
        if isinstance(value, np.ndarray):
            assert back[key].dtype == value.dtype and np.array_equal(back[key], value)
        else:
            assert back[key] == value


@pytest.mark.parametrize("data", [
    b"", b"\xff", b"[]", b'{"kind": "report"}', b'{"kind": "exec", "worker": 0, "payload": {}}',
    b'{"kind": "ready", "worker": "0", "payload": {}}',
    json.dumps({"kind": "report", "worker": 0, "payload": {"snap": {"__nd__": [
        "|O", [1], "AA=="]}}}).encode(),
    json.dumps({"kind": "report", "worker": 0, "payload": {"snap": {"__nd__": [
        "<f8", [5, 6], "AAAA"]}}}).encode(),
    json.dumps({"kind": "report", "worker": 0, "payload": {"snap": 1}}).encode(),
    botfleet.encode_message(("report", 0, _payload(1.0, [], errors={"closed": "many"}))),
    botfleet.encode_message(("done", 0, {**_payload(1.0, []), "snap_bot": np.zeros(3,
                                                                                   np.int32)})),
])
def test_anything_else_from_redis_is_a_bad_message(data):
    with pytest.raises(botfleet.BadMessage):
        botfleet.decode_message(data)


@given(st.binary(max_size=200))
@settings(max_examples=200, deadline=None)
def test_random_bytes_are_accepted_or_a_bad_message(data):
    with contextlib.suppress(botfleet.BadMessage):
        botfleet.decode_message(data)


def _order(**over):
    o = {"run": "ab12", "worker": 0, "url": "ws://127.0.0.1:1/ws", "behavior": "idle",
         "bot_ids": [0, 2], "total": 3, "stages": [[1.0, 3]], "seed": 1, "latency_ms": 0,
         "jitter_ms": 0, "loss": 0, "ack_only": False, "hard_s": 10}
    o.update(over)
    return json.dumps(o)


def test_orders_round_trip_and_are_checked_field_by_field():
    order = botfleet.Order.from_json(_order())
    assert botfleet.Order.from_json(order.to_json()) == order
    assert order.stages == ((1.0, 3),) and order.bot_ids == (0, 2)
    for over, field in [({"url": "http://x/"}, "url"), ({"behavior": "rm -rf"}, "behavior"),
                        ({"bot_ids": [5]}, "bot_ids"), ({"total": 0}, "total"),
                        ({"stages": [[1, -1]]}, "stages"), ({"run": "../x"}, "run"),
                        ({"loss": 1.0}, "loss"), ({"hard_s": float("nan")}, "hard_s"),
                        ({"seed": True}, "seed"), ({"matchmake": "ws://h:1/"}, "matchmake"),
                        ({"matchmake": 7}, "matchmake"), ({"mode": "a b"}, "mode"),
                        ({"mode": ["arena"]}, "mode")]:
        with pytest.raises(ValueError, match=field):
            botfleet.Order.from_json(_order(**over))


def test_orders_carry_matchmake_and_mode_and_default_to_a_direct_url():
    assert botfleet.Order.from_json(_order()).matchmake == ""
    order = botfleet.Order.from_json(_order(matchmake="http://127.0.0.1:8080", mode="duel"))
    assert (order.matchmake, order.mode) == ("http://127.0.0.1:8080", "duel")
    assert botfleet.Order.from_json(order.to_json()) == order


def test_redis_urls_are_shown_without_password():
    assert botfleet.redacted("redis://u:secret@h:6379/0") == "redis://u:***@h:6379/0"
    assert botfleet.redacted("redis://:secret@h/1") == "redis://:***@h/1"
    assert botfleet.redacted("redis://h:1/0") == "redis://h:1/0"
