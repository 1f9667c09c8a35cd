"""`tickwire bots` run as the real CLI against a real server on loopback."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
import urllib.request
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
        assert set(report[name]) == {"p50", "p90", "p95", "p99", "max"}
        assert all(v is not None and v >= 0 for v in report[name].values())
    assert report["snapshot_interval_ms"]["p50"] > 0
    assert report["snapshot_interval_ms"]["max"] >= report["snapshot_interval_ms"]["p99"]
    assert report["bytes_in_per_s"] > 0
    assert report["keyframes"] >= 0
    assert report["errors"] == {}
    srv = report["server"]
    assert srv["rooms"] == 1 and srv["clients_per_room"] == [10]
    assert srv["tick_rate_per_room"][0] > 20
    assert srv["tick_duration_ms"]["p99"] is not None
    # Wander bots on a busy machine may bunch inputs: the server says so, by reason.
    assert srv["inputs_rejected_total"] == sum(srv["inputs_rejected"].values())
    assert max(row["clients"] for row in report["timeseries"]) == 10
    assert report["passed"] is True
    assert "PASS" in done.stdout


def test_bots_threshold_that_cannot_hold_exits_1_and_names_it(server_url: str) -> None:
    # --fail-on lists failure conditions: this one is true for every real server.
    done = _bots("--url", server_url, "--count", "3", "--duration", "1", "--procs", "1",
                 "--fail-on", "snapshots_per_s<1000")
    assert done.returncode == 1, done.stdout + done.stderr
    assert "snapshots_per_s<1000" in done.stdout
    assert "FAIL" in done.stdout


def test_bots_against_a_server_that_is_down_gives_up_after_the_connect_phase(
        tmp_path: Path) -> None:
    out = tmp_path / "dead.json"
    done = _bots("--url", f"ws://127.0.0.1:{free_port()}/ws", "--count", "3",
                 "--duration", "600", "--procs", "1", "--json", str(out), timeout=60)
    assert done.returncode == 1
    assert "no bot could connect" in done.stdout
    assert "connect 3" in done.stdout
    assert "gave up after the connect phase" in done.stdout
    assert "Traceback" not in done.stderr
    assert json.loads(out.read_text())["duration_s"] == 0.0  # the 600 s were never waited


@pytest.mark.parametrize("fail_on", ["rtt_p99_ms=>150", "nonsense>1", "rtt_p99_ms>abc", ","])
def test_bots_bad_fail_on_syntax_exits_2(fail_on: str) -> None:
    done = _bots("--url", "ws://127.0.0.1:9/ws", "--count", "1", "--duration", "1",
                 "--fail-on", fail_on, timeout=15)
    assert done.returncode == 2
    assert "--fail-on" in done.stderr
    assert "Traceback" not in done.stderr


def test_spam_shows_server_side_input_rejections(server_url: str, tmp_path: Path) -> None:
    out = tmp_path / "spam.json"
    done = _bots("--url", server_url, "--count", "2", "--duration", "2", "--procs", "1",
                 "--behavior", "spam", "--json", str(out), "--fail-on", "inputs_rejected<1")
    assert done.returncode == 0, done.stdout + done.stderr
    srv = json.loads(out.read_text())["server"]
    assert srv["inputs_rejected_total"] > 0
    assert sum(srv["inputs_rejected"].values()) == srv["inputs_rejected_total"]
    assert "inputs rejected" in done.stdout


def test_stages_ramp_up_and_down_with_csv_and_html(server_url: str, tmp_path: Path) -> None:
    paths = {k: tmp_path / f"stages.{k}" for k in ("json", "csv", "html")}
    done = _bots("--url", server_url, "--stages", "1s:4,2s:4,1s:0", "--procs", "2",
                 *(a for k, p in paths.items() for a in (f"--{k}", str(p))))
    assert done.returncode == 0, done.stdout + done.stderr
    report = json.loads(paths["json"].read_text())
    assert report["clients_target"] == 4 and report["clients_connected"] == 4
    assert [s["target"] for s in report["stages"]] == [1 * 4, 4, 0]
    clients = [row["clients"] for row in report["timeseries"]]
    assert max(clients) == 4 and clients[-1] == 0  # up, then down to nobody
    assert report["errors"] == {}  # leaving on schedule is not an error
    csv_lines = paths["csv"].read_text().splitlines()
    assert csv_lines[0].startswith("t_s,clients,") and len(csv_lines) == len(clients) + 1
    page = paths["html"].read_text()
    assert "<svg" in page and "PASS" in page


def test_by_default_failed_clients_fail_the_run(tmp_path: Path) -> None:
    # A server that lets 2 sockets in from this address: 2 of 4 bots fail to join.
    log_path = tmp_path / "capped.log"
    srv = ServerProcess(port=free_port(), log_path=log_path, command=TICKWIRE, env=ENV,
                        cwd=ROOT, plain_logs=False, health_timeout_s=15.0,
                        extra_args=["--log-level", "warning", "--max-conns-per-ip", "2"])
    srv.start()
    try:
        args = ("--url", srv.ws_url, "--count", "4", "--duration", "1", "--procs", "1",
                "--ramp", "0")
        failed = _bots(*args)
        assert failed.returncode == 1, failed.stdout
        assert "clients_failed>0: FAILED" in failed.stdout
        allowed = _bots(*args, "--allow-errors")
        assert allowed.returncode == 0, allowed.stdout
        assert "2/4 connected, 2 failed" in allowed.stdout
    finally:
        srv.stop(timeout=5)


def _players(base_url: str) -> float:
    with urllib.request.urlopen(f"{base_url}/metrics", timeout=5) as resp:
        text = resp.read().decode()
    return next(float(line.split()[-1]) for line in text.splitlines()
                if line.startswith("tickwire_players "))


@pytest.mark.parametrize(("sig", "to_group"), [
    (signal.SIGINT, True),  # Ctrl-C in a terminal: the whole foreground process group
    (signal.SIGTERM, False),  # kill PID
    (signal.SIGTERM, True),  # docker stop, kill -- -PGID
])
def test_a_signal_stops_the_workers_and_still_writes_the_report(sig: int, to_group: bool,
                                                                 tmp_path: Path) -> None:
    log_path = tmp_path / "server.log"
    srv = ServerProcess(port=free_port(), log_path=log_path, command=TICKWIRE, env=ENV,
                        cwd=ROOT, plain_logs=False, health_timeout_s=15.0,
                        extra_args=["--log-level", "warning"])
    srv.start()
    out = tmp_path / "interrupted.json"
    proc = subprocess.Popen([*TICKWIRE, "bots", "--url", srv.ws_url, "--count", "4",
                             "--duration", "120", "--procs", "2", "--ramp", "0",
                             "--json", str(out)], cwd=ROOT, env=ENV, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            start_new_session=True)  # its own group: ours to signal
    try:
        # Wait (bounded) until the live line says every bot is in.
        deadline = time.monotonic() + 60
        assert proc.stdout is not None
        for line in proc.stdout:
            if "connected 4/4" in line or time.monotonic() > deadline:
                break
        assert _players(srv.base_url) == 4
        if to_group:
            os.killpg(proc.pid, sig)  # the group this test started (its leader's pid)
        else:
            os.kill(proc.pid, sig)
        stdout, stderr = proc.communicate(timeout=30)
        assert proc.returncode == 128 + sig, stdout + stderr
        assert f"interrupted by {signal.Signals(sig).name}" in stdout
        report = json.loads(out.read_text())
        assert report["interrupted"] is True and report["passed"] is False
        assert report["clients_connected"] == 4 and report["snapshots_per_s"] > 0
        assert "worker_lost" not in report["errors"]  # every worker sent its last report
        assert "Traceback" not in stderr
        # The workers went with the parent: their bots are gone from the server (bounded).
        gone_by = time.monotonic() + 15
        while _players(srv.base_url) > 0 and time.monotonic() < gone_by:
            time.sleep(0.2)
        assert _players(srv.base_url) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=5)
        srv.stop(timeout=5)


def _children(pid: int) -> list[int]:
    with open(f"/proc/{pid}/task/{pid}/children", encoding="ascii") as fh:
        return [int(p) for p in fh.read().split()]


def _running(pid: int) -> bool:
    """Alive and not a zombie (a reparented child may wait to be reaped)."""
    try:
        with open(f"/proc/{pid}/status", encoding="ascii") as fh:
            return not any(line.startswith("State:") and "Z" in line for line in fh)
    except FileNotFoundError:
        return False


def test_workers_stop_by_themselves_when_the_parent_is_killed(tmp_path: Path) -> None:
    srv = ServerProcess(port=free_port(), log_path=tmp_path / "server.log", command=TICKWIRE,
                        env=ENV, cwd=ROOT, plain_logs=False, health_timeout_s=15.0,
                        extra_args=["--log-level", "warning"])
    srv.start()
    proc = subprocess.Popen([*TICKWIRE, "bots", "--url", srv.ws_url, "--count", "4",
                             "--duration", "120", "--procs", "2", "--ramp", "0"],
                            cwd=ROOT, env=ENV, text=True, stdout=subprocess.PIPE,
                            stderr=subprocess.DEVNULL)
    workers: list[int] = []
    try:
        deadline = time.monotonic() + 60
        assert proc.stdout is not None
        for line in proc.stdout:
            if "connected 4/4" in line or time.monotonic() > deadline:
                break
        assert _players(srv.base_url) == 4
        workers = [pid for pid in _children(proc.pid)
                   if "tickwire-bots" in Path(f"/proc/{pid}/cmdline").read_text()
                   or "multiprocessing" in Path(f"/proc/{pid}/cmdline").read_text()]
        assert len(workers) >= 2
        os.kill(proc.pid, signal.SIGKILL)  # no handler runs: the workers must notice
        proc.wait(timeout=5)
        gone_by = time.monotonic() + 20
        while _players(srv.base_url) > 0 and time.monotonic() < gone_by:
            time.sleep(0.2)
        assert _players(srv.base_url) == 0
        while any(_running(pid) for pid in workers) and time.monotonic() < gone_by:
            time.sleep(0.2)
        assert not any(_running(pid) for pid in workers)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=5)
        for pid in workers:  # only the children this test started, by pid
            if _running(pid):
                os.kill(pid, signal.SIGKILL)
        srv.stop(timeout=5)
