"""bench.tick_calls still finds and wraps every phase of the tree's Room.tick.

The harness reports per phase; if a phase is renamed or moved, its wrapper silently
stops seeing it and the write-up's table loses a row. Counts only, never timings."""

from __future__ import annotations

from bench.tick_calls import PHASES, measure


def test_every_phase_is_wrapped_counted_and_timed() -> None:
    result = measure(entities=20, clients=3, timed_ticks=2, counted_ticks=2)
    for label, _ in PHASES:
        assert result[label]["c"] > 0, label  # each phase makes NumPy or builtin calls
        assert result[label]["distinct"] > 0, label
        for key in ("warm_us", "cold_us", "code_warm_us"):
            assert result[label][key] > 0, (label, key)
    total = result["total"]
    # The whole tick's distinct functions are fewer than the phases' sum (phases share
    # NumPy's methods) and more than any one phase's.
    per_phase = [result[label]["distinct"] for label, _ in PHASES]
    assert max(per_phase) < total["distinct"] < sum(per_phase) + result["tick (own)"]["distinct"]
    assert total["py"] == sum(v["py"] for k, v in result.items() if k != "total")
