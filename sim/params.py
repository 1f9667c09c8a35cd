"""Every tunable of the game in one typed, validated, documented structure.

Theory of operation
-------------------
``Params`` is a flat frozen dataclass. Each field carries metadata: its dotted TOML key
(``"player.max_speed"``), unit, allowed range ``[min, max]``, a one-line doc, and ``live``
(False = the value is read once when a world/room is built, so changing it needs a restart).
The TOML file groups keys in tables ``[world] [player] [npc] [projectile] [weapon] [room]
[interest]``;
``sim/default_params.toml`` is the documented default and holds every key.

Every way in (``load_params``, ``params_from_mapping``, ``Params.with_changes`` and the
constructor itself) goes through the same validation, which raises ``ParamsError`` with a
message that names the key, the value and the allowed range or type. Cross-field rules
(capacity large enough for every entity, radii that fit in the world) are checked last.
"""

from __future__ import annotations

import difflib
import math
import tomllib
from collections.abc import Mapping
from dataclasses import MISSING, dataclass, field, fields
from pathlib import Path
from typing import Any

__all__ = [
    "DEFAULT_PARAMS_PATH",
    "WEAPON_KINDS",
    "Params",
    "ParamsError",
    "load_params",
    "normalize_changes",
    "params_from_mapping",
    "restart_keys_changed",
    "schema",
]

DEFAULT_PARAMS_PATH: Path = Path(__file__).with_name("default_params.toml")
WEAPON_KINDS: tuple[str, ...] = ("projectile", "hitscan")


MAX_INTEREST_CELLS = 16384  # grid cells (per-client bookkeeping is dense over cells)


class ParamsError(ValueError):
    """A parameter is unknown, of the wrong type, out of range, or inconsistent with another."""


def _p(
    default: Any,
    toml: str,
    unit: str,
    lo: float | None,
    hi: float | None,
    doc: str,
    *,
    live: bool = True,
    choices: tuple[str, ...] = (),
) -> Any:
    return field(
        default=default,
        metadata={"toml": toml, "unit": unit, "min": lo, "max": hi, "doc": doc, "live": live,
                  "choices": choices},
    )


