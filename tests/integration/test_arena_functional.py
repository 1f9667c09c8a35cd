"""bench.arena end to end with a tiny window: the row says how many clients it measured,
in how many rooms, and a run that got fewer clients than asked fails loudly."""

from __future__ import annotations

import pytest

from bench import arena


def test_arena_row_names_rooms_clients_per_room_and_room_tick_rate() -> None:
    result = arena.run_arena(100, 3, duration_s=1.0, warmup_s=0.0)
    assert result["clients"] == 3 and result["clients_connected"] == 3
    assert result["clients_failed"] == 0
    assert result["rooms"] == 1 and result["clients_per_room"] == [3]
    (rate,) = result["tick_rate_per_room"]
    assert rate > 0
    table = arena.format_rows([result])
    assert "| 100 | 3 | tickwire | 3 | 1 (3) |" in table


def test_a_partial_arena_run_fails_naming_connected_and_asked(monkeypatch, capsys) -> None:
    # A server that keeps the default-like cap (2 sockets per address here) instead of the
    # load-test caps: only 2 of the 4 clients get in.
    capped = ["--max-conns-per-ip", "2", "--connects-per-ip-per-s", "0"]
    with pytest.raises(arena.PartialRun, match="connected 2 of 4 clients asked") as err:
        arena.run_arena(100, 4, duration_s=1.0, warmup_s=0.0, server_args=capped)
    assert err.value.result["clients_connected"] == 2
    kept = arena.run_arena(100, 4, duration_s=1.0, warmup_s=0.0, server_args=capped,
                           allow_partial=True)
    assert kept["clients_connected"] == 2 and kept["clients_failed"] == 2
    # The command line: exit 1 and one line that says it, no JSON row written.
    monkeypatch.setattr(arena, "LOAD_TEST_SERVER_ARGS", capped)
    out_path = arena.RESULTS / "arena-E100-M4-test-never-written.json"
    status = arena.main(["--entities", "100", "--clients", "4", "--duration", "1",
                         "--warmup", "0", "--out", str(out_path)])
    assert status == 1
    assert "connected 2 of 4 clients asked" in capsys.readouterr().err
    assert not out_path.exists()


def test_arena_help_says_the_caps_are_lifted(capsys) -> None:
    with pytest.raises(SystemExit):
        arena.main(["--help"])
    text = capsys.readouterr().out
    assert "--max-conns-per-ip 0" in text and "--connects-per-ip-per-s 0" in text
    assert "--allow-partial" in text


def test_an_interest_scenario_row_has_its_rooms_and_the_arena_polls_them_itself() -> None:
    # bigworld (interest management) at a tiny scale: the row names its room like the
    # arena's, and the arena's own /rooms reads cover the window (the fallback for a
    # server too busy to answer the bots' bounded reads).
    scenario = arena.SCENARIOS / "bigworld.toml"
    result = arena.run_arena(0, 3, duration_s=1.5, warmup_s=0.0, params_path=scenario)
    assert result["scenario"] == "bigworld" and result["clients_connected"] == 3
    assert result["rooms"] == 1 and result["clients_per_room"] == [3]
    assert result["tick_rate_per_room"][0] > 0
    assert "| 10000 | 3 | tickwire | 3 | 1 (3) |" in arena.format_rows([result])
