"""docs/PARAMS.md is generated from sim/params.py and must match it."""

from __future__ import annotations

from pathlib import Path

from sim.params import schema
from sim.paramsdoc import render

DOC = Path(__file__).resolve().parents[2] / "docs" / "PARAMS.md"


def test_committed_params_doc_equals_the_generated_one():
    assert DOC.read_text() == render(), (
        "docs/PARAMS.md is stale: run `python -m sim.paramsdoc > docs/PARAMS.md`")


def test_every_key_has_a_row_with_its_change_mode():
    text = render()
    for key, meta in schema().items():
        (row,) = [line for line in text.splitlines() if line.startswith(f"| `{key}` |")]
        assert ("| live |" if meta["live"] else "| restart |") in row
