"""server.paramsfile: an admin change edits only the values asked for; comments, blank
lines, key order and table styles stay; the result always loads as the intended params."""

from __future__ import annotations

import os
import stat
import tomllib

import pytest

from server.paramsfile import set_values, write_atomic
from sim.params import DEFAULT_PARAMS_PATH, Params, ParamsError, load_params, params_from_mapping

TEXT = """\
# header comment

[player]
max_speed = 220.0   # units/s
hp = 100            # hp

[npc]
speed = 50.0
"""


def test_a_value_is_replaced_in_place_keeping_its_comment():
    out = set_values(TEXT, {"player.max_speed": 260.0})
    assert out == TEXT.replace("220.0", "260.0")


def test_a_missing_key_joins_its_table_and_a_missing_table_is_added():
    out = set_values(TEXT, {"npc.hp": 70, "projectile.damage": 30})
    data = tomllib.loads(out)
    assert data["npc"] == {"speed": 50.0, "hp": 70}
    assert data["projectile"] == {"damage": 30}
    assert out.startswith(TEXT.rstrip("\n"))  # everything that was there is still there


@pytest.mark.parametrize("text", [
    "player.max_speed = 220.0  # dotted keys\n",
    "player = { max_speed = 220.0, hp = 100 }\n",
    "",
])
def test_other_table_styles_are_kept(text):
    out = set_values(text, {"player.max_speed": 275.5, "player.hp": 90})
    assert params_from_mapping(tomllib.loads(out)) == Params().with_changes(
        {"player.max_speed": 275.5, "player.hp": 90})


def test_every_key_of_the_default_file_can_be_set_and_comments_survive():
    text = DEFAULT_PARAMS_PATH.read_text()
    values = {k: (not v if isinstance(v, bool) else v) for k, v in Params().to_dotted().items()}
    out = set_values(text, values)
    assert params_from_mapping(tomllib.loads(out)).shooting_enabled is False
    comments = [ln for ln in text.splitlines() if ln.lstrip().startswith("#")]
    assert comments and all(c in out.splitlines() for c in comments)


def test_a_file_that_is_not_toml_is_a_params_error():
    with pytest.raises(ParamsError, match="invalid TOML"):
        set_values("[player\nhp = 1\n", {"player.hp": 2})
    with pytest.raises(ParamsError, match="player is not a table"):
        set_values('player = "fast"\n', {"player.hp": 2})


def test_write_atomic_replaces_the_file_and_keeps_its_mode(tmp_path):
    f = tmp_path / "p.toml"
    f.write_text(TEXT)
    os.chmod(f, 0o640)
    before = os.stat(f).st_ino
    write_atomic(f, set_values(TEXT, {"player.hp": 90}))
    assert load_params(f).player_hp == 90
    st = os.stat(f)
    assert stat.S_IMODE(st.st_mode) == 0o640
    assert st.st_ino != before  # renamed over: a reader never sees half a file
    assert [p.name for p in tmp_path.iterdir()] == ["p.toml"]  # no temporary left


def test_write_atomic_follows_a_symlink(tmp_path):
    real = tmp_path / "real.toml"
    real.write_text(TEXT)
    link = tmp_path / "link.toml"
    link.symlink_to(real)
    write_atomic(link, "[player]\nhp = 5\n")
    assert link.is_symlink() and load_params(real).player_hp == 5
