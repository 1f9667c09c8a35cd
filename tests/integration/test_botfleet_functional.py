"""`tickwire bots --master/--worker` on 127.0.0.1: real worker processes, a real
redis-server, a real game server. Every wait is bounded; processes are ended by pid."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from server.nodeproc import PYTHON_M_CLI, ServerProcess, free_port

ROOT = Path(__file__).resolve().parents[2]
ENV = {**os.environ, "PYTHONPATH": str(ROOT)}


@pytest.fixture(scope="module")
def game(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    log_path = tmp_path_factory.mktemp("fleet-server") / "tickwire.log"
    srv = ServerProcess(port=free_port(), log_path=log_path, command=PYTHON_M_CLI, env=ENV,
                        cwd=ROOT, plain_logs=False, health_timeout_s=15.0,
                        extra_args=["--log-level", "warning"])
    srv.start()
    try:
        yield srv
    finally:
        srv.stop(timeout=5)


def _players(srv: ServerProcess) -> float:
    with urllib.request.urlopen(f"{srv.base_url}/metrics", timeout=5) as resp:
        text = resp.read().decode()
    return next(float(line.split()[-1]) for line in text.splitlines()
                if line.startswith("tickwire_players "))


def _wait_players(srv: ServerProcess, n: float, bound_s: float) -> float:
    until = time.monotonic() + bound_s
    while (got := _players(srv)) != n and time.monotonic() < until:
        time.sleep(0.2)
    return got


class Workers:
    """`tickwire bots --worker` subprocesses, each logging to its own file."""

    def __init__(self, tmp: Path, redis_url: str, prefix: str) -> None:
        self.tmp, self.redis_url, self.prefix = tmp, redis_url, prefix
        self.procs: list[subprocess.Popen] = []
        self.logs: list[Path] = []

    def start(self, n: int) -> Workers:
        for _ in range(n):
            log = self.tmp / f"worker{len(self.procs)}.log"
            with log.open("wb") as fh:
                self.procs.append(subprocess.Popen(
                    [*PYTHON_M_CLI, "bots", "--worker", "--redis", self.redis_url,
                     "--prefix", self.prefix], cwd=ROOT, env=ENV, stdout=fh, stderr=fh))
            self.logs.append(log)
        until = time.monotonic() + 30
        while time.monotonic() < until and not all(
                "waiting for orders" in log.read_text() for log in self.logs):
            time.sleep(0.1)
        assert all("waiting for orders" in log.read_text() for log in self.logs), self.text()
        return self

    def text(self) -> str:
        return "\n".join(log.read_text() for log in self.logs)

    def stop(self) -> list[int | None]:
        codes = []
        for proc in self.procs:
            if proc.poll() is None:
                os.kill(proc.pid, signal.SIGTERM)
                try:
                    proc.wait(timeout=30)  # a worker exits in ~1 s; a loaded box is slow
                except subprocess.TimeoutExpired:
                    os.kill(proc.pid, signal.SIGUSR1)  # its stacks, into its log
                    time.sleep(1.0)
                    os.kill(proc.pid, signal.SIGKILL)
                    proc.wait(timeout=5)
            codes.append(proc.returncode)
        return codes


@pytest.fixture
def prefix() -> str:
    return f"test:bots:{uuid.uuid4().hex[:8]}"


def _master_cmd(srv: ServerProcess, redis_url: str, prefix: str, *args: str) -> list[str]:
    return [*PYTHON_M_CLI, "bots", "--master", "--redis", redis_url, "--prefix", prefix,
            "--url", srv.ws_url, "--workers-wait", "20", *args]


def _wait_line(proc: subprocess.Popen, text: str, bound_s: float) -> str:
    assert proc.stdout is not None
    until = time.monotonic() + bound_s
    seen = []
    for line in proc.stdout:
        seen.append(line)
        if text in line or time.monotonic() > until:
            break
    assert any(text in line for line in seen), "".join(seen)
    return "".join(seen)


def test_three_workers_run_one_swarm_and_the_master_writes_one_report(
        game: ServerProcess, redis_server, prefix: str, tmp_path: Path) -> None:
    workers = Workers(tmp_path, redis_server.url, prefix).start(3)
    try:
        out = tmp_path / "fleet.json"
        done = subprocess.run(_master_cmd(game, redis_server.url, prefix, "--workers", "3",
                                          "--count", "9", "--duration", "2", "--ramp", "0.5",
                                          "--json", str(out)),
                              cwd=ROOT, env=ENV, text=True, capture_output=True, timeout=90)
        assert done.returncode == 0, done.stdout + done.stderr
        report = json.loads(out.read_text())
        said = done.stdout + workers.text()
        assert report["mode"] == "master" and report["procs"] == 3, said
        assert len(report["workers"]) == 3, said
        assert report["clients_connected"] == 9 and report["errors"] == {}, said
        assert report["snapshots_per_s"] > 0, said  # samples came back through Redis
        assert report["server"]["clients_per_room"] == [9], said
        assert "3 workers via Redis" in done.stdout
        # Each worker ran its share and went back to waiting for the next order.
        assert all(p.poll() is None for p in workers.procs)
        # (A worker logs "done" just after its last message reached Redis: wait for it.)
        until = time.monotonic() + 15
        while workers.text().count(": done") < 3 and time.monotonic() < until:
            time.sleep(0.1)
        assert workers.text().count(": done") == 3
        assert _wait_players(game, 0, 15) == 0
    finally:
        codes = workers.stop()
    assert codes == [0, 0, 0], workers.text()


def test_a_worker_killed_mid_run_is_reported_and_the_report_still_written(
        game: ServerProcess, redis_server, prefix: str, tmp_path: Path) -> None:
    workers = Workers(tmp_path, redis_server.url, prefix).start(2)
    out = tmp_path / "lost.json"
    master = subprocess.Popen(_master_cmd(game, redis_server.url, prefix, "--workers", "2",
                                          "--count", "4", "--duration", "12", "--ramp", "0",
                                          "--json", str(out)),
                              cwd=ROOT, env=ENV, text=True, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE)
    try:
        _wait_line(master, "connected 4/4", 60)
        os.kill(workers.procs[1].pid, signal.SIGKILL)  # no goodbye, no last report
        stdout, stderr = master.communicate(timeout=60)
        assert master.returncode == 1, stdout + stderr
        report = json.loads(out.read_text())
        assert report["errors"].get("worker_lost") == 1
        assert any("worker lost" in n and "heartbeat expired" in n for n in report["notes"])
        assert "errors>0: FAILED" in stdout
        assert report["clients_connected"] == 4  # what it measured before the loss
    finally:
        if master.poll() is None:
            master.kill()
            master.wait(timeout=5)
        workers.stop()


def test_workers_stop_their_bots_when_the_master_dies(
        game: ServerProcess, redis_server, prefix: str, tmp_path: Path) -> None:
    workers = Workers(tmp_path, redis_server.url, prefix).start(2)
    master = subprocess.Popen(_master_cmd(game, redis_server.url, prefix, "--workers", "2",
                                          "--count", "4", "--duration", "300", "--ramp", "0"),
                              cwd=ROOT, env=ENV, text=True, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE)
    try:
        _wait_line(master, "connected 4/4", 60)
        assert _players(game) == 4
        os.kill(master.pid, signal.SIGKILL)
        master.wait(timeout=5)
        # Heartbeat TTL (5 s) + a check (0.5 s) + the bots' bounded leave (3 s), with room.
        assert _wait_players(game, 0, 20) == 0
        assert "the master's heartbeat expired" in workers.text()
        assert all(p.poll() is None for p in workers.procs)  # ready for the next master
    finally:
        if master.poll() is None:
            master.kill()
            master.wait(timeout=5)
        workers.stop()


@pytest.mark.parametrize("role", [["--master", "--url", "ws://127.0.0.1:9/ws", "--count", "1",
                                   "--duration", "1"], ["--worker"]])
def test_redis_down_at_start_is_one_clear_line(role: list[str]) -> None:
    url = f"redis://:hunter2@127.0.0.1:{free_port()}/0"
    done = subprocess.run([*PYTHON_M_CLI, "bots", *role, "--redis", url], cwd=ROOT, env=ENV,
                          text=True, capture_output=True, timeout=30)
    assert done.returncode == 1
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert lines[0].startswith("tickwire bots: cannot reach Redis at redis://:***@127.0.0.1")
    assert "hunter2" not in done.stderr


def test_a_master_with_no_worker_says_so(redis_server, prefix: str) -> None:
    done = subprocess.run([*PYTHON_M_CLI, "bots", "--master", "--redis", redis_server.url,
                           "--prefix", prefix, "--url", "ws://127.0.0.1:9/ws", "--count", "1",
                           "--duration", "1", "--workers-wait", "0.5"],
                          cwd=ROOT, env=ENV, text=True, capture_output=True, timeout=30)
    assert done.returncode == 1
    assert "no bot worker registered" in done.stderr
    assert "Traceback" not in done.stderr


def test_a_busy_worker_is_not_handed_a_second_run(redis_server, prefix: str) -> None:
    import redis
    r = redis.Redis.from_url(redis_server.url)
    try:
        # A live heartbeat of a worker that is running another master's run.
        r.set(f"{prefix}:worker:elsewhere-1", json.dumps({"busy": True}), ex=30)
        done = subprocess.run([*PYTHON_M_CLI, "bots", "--master", "--redis", redis_server.url,
                               "--prefix", prefix, "--url", "ws://127.0.0.1:9/ws",
                               "--count", "1", "--duration", "1", "--workers-wait", "0.5"],
                              cwd=ROOT, env=ENV, text=True, capture_output=True, timeout=30)
        assert done.returncode == 1
        assert "no bot worker registered" in done.stderr
        assert r.llen(f"{prefix}:orders:elsewhere-1") == 0  # no order was queued for it
    finally:
        r.delete(f"{prefix}:worker:elsewhere-1")
        r.close()


def test_redis_lost_mid_run_stops_the_bots_and_the_master_still_reports(
        game: ServerProcess, own_redis, prefix: str, tmp_path: Path) -> None:
    workers = Workers(tmp_path, own_redis.url, prefix).start(2)
    out = tmp_path / "redis-lost.json"
    master = subprocess.Popen(_master_cmd(game, own_redis.url, prefix, "--workers", "2",
                                          "--count", "4", "--duration", "300", "--ramp", "0",
                                          "--json", str(out)),
                              cwd=ROOT, env=ENV, text=True, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE)
    try:
        _wait_line(master, "connected 4/4", 60)
        own_redis.stop()
        # Workers: a failed check (0.5 s) stops the bots, which leave within 3 s.
        assert _wait_players(game, 0, 20) == 0
        # Master: Redis gone for a heartbeat's TTL (5 s) means every worker is lost to it.
        stdout, stderr = master.communicate(timeout=60)
        assert master.returncode == 1, stdout + stderr
        report = json.loads(out.read_text())
        assert report["errors"].get("worker_lost") == 2
        assert any("Redis unreachable" in n for n in report["notes"])
        assert report["clients_connected"] == 4
        assert "Traceback" not in stderr
    finally:
        if master.poll() is None:
            master.kill()
            master.wait(timeout=5)
        workers.stop()


def _fleet_node(tmp: Path, redis_url: str, params: Path) -> ServerProcess:
    port = free_port()
    return ServerProcess(port=port, log_path=tmp / f"node-{port}.log", command=PYTHON_M_CLI,
                         env=ENV, cwd=ROOT, plain_logs=False, health_timeout_s=15.0,
                         extra_args=["--log-level", "warning", "--redis", redis_url,
                                     "--lease", "2", "--refresh", "0.5",
                                     "--mode", f"duel={params}"])


def test_master_orders_carry_matchmake_and_mode_so_the_bots_spread_over_the_fleet(
        redis_server, prefix: str, tmp_path: Path) -> None:
    """2 fleet nodes offering mode `duel` (rooms of 3); 2 workers; the master is given
    --matchmake (one node) and --mode duel: 6 bots fill two rooms, one on each node."""
    import redis as sync_redis

    fleet_url = f"redis://{redis_server.host}:{redis_server.port}/14"
    sync_redis.Redis.from_url(fleet_url).flushdb()
    params = tmp_path / "duel.toml"
    params.write_text("[room]\nmax_players = 3\n[npc]\ncount = 0\n")
    nodes = [_fleet_node(tmp_path, fleet_url, params) for _ in range(2)]
    for node in nodes:
        node.start()
    workers = Workers(tmp_path, redis_server.url, prefix).start(2)
    try:
        out = tmp_path / "fleet.json"
        cmd = [*PYTHON_M_CLI, "bots", "--master", "--redis", redis_server.url, "--prefix",
               prefix, "--matchmake", nodes[0].base_url, "--mode", "duel", "--workers", "2",
               "--workers-wait", "20", "--count", "6", "--duration", "3", "--ramp", "0.5",
               "--json", str(out)]
        master = subprocess.Popen(cmd, cwd=ROOT, env=ENV, text=True, stdout=subprocess.PIPE,
                                  stderr=subprocess.STDOUT)
        try:
            # While the bots play, each node holds one full room of the mode.
            until = time.monotonic() + 40
            seen = [0.0, 0.0]
            while time.monotonic() < until and seen != [3.0, 3.0] and master.poll() is None:
                seen = [_players(node) for node in nodes]
                time.sleep(0.2)
            said, _ = master.communicate(timeout=60)
        finally:
            if master.poll() is None:
                os.kill(master.pid, signal.SIGTERM)
                master.wait(timeout=10)
        assert seen == [3.0, 3.0], said + workers.text()
        assert master.returncode == 0, said + workers.text()
        report = json.loads(out.read_text())
        assert report["clients_connected"] == 6 and report["errors"] == {}, said
        assert workers.text().count(f"matchmaking at {nodes[0].base_url} (mode duel)") == 2
    finally:
        codes = workers.stop()
        for node in nodes:
            node.stop(timeout=5)
    assert codes == [0, 0], workers.text()