@dataclass(frozen=True, slots=True)
class Params:
    """Simulation and room parameters. Distances in world units, times in seconds unless a
    name says ``_ticks``. Construct through ``load_params`` / ``params_from_mapping`` /
    ``with_changes``; direct construction is validated too."""

    # [world]
    world_width: float = _p(
        1000.0,
        "world.width",
        "units",
        100.0,
        16000.0,
        "world size along x; positions live in [0, width] (above 4095 the snapshots' "
        "position resolution drops from 1/16 to 1/8, 1/4 unit; see proto/README.md)",
    )
    world_height: float = _p(
        1000.0,
        "world.height",
        "units",
        100.0,
        16000.0,
        "world size along y; positions live in [0, height]",
    )
    tick_rate: int = _p(
        30,
        "world.tick_rate",
        "Hz",
        10,
        128,
        "simulation ticks per second; dt = 1 / tick_rate",
        live=False,
    )
    seed: int = _p(
        1,
        "world.seed",
        "",
        0,
        2**32 - 1,
        "seed of the world's PCG64 generator (read when the world is created)",
        live=False,
    )
    capacity: int = _p(
        2048,
        "world.capacity",
        "slots",
        64,
        16384,
        "entity slots; must be >= room.max_players + npc.count + projectile.max",
        live=False,
    )

    # [room]
    max_players: int = _p(
        32, "room.max_players", "players", 1, 1000, "players one room accepts", live=False
    )
    inputs_per_tick: int = _p(
        3,
        "room.inputs_per_tick",
        "commands",
        1,
        8,
        "movement steps a player may catch up in one tick when its commands arrive late "
        "and bunched (one command is one step; sending faster earns nothing)",
    )
    input_queue: int = _p(
        8,
        "room.input_queue",
        "commands",
        1,
        64,
        "input commands queued per player at most; the oldest are dropped",
    )
    resume_grace_s: float = _p(
        10.0,
        "room.resume_grace_s",
        "s",
        0.0,
        300.0,
        "how long a dropped player's entity waits for a Resume",
    )

    # [player]
    player_hp: int = _p(100, "player.hp", "hp", 1, 10000, "player hit points at (re)spawn")
    player_radius: float = _p(
        12.0,
        "player.radius",
        "units",
        1.0,
        100.0,
        "player collision radius; also keeps the centre off the walls",
    )
    player_accel: float = _p(
        1500.0,
        "player.accel",
        "units/s²",
        1.0,
        100000.0,
        "how fast velocity approaches move * max_speed while steering",
    )
    player_max_speed: float = _p(
        220.0, "player.max_speed", "units/s", 1.0, 2000.0, "top player speed"
    )
    player_friction: float = _p(
        8.0,
        "player.friction",
        "1/s",
        0.0,
        100.0,
        "idle (no move input) velocity decays by exp(-friction * dt) per tick",
    )
    respawn_delay_s: float = _p(
        3.0,
        "player.respawn_delay_s",
        "s",
        0.0,
        60.0,
        "time a killed player waits before respawning",
    )
    kill_score: int = _p(
        1, "player.kill_score", "points", 0, 1000, "score a player earns per kill (player or NPC)"
    )

    # [npc]
    npc_count: int = _p(
        40,
        "npc.count",
        "NPCs",
        0,
        10000,
        "NPCs spawned when the world is created (changes need a restart)",
        live=False,
    )
    npc_speed: float = _p(
        50.0, "npc.speed", "units/s", 0.0, 2000.0, "NPC speed; applied at the next turn"
    )
    npc_turn_interval_ticks: int = _p(
        60,
        "npc.turn_interval_ticks",
        "ticks",
        1,
        100000,
        "all NPCs pick a new random direction when tick % interval == 0",
    )
    npc_hp: int = _p(60, "npc.hp", "hp", 1, 10000, "NPC hit points at (re)spawn")
    npc_radius: float = _p(10.0, "npc.radius", "units", 1.0, 100.0, "NPC collision radius")
    npc_respawn_delay_s: float = _p(
        5.0, "npc.respawn_delay_s", "s", 0.0, 600.0, "time a killed NPC waits before respawning"
    )

    # [projectile]
    shooting_enabled: bool = _p(
        True, "projectile.enabled", "", None, None, "whether players can fire at all"
    )
    projectile_speed: float = _p(
        600.0,
        "projectile.speed",
        "units/s",
        1.0,
        2000.0,
        "projectile speed (keep speed * dt below twice the smallest "
        "radius sum, or fast shots can pass through targets)",
    )
    projectile_damage: int = _p(
        25, "projectile.damage", "hp", 0, 10000, "hit points one projectile takes away"
    )
    projectile_lifetime_s: float = _p(
        1.2,
        "projectile.lifetime_s",
        "s",
        0.05,
        10.0,
        "a projectile expires this long after it is fired",
    )
    projectile_radius: float = _p(
        3.0, "projectile.radius", "units", 0.5, 50.0, "projectile collision radius"
    )
    fire_cooldown_s: float = _p(
        0.25,
        "projectile.cooldown_s",
        "s",
        0.02,
        10.0,
        "minimum time between two shots of one player",
    )
    max_projectiles: int = _p(
        256,
        "projectile.max",
        "projectiles",
        0,
        8192,
        "projectiles in flight at once in the whole world",
    )

    # [weapon]
    weapon_kind: str = _p(
        "projectile",
        "weapon.kind",
        "",
        None,
        None,
        "what fire does: \"projectile\" (a flying shot, the [projectile] keys) or "
        "\"hitscan\" (an instant ray, lag-compensated: weapon.range, damage, cooldown_s)",
        choices=WEAPON_KINDS,
    )
    weapon_range: float = _p(
        600.0, "weapon.range", "units", 10.0, 6000.0, "how far a hitscan ray reaches"
    )
    weapon_damage: int = _p(
        20, "weapon.damage", "hp", 0, 10000, "hit points one hitscan hit takes away"
    )
    weapon_cooldown_s: float = _p(
        0.25,
        "weapon.cooldown_s",
        "s",
        0.02,
        10.0,
        "minimum time between two hitscan shots of one player",
    )
    max_rewind_ms: float = _p(
        250.0,
        "weapon.max_rewind_ms",
        "ms",
        0.0,
        1000.0,
        "lag compensation: a hitscan shot is tested against the world as the shooter saw "
        "it, at most this far in the past (0 = no compensation, test the present)",
    )

    # [interest]
    interest_enabled: bool = _p(
        False,
        "interest.enabled",
        "",
        None,
        None,
        "interest management: each client gets only the grid cells around its player, as "
        "shared chunks (proto/README.md, Chunked snapshots); false = every client gets the "
        "whole world",
        live=False,
    )
    interest_radius: float = _p(
        600.0,
        "interest.radius",
        "units",
        50.0,
        16000.0,
        "a cell enters a client's interest when its rectangle is this close to the player",
        live=False,
    )
    interest_near: float = _p(
        150.0,
        "interest.near",
        "units",
        0.0,
        16000.0,
        "cells this close to the player are sent every tick whatever the budget (at most "
        "interest.radius); keep the cells it covers within the budget",
        live=False,
    )
    interest_margin: float = _p(
        100.0,
        "interest.margin",
        "units",
        0.0,
        4000.0,
        "hysteresis: a cell in a client's interest leaves only beyond radius + margin",
        live=False,
    )
    interest_cell: float = _p(
        300.0,
        "interest.cell",
        "units",
        25.0,
        16000.0,
        "side of a grid cell (about half the radius is a good start); the grid may have at "
        "most 16384 cells",
        live=False,
    )
    interest_budget_kbps: float = _p(
        8.0,
        "interest.budget_kbps",
        "KiB/s",
        0.0,
        100000.0,
        "per-client snapshot budget in KiB (1024 bytes) per second; over it, far cells are "
        "sent less often (at least once a second); 0 = no budget",
    )

    def __post_init__(self) -> None:
        for f in fields(self):
            value = _coerce(f.metadata["toml"], getattr(self, f.name), _TYPES[f.name], f.metadata)
            object.__setattr__(self, f.name, value)
        _check_cross_fields(self)

    @property
    def dt(self) -> float:
        """Seconds per tick, 1 / tick_rate (float64; the step rounds it to float32)."""
        return 1.0 / self.tick_rate

    def ticks(self, seconds: float) -> int:
        """A duration in seconds as a whole number of ticks (rounded, at least 1)."""
        return max(1, round(seconds * self.tick_rate))

    def to_dotted(self) -> dict[str, object]:
        """``{"player.max_speed": 220.0, ...}`` for every field, in declaration order."""
        return {f.metadata["toml"]: getattr(self, f.name) for f in fields(self)}

    def with_changes(self, changes: Mapping[str, object]) -> Params:
        """A copy with ``changes`` applied; keys are dotted TOML keys or Python field names.
        Validated exactly like a file; raises ``ParamsError``."""
        merged = self.to_dotted()
        merged.update(normalize_changes(changes))
        return params_from_mapping(merged)


