"""The headless balance runner: deterministic per seed, sane statistics, CLI output."""

from __future__ import annotations

import json

import pytest

from server.cli import main
from server.simrunner import format_table, run_sim
from sim.params import load_params


@pytest.mark.parametrize("behavior", ["wander", "chase"])
def test_same_seed_gives_the_same_stats(behavior):
    params = load_params()
    a = run_sim(params, ticks=300, players=8, behavior=behavior, seed=7)
    b = run_sim(params, ticks=300, players=8, behavior=behavior, seed=7)
    c = run_sim(params, ticks=300, players=8, behavior=behavior, seed=8)
    assert a.deterministic() == b.deterministic()
    assert a.deterministic() != c.deterministic()


def test_chasers_shoot_and_kill_and_stats_are_consistent():
    s = run_sim(load_params(), ticks=900, players=12, behavior="chase", seed=1)
    assert s.shots > 0 and 0 < s.hits <= s.shots
    assert s.hit_rate == pytest.approx(s.hits / s.shots)
    assert s.kills == s.player_kills + s.npc_kills > 0
    assert s.deaths == s.player_kills  # only players kill players here
    if s.deaths:
        assert 0 < s.mean_time_to_kill_s <= s.sim_seconds
    assert 0 < s.mean_speed <= load_params().player_max_speed + 1e-3
    assert s.ticks_per_second > 0


def test_a_balance_change_shows_in_the_stats():
    base = load_params()
    slow = base.with_changes({"player.max_speed": 60.0})
    fast = run_sim(base, ticks=300, players=6, behavior="wander", seed=2)
    slowed = run_sim(slow, ticks=300, players=6, behavior="wander", seed=2)
    assert slowed.mean_speed < 61.0 < fast.mean_speed


def test_more_players_than_the_room_limit_are_given_room():
    s = run_sim(load_params().with_changes({"room.max_players": 4}), ticks=10, players=10)
    assert s.players == 10


def test_cli_prints_a_table_and_writes_json(tmp_path, capsys):
    out = tmp_path / "stats.json"
    assert main(["sim", "--ticks", "60", "--players", "4", "--seed", "3",
                 "--behavior", "chase", "--json", str(out)]) == 0
    table = capsys.readouterr().out
    assert "hit rate" in table and "mean time to kill" in table
    data = json.loads(out.read_text())
    assert data["ticks"] == 60 and data["players"] == 4 and data["behavior"] == "chase"
    assert "ticks_per_second" in data


def test_format_table_handles_a_run_without_shots():
    s = run_sim(load_params().with_changes({"projectile.enabled": False}), ticks=30,
                players=2)
    assert s.hit_rate is None and "n/a" in format_table(s)
