"""Generate docs/PARAMS.md from ``sim/params.py``: `python -m sim.paramsdoc > docs/PARAMS.md`.

The table is built from ``schema()``, the same metadata that validates every value, so the
documentation cannot drift from the code (a unit test compares the committed file with the
output of ``render()``).
"""

from __future__ import annotations

import sys

from sim.params import schema

__all__ = ["render"]

_HEADER = """\
# Simulation parameters

Generated from `sim/params.py` by `python -m sim.paramsdoc` — do not edit by hand.

Set them in a TOML file (`tickwire serve --params FILE`, tables `[world]`, `[room]`,
`[player]`, `[npc]`, `[projectile]`, `[weapon]`, `[interest]`); keys left out take the
default. **live** keys change while the server runs (file save or `POST /admin/params`);
**restart** keys only take effect when the server is restarted. Cross-field rule: `world.capacity >=
room.max_players + npc.count + projectile.max`; with `interest.enabled`, the grid
(`ceil(width / cell) × ceil(height / cell)`) has at most 16384 cells.

| key | unit | default | range | change | description |
|---|---|---|---|---|---|
"""


def _value(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return f'"{value}"'
    return str(value)


def _cell(text: str) -> str:
    return text.replace("|", "\\|")


def render() -> str:
    """The whole Markdown document."""
    rows = []
    for key, meta in schema().items():
        if meta["type"] == "bool":
            rng = "true / false"
        elif meta["type"] == "str":
            rng = " / ".join(f'"{c}"' for c in meta["choices"])  # type: ignore[union-attr]
        else:
            rng = f"{_value(meta['min'])} – {_value(meta['max'])}"
        rows.append(
            f"| `{key}` | {_cell(str(meta['unit'])) or '—'} | {_value(meta['default'])} "
            f"| {rng} | {'live' if meta['live'] else 'restart'} | {_cell(str(meta['doc']))} |"
        )
    return _HEADER + "\n".join(rows) + "\n"


if __name__ == "__main__":
    sys.stdout.write(render())