# Real classes for each field, resolved once (annotations are strings under __future__).
_TYPE_NAMES = {"int": int, "float": float, "bool": bool, "str": str}
_TYPES: dict[str, type] = {f.name: _TYPE_NAMES[str(f.type)] for f in fields(Params)}
_FIELDS_BY_TOML = {f.metadata["toml"]: f for f in fields(Params)}
_PY_TO_TOML = {f.name: f.metadata["toml"] for f in fields(Params)}
_TABLES = sorted({k.split(".")[0] for k in _FIELDS_BY_TOML})


def _unknown_key_message(key: str) -> str:
    candidates = list(_FIELDS_BY_TOML) + list(_PY_TO_TOML)
    close = difflib.get_close_matches(key, candidates, n=1, cutoff=0.6)
    if not close and "." in key:
        # "player.maxspeed": match the leaf name within its table first.
        close = difflib.get_close_matches(key, list(_FIELDS_BY_TOML), n=1, cutoff=0.4)
    hint = f"; did you mean {_PY_TO_TOML.get(close[0], close[0])!r}?" if close else ""
    return f"unknown parameter {key!r}{hint}"


def normalize_changes(changes: Mapping[str, object]) -> dict[str, object]:
    """``changes`` as ``{dotted_key: value}``. Keys may be dotted TOML keys
    (``"player.max_speed"``), Python field names (``"player_max_speed"``) or tables
    (``{"player": {"max_speed": 250}}``), mixed. Raises ``ParamsError`` for an unknown key
    and for one key given twice under two spellings, naming both: silently keeping one of
    them would apply a value the sender may not have meant."""
    out: dict[str, object] = {}
    spelled: dict[str, str] = {}

    def put(spelling: str, value: object) -> None:
        dotted = _PY_TO_TOML.get(spelling, spelling)
        if dotted not in _FIELDS_BY_TOML:
            raise ParamsError(_unknown_key_message(spelling))
        if dotted in out:
            raise ParamsError(f"{dotted} is given twice, as {spelled[dotted]!r} and as "
                              f"{spelling!r}; give it once")
        out[dotted] = value
        spelled[dotted] = spelling

    for key, value in changes.items():
        if not isinstance(key, str):
            raise ParamsError(f"parameter key {key!r} is not a string")
        if isinstance(value, Mapping):
            _check_table(key)
            for leaf, v in value.items():
                if isinstance(v, Mapping):
                    raise ParamsError(f"{key}.{leaf} = {v!r} is a table; expected a value")
                put(f"{key}.{leaf}", v)
        else:
            put(key, value)
    return out


