"""`tickwire bots` run as the real CLI against a real server on loopback."""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from server.nodeproc import PYTHON_M_CLI, ServerProcess, free_port

ROOT = Path(__file__).resolve().parents[2]
TICKWIRE = PYTHON_M_CLI
ENV = {**os.environ, "PYTHONPATH": str(ROOT)}


@pytest.fixture(scope="module")
def server_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    log_path = tmp_path_factory.mktemp("bots-server") / "tickwire.log"
    srv = ServerProcess(port=free_port(), log_path=log_path, command=TICKWIRE, env=ENV,
                        cwd=ROOT, plain_logs=False, health_timeout_s=15.0,
                        extra_args=["--log-level", "warning"])
    try:
        srv.start()
    except RuntimeError as exc:
        pytest.fail(f"server did not become healthy: {exc}")
    try:
        yield srv.ws_url
    finally:
        srv.stop(timeout=5)


def _bots(*args: str, timeout: float = 30.0) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*TICKWIRE, "bots", *args], cwd=ROOT, env=ENV, text=True,
                          capture_output=True, timeout=timeout)


def test_bots_short_run_writes_complete_json_report_and_passes(server_url: str,
                                                               tmp_path: Path) -> None:
    out = tmp_path / "report.json"
    done = _bots("--url", server_url, "--count", "10", "--duration", "3", "--procs", "2",
                 "--json", str(out), "--fail-on", "rtt_p99_ms>1000,snapshots_per_s<20")
    assert done.returncode == 0, done.stdout + done.stderr
    report = json.loads(out.read_text())
    for key in ("clients_target", "clients_connected", "clients_failed", "duration_s",
                "rtt_ms", "client_rtt_ms", "snapshots_per_s", "snapshot_interval_ms",
                "bytes_in_per_s", "keyframes", "errors", "close_codes", "server"):
        assert key in report, key
    assert report["clients_target"] == 10
    assert report["clients_connected"] == 10
    assert report["clients_failed"] == 0
    assert report["duration_s"] == pytest.approx(3.0, abs=0.6)
    assert report["snapshots_per_s"] > 20
    for name in ("rtt_ms", "client_rtt_ms"):
        assert set(report[name]) == {"p50", "p95", "p99"}
        assert all(v is not None and v >= 0 for v in report[name].values())
    assert report["snapshot_interval_ms"]["p50"] > 0
    assert report["snapshot_interval_ms"]["max"] >= report["snapshot_interval_ms"]["p99"]
    assert report["bytes_in_per_s"] > 0
    assert report["keyframes"] >= 0
    assert report["errors"] == {}
    assert report["server"]["tick_rate"] > 20
    assert report["server"]["tick_duration_ms_p99"] is not None
    assert report["passed"] is True
    assert "PASS" in done.stdout


def test_bots_threshold_that_cannot_hold_exits_1_and_names_it(server_url: str) -> None:
    # --fail-on lists failure conditions: this one is true for every real server.
    done = _bots("--url", server_url, "--count", "3", "--duration", "1", "--procs", "1",
                 "--fail-on", "snapshots_per_s<1000")
    assert done.returncode == 1, done.stdout + done.stderr
    assert "snapshots_per_s<1000" in done.stdout
    assert "FAIL" in done.stdout


def test_bots_against_a_server_that_is_down_says_so_and_exits_1() -> None:
    done = _bots("--url", f"ws://127.0.0.1:{free_port()}/ws", "--count", "3",
                 "--duration", "1", "--procs", "1")
    assert done.returncode == 1
    assert "no bot could connect" in done.stdout
    assert "connect 3" in done.stdout
    assert "Traceback" not in done.stderr


@pytest.mark.parametrize("fail_on", ["rtt_p99_ms=>150", "nonsense>1", "rtt_p99_ms>abc", ","])
def test_bots_bad_fail_on_syntax_exits_2(fail_on: str) -> None:
    done = _bots("--url", "ws://127.0.0.1:9/ws", "--count", "1", "--duration", "1",
                 "--fail-on", fail_on, timeout=15)
    assert done.returncode == 2
    assert "--fail-on" in done.stderr
    assert "Traceback" not in done.stderr
