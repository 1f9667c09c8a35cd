"""`python -m bench.fleet` end to end at a small scale: its own redis-server, 2 real node
processes, real joins and real bots, then 1 node without Redis. Checks that every phase
ran and wrote its figures (the figures themselves are data, not asserted)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_bench_fleet_runs_every_phase_at_a_small_scale_functional(redis_server,
                                                                  tmp_path: Path) -> None:
    # `redis_server`: redis-server is installed (or the test is skipped / fails under CI);
    # the benchmark starts its own on a free port.
    out = tmp_path / "fleet.json"
    done = subprocess.run(
        [sys.executable, "-m", "bench.fleet", "--joins", "10", "--rate", "20", "--bots", "4",
         "--duration", "2", "--warmup", "0.5", "--entities", "10", "--out", str(out)],
        cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)}, capture_output=True,
        text=True, timeout=240)
    said = done.stdout + done.stderr
    assert done.returncode == 0, said
    result = json.loads(out.read_text())
    join = result["join"]
    assert (join["ok"], join["failed"]) == (10, 0), said
    assert 0 < join["matchmake_to_welcome_ms"]["p50"] <= join["matchmake_to_welcome_ms"]["p99"]
    # Each join is at least a reserve and a consume script call.
    assert result["redis_round_trips_per_join"] >= 2, said
    assert result["redis_commands"].get("evalsha", 0) >= 20, said
    for phase, nodes in (("fleet_2_nodes", 2), ("single_node", 1)):
        cpu = result[phase]
        assert cpu["nodes"] == nodes and cpu["connected"] == 4, said
        assert len(cpu["cpu_cores_per_node"]) == nodes and cpu["cpu_cores_total"] > 0, said
        assert cpu["snapshots_per_s"] > 0 and cpu["errors"] == {}, said
    # Rooms of bots/2: matchmaking put one room on each node of the fleet.
    assert result["fleet_2_nodes"]["players_max_per_node"] == [2, 2], said
    assert result["single_node"]["players_max_per_node"] == [4], said
    assert "matchmake-to-Welcome" in done.stdout and "millicores per player" in done.stdout
