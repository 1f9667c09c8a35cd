"""The parameters-file watcher's sans-I/O core: it is handed stat results, never sleeps."""

from __future__ import annotations

import os
from pathlib import Path

from server.paramswatch import ParamsWatcher
from sim.params import Params, ParamsError


def write(path: Path, text: str, mtime_ns: int) -> os.stat_result:
    """Write the file and give it a distinct mtime (a fast test could save twice within
    the file system's timestamp granularity)."""
    path.write_text(text)
    os.utime(path, ns=(mtime_ns, mtime_ns))
    return os.stat(path)


def test_unchanged_file_reports_nothing(tmp_path):
    f = tmp_path / "p.toml"
    st = write(f, "[player]\nmax_speed = 250.0\n", 1_000_000_000)
    watcher = ParamsWatcher(f, st)
    assert watcher.check(os.stat(f)) is None
    assert watcher.check(os.stat(f)) is None


def test_a_saved_change_returns_the_new_params_once(tmp_path):
    f = tmp_path / "p.toml"
    watcher = ParamsWatcher(f, write(f, "[player]\nmax_speed = 250.0\n", 1_000_000_000))
    result = watcher.check(write(f, "[player]\nmax_speed = 260.0\n", 2_000_000_000))
    assert isinstance(result, Params)
    assert result.player_max_speed == 260.0
    assert watcher.check(os.stat(f)) is None


def test_an_invalid_change_returns_an_error_naming_key_value_and_range(tmp_path):
    f = tmp_path / "p.toml"
    watcher = ParamsWatcher(f, write(f, "", 1_000_000_000))
    result = watcher.check(write(f, "[player]\nmax_speed = 99999.0\n", 2_000_000_000))
    assert isinstance(result, ParamsError)
    assert "player.max_speed" in str(result) and "99999" in str(result)
    assert "[1.0, 2000.0]" in str(result)


def test_broken_toml_is_an_error_and_the_fixed_save_applies(tmp_path):
    f = tmp_path / "p.toml"
    watcher = ParamsWatcher(f, write(f, "", 1_000_000_000))
    assert isinstance(watcher.check(write(f, "[player\n", 2_000_000_000)), ParamsError)
    fixed = watcher.check(write(f, "[player]\nhp = 90\n", 3_000_000_000))
    assert isinstance(fixed, Params) and fixed.player_hp == 90


def test_a_missing_file_is_reported_once_and_its_return_is_a_change(tmp_path):
    f = tmp_path / "p.toml"
    watcher = ParamsWatcher(f, write(f, "", 1_000_000_000))
    assert isinstance(watcher.check(None), ParamsError)
    assert watcher.check(None) is None
    back = watcher.check(write(f, "[npc]\nspeed = 70.0\n", 1_000_000_000))
    assert isinstance(back, Params) and back.npc_speed == 70.0


def test_without_a_baseline_the_first_check_reads_the_file(tmp_path):
    f = tmp_path / "p.toml"
    st = write(f, "[npc]\nhp = 70\n", 1_000_000_000)
    result = ParamsWatcher(f).check(st)
    assert isinstance(result, Params) and result.npc_hp == 70
