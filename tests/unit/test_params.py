"""sim.params: defaults, the default file, validation messages, schema, live changes."""

from __future__ import annotations

import math
import tomllib
from dataclasses import fields
from pathlib import Path

import pytest

from sim.params import (
    DEFAULT_PARAMS_PATH,
    Params,
    ParamsError,
    load_params,
    params_from_mapping,
    restart_keys_changed,
    schema,
)

ARENA = Path(__file__).resolve().parents[2] / "bench" / "scenarios" / "arena.toml"


def _flatten(d: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out.update(_flatten(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def test_defaults_load_and_equal_the_dataclass_defaults() -> None:
    assert load_params() == Params()
    assert load_params(DEFAULT_PARAMS_PATH) == Params()
    assert Params().dt == pytest.approx(1 / 30)


def test_default_file_lists_every_schema_key_with_a_comment() -> None:
    with DEFAULT_PARAMS_PATH.open("rb") as fh:
        keys = set(_flatten(tomllib.load(fh)))
    assert keys == set(schema())
    text = DEFAULT_PARAMS_PATH.read_text()
    for line in text.splitlines():
        if "=" in line and not line.lstrip().startswith("#"):
            assert "#" in line, f"no unit/range comment on: {line!r}"


def test_schema_matches_the_dataclass() -> None:
    sch = schema()
    by_key = {f.metadata["toml"]: f for f in fields(Params)}
    assert list(sch) == list(by_key)
    defaults = Params()
    for key, entry in sch.items():
        f = by_key[key]
        assert entry["type"] == f.type
        assert entry["default"] == getattr(defaults, f.name)
        assert entry["live"] is f.metadata["live"]
        if entry["type"] == "str":
            assert entry["default"] in entry["choices"]
            assert entry["min"] is None and entry["max"] is None
        elif entry["type"] != "bool":
            assert entry["min"] <= entry["default"] <= entry["max"]
            assert isinstance(entry["min"], int if entry["type"] == "int" else float)
    assert sch["player.max_speed"]["min"] == 1.0 and sch["player.max_speed"]["max"] == 2000.0
    assert sch["world.capacity"]["live"] is False
    assert sch["npc.count"]["live"] is False
    assert sch["projectile.enabled"]["type"] == "bool"


def test_nested_and_dotted_mappings_are_equivalent() -> None:
    a = params_from_mapping({"player": {"max_speed": 300}, "npc": {"count": 3}})
    b = params_from_mapping({"player.max_speed": 300.0, "npc.count": 3})
    assert a == b
    assert a.player_max_speed == 300.0 and isinstance(a.player_max_speed, float)


@pytest.mark.parametrize(
    ("changes", "fragments"),
    [
        (
            {"player.max_speed": -5.0},
            ["player.max_speed", "-5.0", "out of range [1.0, 2000.0]", "units/s"],
        ),
        ({"world.tick_rate": 500}, ["world.tick_rate", "500", "[10, 128]", "Hz"]),
        ({"player.accel": math.nan}, ["player.accel", "nan", "finite", "[1.0, 100000.0]"]),
        ({"player.hp": math.inf}, ["player.hp", "inf"]),
        ({"player.hp": "100"}, ["player.hp", "'100'", "str", "expected int"]),
        ({"npc.hp": True}, ["npc.hp", "True", "bool", "expected int"]),
        ({"world.tick_rate": 30.5}, ["world.tick_rate", "30.5", "whole number"]),
        ({"projectile.enabled": 1}, ["projectile.enabled", "1", "expected bool"]),
        ({"player.maxspeed": 3}, ["player.maxspeed", "did you mean 'player.max_speed'"]),
        ({"plyer": {"hp": 3}}, ["[plyer]", "[player]"]),
        ({"npc.count": 5000}, ["world.capacity", "2048", "npc.count", "5000", "5288"]),
        ({"player": {"hp": {"x": 1}}}, ["player.hp", "table"]),
    ],
)
def test_bad_values_raise_params_error_naming_key_value_and_range(
    changes: dict, fragments: list[str]
) -> None:
    with pytest.raises(ParamsError) as info:
        params_from_mapping(changes)
    for fragment in fragments:
        assert fragment in str(info.value)


def test_whole_floats_are_accepted_for_ints_and_ints_for_floats() -> None:
    p = params_from_mapping({"world.tick_rate": 60.0, "player.max_speed": 300})
    assert p.tick_rate == 60 and isinstance(p.tick_rate, int)
    assert isinstance(p.player_max_speed, float)


def test_direct_construction_is_validated_too() -> None:
    with pytest.raises(ParamsError, match=r"player\.max_speed"):
        Params(player_max_speed=-1.0)


def test_with_changes_accepts_dotted_or_python_names_and_validates() -> None:
    p = Params()
    q = p.with_changes({"player_max_speed": 300, "npc.speed": 10})
    assert (q.player_max_speed, q.npc_speed) == (300.0, 10.0)
    assert p.player_max_speed == 220.0  # frozen original untouched
    with pytest.raises(ParamsError, match=r"player.max_speed = 0.5 is out of range"):
        p.with_changes({"player_max_speed": 0.5})
    with pytest.raises(ParamsError, match="unknown parameter 'bogus'"):
        p.with_changes({"bogus": 1})


def test_to_dotted_round_trips() -> None:
    p = Params().with_changes({"npc.count": 7, "world.seed": 99})
    assert params_from_mapping(p.to_dotted()) == p


def test_restart_keys_changed_lists_only_non_live_keys() -> None:
    p = Params()
    q = p.with_changes({"world.capacity": 4096, "player.max_speed": 99, "npc.count": 3})
    assert restart_keys_changed(p, q) == ["world.capacity", "npc.count"]
    assert restart_keys_changed(p, p) == []


def test_load_params_reports_the_path_on_errors(tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text("[player]\nmax_speed = -5.0\n")
    with pytest.raises(ParamsError, match=r"bad.toml: player.max_speed = -5.0 is out of range"):
        load_params(bad)
    broken = tmp_path / "broken.toml"
    broken.write_text("[player\n")
    with pytest.raises(ParamsError, match="invalid TOML"):
        load_params(broken)


def test_arena_scenario_loads_and_expresses_the_scenario() -> None:
    p = load_params(ARENA)
    assert (p.world_width, p.world_height, p.tick_rate) == (1000.0, 1000.0, 30)
    assert (p.npc_count, p.npc_speed, p.npc_turn_interval_ticks, p.npc_hp) == (1000, 50.0, 60, 100)
    assert p.shooting_enabled is False
    assert (p.player_accel, p.player_friction, p.player_max_speed) == (100000.0, 0.0, 100.0)
    assert p.max_players == 250
    assert p.capacity >= p.max_players + p.npc_count + p.max_projectiles
    assert p.with_changes({"npc.count": 100}).npc_count == 100