def _range_text(meta: Mapping[str, Any], typ: type) -> str:
    lo, hi = meta["min"], meta["max"]
    if typ is float:
        lo, hi = float(lo), float(hi)
    unit = f" ({meta['unit']})" if meta["unit"] else ""
    return f"[{lo}, {hi}]{unit}"


def _coerce(key: str, value: object, typ: type, meta: Mapping[str, Any]) -> object:
    """Check one value; return it as exactly ``typ`` (an int given for a float becomes float)."""
    if isinstance(value, str) and not value.strip():
        # What an emptied form field sends: never read as 0.
        raise ParamsError(f"{key} is empty; expected {typ.__name__}")
    if typ is str:
        if not isinstance(value, str):
            raise ParamsError(f"{key} = {value!r} has type {type(value).__name__}; expected str")
        if value not in meta["choices"]:
            allowed = " | ".join(repr(c) for c in meta["choices"])
            raise ParamsError(f"{key} = {value!r} is not one of {allowed}")
        return value
    if typ is bool:
        if not isinstance(value, bool):
            raise ParamsError(
                f"{key} = {_short(value)} has type {type(value).__name__}; expected bool")
        return value
    # bool is an int subclass in Python but never a number here.
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ParamsError(
            f"{key} = {_short(value)} has type {type(value).__name__}; expected {typ.__name__}"
        )
    if isinstance(value, float) and not math.isfinite(value):
        raise ParamsError(
            f"{key} = {_short(value)} is not a finite number; "
            f"allowed range {_range_text(meta, typ)}"
        )
    if typ is int:
        if isinstance(value, float):
            if not value.is_integer():
                raise ParamsError(
                    f"{key} = {_short(value)} is not a whole number; expected int")
            value = int(value)
        value = int(value)
    else:
        try:
            value = float(value)
        except OverflowError:
            # A 400-digit integer is a valid JSON/TOML number that no float can hold.
            raise ParamsError(f"{key} = {_short(value)} is out of range "
                              f"{_range_text(meta, typ)}") from None
    if not meta["min"] <= value <= meta["max"]:
        raise ParamsError(f"{key} = {_short(value)} is out of range {_range_text(meta, typ)}")
    return value


def _short(value: object) -> str:
    """``repr(value)``, cut to 40 characters: a huge number must not flood a log line."""
    try:
        text = repr(value)
    except ValueError:  # an int past sys.get_int_max_str_digits()
        return f"an integer of about {int(value.bit_length() * 0.30103)} digits"  # type: ignore[union-attr]
    return text if len(text) <= 40 else f"{text[:20]}…({len(text)} characters)"


def _check_cross_fields(p: Params) -> None:
    needed = p.max_players + p.npc_count + p.max_projectiles
    if p.capacity < needed:
        raise ParamsError(
            f"world.capacity = {p.capacity} is too small: room.max_players ({p.max_players})"
            f" + npc.count ({p.npc_count}) + projectile.max ({p.max_projectiles})"
            f" = {needed} slots are needed"
        )
    if p.interest_near > p.interest_radius:
        raise ParamsError(
            f"interest.near = {p.interest_near} is beyond interest.radius = "
            f"{p.interest_radius}: near cells are the always-sent part of the interest")
    if p.interest_enabled:
        cells = math.ceil(p.world_width / p.interest_cell) * math.ceil(
            p.world_height / p.interest_cell)
        if cells > MAX_INTEREST_CELLS:
            raise ParamsError(
                f"interest.cell = {p.interest_cell} makes {cells} grid cells over a "
                f"{p.world_width:g} x {p.world_height:g} world; at most {MAX_INTEREST_CELLS} "
                f"are allowed (a larger cell)")
    smallest = min(p.world_width, p.world_height)
    if 2.0 * p.player_radius >= smallest:
        raise ParamsError(
            f"player.radius = {p.player_radius} does not fit: twice the radius must be"
            f" below min(world.width, world.height) = {smallest}"
        )


