"""bench.arena on the bigworld scenario (bench/scenarios/bigworld.toml: 8000 x 8000 units,
10,000 NPCs, interest management), end to end with a tiny window: the file is accepted,
the row has the arena's JSON keys, and each client hears about a small part of the world."""

from __future__ import annotations

from pathlib import Path

import pytest

from bench import arena

BIGWORLD = Path(arena.SCENARIOS) / "bigworld.toml"


def test_bigworld_runs_with_the_arenas_keys_and_interest_in_force() -> None:
    result = arena.run_arena(0, 3, duration_s=1.5, warmup_s=0.5, ack_only=True,
                             params_path=BIGWORLD)
    assert result["scenario"] == "bigworld"
    assert result["entities"] == 10_000
    assert result["clients"] == 3 and result["clients_connected"] == 3
    assert result["errors"] == {} and result["close_codes"] == {}
    assert result["snapshots_per_s"] > 0 and result["kib_per_s_per_client"] > 0
    # Interest management: a client's snapshots hold its surroundings, not 10,003 entities.
    assert 0 < result["entities_per_snapshot"] < 2_000
    table = arena.format_rows([result])
    assert "| 10000 | 3 | tickwire | 3 |" in table
    # The same JSON keys as the arena's rows (one small arena run beside it).
    plain = arena.run_arena(100, 2, duration_s=0.5, warmup_s=0.0, ack_only=True)
    assert plain["scenario"] == "arena"
    assert set(result) == set(plain)


def test_a_bad_params_file_is_one_clear_error(tmp_path, capsys) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text("[world]\nwidth = 99999.0\n")
    with pytest.raises(SystemExit) as exc:
        arena.main(["--params", str(bad), "--clients", "1"])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert "world.width" in err and "99999" in err
