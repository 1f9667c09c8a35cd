"""`tickwire serve`'s mode and fleet flags, and `tickwire fleet`'s refusals: each bad
value is refused with one line naming it, before anything starts."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from server.cli import main, parse_modes

TICKWIRE = Path(sys.executable).with_name("tickwire")


def test_modes_default_to_arena_with_params_and_parse_name_equals_path():
    assert parse_modes([], None) == [("arena", None)]
    assert parse_modes([], "a.toml") == [("arena", Path("a.toml"))]
    assert parse_modes(["duel=d.toml", "arena=a.toml"], None) == [
        ("duel", Path("d.toml")), ("arena", Path("a.toml"))]


@pytest.mark.parametrize("specs, params, message", [
    (["duel"], None, "NAME=PARAMS.toml"),
    (["=d.toml"], None, "NAME=PARAMS.toml"),
    (["du el=d.toml"], None, "NAME=PARAMS.toml"),
    (["duel=d.toml", "duel=e.toml"], None, "twice"),
    (["duel=d.toml"], "a.toml", "not both"),
])
def test_bad_modes_are_refused_with_the_reason(specs, params, message):
    with pytest.raises(ValueError, match=message):
        parse_modes(specs, params)


@pytest.mark.parametrize("argv, message", [
    (["--redis", "redis://127.0.0.1:1/0", "--host", "0.0.0.0"], "--public-url"),
    (["--public-url", "http://example.com"], "ws:// or wss://"),
    (["--lease", "2", "--refresh", "3"], "--refresh"),
    (["--mode", "duel"], "NAME=PARAMS.toml"),
    (["--mode", "duel=/nonexistent/duel.toml"], "duel.toml"),
])
def test_serve_refuses_bad_fleet_flags_in_one_line(argv, message, capsys):
    assert main(["serve", *argv]) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1


def test_fleet_refuses_a_bad_worker_count(capsys):
    assert main(["fleet", "--workers", "0"]) == 2
    assert "--workers" in capsys.readouterr().err


def test_fleet_without_redis_server_names_the_package_to_install(tmp_path):
    done = subprocess.run([str(TICKWIRE), "fleet", "--workers", "1"], capture_output=True,
                          text=True, timeout=60, env={"PATH": str(tmp_path)})
    assert done.returncode == 2
    assert "redis-server" in done.stderr and "apt-get install" in done.stderr
    assert done.stderr.strip().count("\n") == 0


@pytest.mark.parametrize("argv", [["serve"], ["bots", "--master"], ["fleet", "--workers", "2"]])
def test_redis_url_defaults_to_the_environment_and_a_flag_wins(monkeypatch, argv):
    from server.cli import build_parser
    from server.fleet import REDIS_URL_ENV
    monkeypatch.setenv(REDIS_URL_ENV, "redis://:pw@10.0.0.5:6379/2")
    assert build_parser().parse_args(argv).redis == "redis://:pw@10.0.0.5:6379/2"
    flag = build_parser().parse_args([*argv, "--redis", "redis://127.0.0.1:7000/0"])
    assert flag.redis == "redis://127.0.0.1:7000/0"
    monkeypatch.delenv(REDIS_URL_ENV)
    assert build_parser().parse_args(argv).redis is None