def _check_table(key: str) -> None:
    """A TOML table name must be one of ours; a near miss is named."""
    if key not in _TABLES:
        close = difflib.get_close_matches(key, _TABLES, n=1)
        hint = f"; did you mean [{close[0]}]?" if close else ""
        raise ParamsError(f"unknown parameter table [{key}]{hint}")


def _flatten(mapping: Mapping[str, object]) -> dict[str, object]:
    """Nested TOML tables and/or dotted keys → ``{dotted_key: value}``."""
    flat: dict[str, object] = {}
    for key, value in mapping.items():
        if not isinstance(key, str):
            raise ParamsError(f"parameter key {key!r} is not a string")
        if isinstance(value, Mapping):
            _check_table(key)
            items = ((f"{key}.{k}", v) for k, v in value.items())
        else:
            items = iter(((key, value),))
        for dotted, v in items:
            if isinstance(v, Mapping):
                raise ParamsError(f"{dotted} = {v!r} is a table; expected a value")
            if dotted in flat:
                raise ParamsError(f"{dotted} is given twice")
            flat[dotted] = v
    return flat


def params_from_mapping(nested_or_dotted: Mapping[str, object]) -> Params:
    """Build validated ``Params`` from a nested TOML-style dict (``{"player": {"hp": 90}}``)
    or flat dotted keys (``{"player.hp": 90}``), or a mix. Missing keys take the defaults.
    Raises ``ParamsError`` naming the key, the value and the allowed range or type."""
    flat = _flatten(nested_or_dotted)
    kwargs: dict[str, object] = {}
    for dotted, value in flat.items():
        f = _FIELDS_BY_TOML.get(dotted)
        if f is None:
            raise ParamsError(_unknown_key_message(dotted))
        kwargs[f.name] = value
    # Params.__post_init__ checks and converts every value, then the cross-field rules.
    return Params(**kwargs)  # type: ignore[arg-type]


def load_params(path: str | Path | None = None) -> Params:
    """Read a TOML parameters file; ``None`` reads ``DEFAULT_PARAMS_PATH``. Keys absent from
    the file keep their defaults. Raises ``ParamsError`` (bad TOML included, with the path)."""
    p = Path(path) if path is not None else DEFAULT_PARAMS_PATH
    try:
        with p.open("rb") as fh:
            data = tomllib.load(fh)
    except tomllib.TOMLDecodeError as exc:
        raise ParamsError(f"{p}: invalid TOML: {exc}") from exc
    try:
        return params_from_mapping(data)
    except ParamsError as exc:
        raise ParamsError(f"{p}: {exc}") from exc


def schema() -> dict[str, dict[str, object]]:
    """Every parameter keyed by dotted TOML key: type ("int" | "float" | "bool" | "str"),
    min, max (None for bool and str), choices (the allowed strings of a str, else []),
    unit, doc, live, default. JSON-serialisable."""
    out: dict[str, dict[str, object]] = {}
    for f in fields(Params):
        meta = f.metadata
        typ = _TYPES[f.name]
        lo, hi = meta["min"], meta["max"]
        if typ is float:
            lo, hi = float(lo), float(hi)
        out[meta["toml"]] = {
            "type": typ.__name__,
            "min": lo,
            "max": hi,
            "unit": meta["unit"],
            "doc": meta["doc"],
            "live": meta["live"],
            "choices": list(meta["choices"]),
            "default": f.default if f.default is not MISSING else None,
        }
    return out


def restart_keys_changed(old: Params, new: Params) -> list[str]:
    """Dotted keys marked ``live=False`` whose value differs between ``old`` and ``new``:
    such a change only takes effect when a new world/room is built."""
    return [
        f.metadata["toml"]
        for f in fields(Params)
        if not f.metadata["live"] and getattr(old, f.name) != getattr(new, f.name)
    ]
