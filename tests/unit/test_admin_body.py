"""server.admin.parse_changes and sim.params.normalize_changes: every bad admin body is a
ParamsError whose message names the problem; nothing else escapes (no RecursionError,
OverflowError or ValueError that the route would turn into a 500)."""

from __future__ import annotations

import contextlib
import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from server.admin import MAX_BODY_BYTES, BodyTooLarge, parse_changes
from sim.params import Params, ParamsError, normalize_changes


def test_dotted_field_names_and_tables_all_become_dotted_keys():
    body = json.dumps({"player.max_speed": 250, "npc_hp": 70, "projectile": {"damage": 30}})
    assert parse_changes(body.encode()) == {
        "player.max_speed": 250, "npc.hp": 70, "projectile.damage": 30}


@pytest.mark.parametrize("changes, message", [
    ({"player": {"max_speed": 250}, "player.max_speed": 260},
     "player.max_speed is given twice, as 'player.max_speed' and as 'player.max_speed'"),
    ({"player_max_speed": 250, "player.max_speed": 260},
     "player.max_speed is given twice, as 'player_max_speed' and as 'player.max_speed'"),
    ({"player.maxspeed": 1}, "unknown parameter 'player.maxspeed'"),
    ({"playr": {"hp": 1}}, "unknown parameter table [playr]; did you mean [player]?"),
    ({"player": {"hp": {"x": 1}}}, "player.hp = {'x': 1} is a table"),
])
def test_normalize_changes_refuses_unknown_keys_and_two_spellings(changes, message):
    with pytest.raises(ParamsError) as err:
        normalize_changes(changes)
    assert message in str(err.value)


@pytest.mark.parametrize("body, message", [
    (b"[" * 5000 + b"]" * 5000, "nested too deeply"),
    (b'{"player": ' * 3000 + b"1" + b"}" * 3000, "nested too deeply"),
    (b'{"player.hp": 1, "player.hp": 2}', "player.hp is given twice in one JSON object"),
    (b'{"player.max_speed": NaN}', "NaN is not a JSON number"),
    (b'{"player.max_speed": -Infinity}', "-Infinity is not a JSON number"),
    (b"{not json", "body is not JSON"),
    (b"\xff\xfe", "body is not JSON"),
    (b'{"player.hp": ' + b"1" * 5000 + b"}", "body is not JSON"),  # past int digit limit
    (b"[1, 2]", "body must be a JSON object"),
    (b'"player.hp"', "body must be a JSON object"),
])
def test_parse_changes_refuses_bad_bodies_with_a_message(body, message):
    with pytest.raises(ParamsError) as err:
        parse_changes(body)
    assert message in str(err.value)


def test_a_body_over_the_limit_is_too_large():
    with pytest.raises(BodyTooLarge, match=f"at most {MAX_BODY_BYTES}"):
        parse_changes(b" " * (MAX_BODY_BYTES + 1))


@pytest.mark.parametrize("changes, message", [
    ({"player.max_speed": int("9" * 400)}, "player.max_speed = 9999999999"),
    ({"player.hp": int("9" * 400)}, "player.hp = 9999999999"),
    ({"projectile.damage": ""}, "projectile.damage is empty; expected int"),
    ({"projectile.damage": "  "}, "projectile.damage is empty; expected int"),
    ({"player.max_speed": ""}, "player.max_speed is empty; expected float"),
    ({"projectile.enabled": ""}, "projectile.enabled is empty; expected bool"),
    ({"projectile.damage": None}, "projectile.damage = None has type NoneType"),
    ({"projectile.damage": "12"}, "projectile.damage = '12' has type str; expected int"),
])
def test_values_that_an_emptied_or_huge_field_sends_are_refused(changes, message):
    with pytest.raises(ParamsError) as err:
        Params().with_changes(changes)
    assert message in str(err.value)
    assert len(str(err.value)) < 200  # a 400-digit number is cut in the message


@given(st.binary(max_size=300) | st.text(max_size=300).map(str.encode))
def test_parse_changes_only_ever_raises_params_error(body):
    try:
        changes = parse_changes(body)
    except ParamsError:
        return
    with contextlib.suppress(ParamsError):
        Params().with_changes(changes)


@given(st.recursive(st.none() | st.booleans() | st.integers() | st.floats() | st.text(),
                    lambda inner: st.lists(inner) | st.dictionaries(st.text(), inner),
                    max_leaves=20))
def test_any_json_value_is_either_a_change_set_or_a_params_error(value):
    body = json.dumps(value).encode()
    with contextlib.suppress(ParamsError):
        Params().with_changes(parse_changes(body))
