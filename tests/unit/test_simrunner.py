"""The headless balance runner: deterministic per seed, sane statistics, CLI output."""

from __future__ import annotations

import json
import re

import pytest

from server.cli import main
from server.simrunner import format_table, run_seeds, run_sim
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
        assert 0 < s.mean_spawn_to_death_s <= s.sim_seconds
    # The distributions add up to the totals.
    assert len(s.lives_s) == s.deaths
    assert s.mean_spawn_to_death_s == pytest.approx(sum(s.lives_s) / s.deaths)
    assert len(s.kills_per_player) == s.players and sum(s.kills_per_player) == s.kills
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
    assert "hit rate" in table and "mean time spawn -> death" in table
    data = json.loads(out.read_text())
    assert data["ticks"] == 60 and data["players"] == 4 and data["behavior"] == "chase"
    assert "ticks_per_second" in data
    # The parameters used, as the run saw them (seed included).
    assert data["params_file"] == "built-in defaults"
    assert data["params"]["world.seed"] == 3
    assert data["params"]["projectile.damage"] == load_params().projectile_damage


def test_format_table_handles_a_run_without_shots():
    s = run_sim(load_params().with_changes({"projectile.enabled": False}), ticks=30,
                players=2)
    assert s.hit_rate is None and "n/a" in format_table(s)


# -- many seeds, A/B, HTML ------------------------------------------------------------------

def test_seeds_run_in_worker_processes_give_the_same_runs_as_in_process():
    params = load_params()
    runs, base = run_seeds(params, [4, 5, 6], ticks=90, players=4, behavior="chase", jobs=2)
    assert base == []
    for seed, run in zip([4, 5, 6], runs, strict=True):
        here = run_sim(params, ticks=90, players=4, behavior="chase", seed=seed)
        assert run.deterministic() == here.deterministic()


DAMAGE = "# more damage\n[projectile]\ndamage = 100\n"


def test_against_marks_a_real_change_significant_and_puts_params_in_json(tmp_path, capsys):
    cand = tmp_path / "cand.toml"
    cand.write_text(DAMAGE)
    out = tmp_path / "ab.json"
    assert main(["sim", "--params", str(cand), "--against", "sim/default_params.toml",
                 "--ticks", "300", "--players", "8", "--behavior", "chase",
                 "--seeds", "5", "--jobs", "2", "--json", str(out)]) == 0
    text = capsys.readouterr().out
    report = json.loads(out.read_text())
    assert report["config"] == {"ticks": 300, "players": 8, "behavior": "chase",
                                "seeds": [1, 2, 3, 4, 5], "jobs": 2, "sim_seconds": 10.0}
    assert report["candidate"]["params"]["projectile.damage"] == 100
    assert report["base"]["params"]["projectile.damage"] == 25
    assert "world.seed" not in report["candidate"]["params"]  # one per run: config.seeds
    assert report["params_changed"] == {"projectile.damage": {"candidate": 100, "base": 25}}
    assert [r["seed"] for r in report["candidate"]["runs"]] == [1, 2, 3, 4, 5]
    kills = report["comparison"]["kills"]
    assert kills["significant"] and kills["diff"] > 0 and kills["p"] < 0.05
    summary = report["candidate"]["summary"]["kills"]
    assert summary["n"] == 5 and summary["ci95"][0] < summary["mean"] < summary["ci95"][1]
    # The text table marks it, and names the metric for what it is.
    row = next(ln for ln in text.splitlines() if ln.startswith("kills by players"))
    assert row.rstrip().endswith(f"{kills['p']:.3g}") and " * " in row
    assert "mean time from spawn to death" in text
    assert "projectile.damage 25 -> 100" in text


def test_against_the_same_file_finds_no_difference(tmp_path):
    out = tmp_path / "same.json"
    assert main(["sim", "--against", "sim/default_params.toml", "--ticks", "120",
                 "--players", "4", "--seeds", "3", "--jobs", "1", "--json", str(out)]) == 0
    report = json.loads(out.read_text())
    assert report["params_changed"] == {}
    for metric, c in report["comparison"].items():
        assert not c["significant"], metric
        assert c["diff"] in (0.0, None), metric


def test_html_report_has_the_three_charts_and_the_table(tmp_path):
    cand = tmp_path / "cand.toml"
    cand.write_text(DAMAGE)
    page = tmp_path / "report.html"
    assert main(["sim", "--params", str(cand), "--against", "sim/default_params.toml",
                 "--ticks", "300", "--players", "6", "--behavior", "chase", "--seeds", "3",
                 "--jobs", "1", "--html", str(page), "--json", "-"]) == 0
    html = page.read_text()
    images = re.findall(r'<img alt="([^"]+)" src="data:image/png;base64,', html)
    assert images == ["Time alive", "Kills per player", "A/B comparison"]
    assert "mean time from spawn to death (ended lives)" in html
    assert "<code>projectile.damage</code>: 25 → 100" in html


def test_html_for_one_file_has_the_distributions(tmp_path):
    page = tmp_path / "one.html"
    assert main(["sim", "--ticks", "120", "--players", "4", "--seeds", "2", "--jobs", "1",
                 "--html", str(page)]) == 0
    images = re.findall(r'<img alt="([^"]+)"', page.read_text())
    assert images == ["Time alive", "Kills per player"]


def test_a_bad_against_file_is_an_error_naming_it(tmp_path, capsys):
    bad = tmp_path / "bad.toml"
    bad.write_text("[player]\nhp = 0\n")
    assert main(["sim", "--against", str(bad), "--seeds", "2", "--ticks", "10"]) == 2
    assert f"{bad}: player.hp = 0 is out of range" in capsys.readouterr().err
