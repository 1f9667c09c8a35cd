"""`--fail-on` thresholds: parse `metric OP number` and check a report against them.

A condition names a failure: the run fails when it is TRUE. A metric that was not
measured (None, NaN) fails its condition: nothing measured cannot pass a threshold.
"""

from __future__ import annotations

import math
import operator
import re
from collections.abc import Callable
from dataclasses import dataclass

FAIL_ON_HELP = """\
--fail-on: comma-separated conditions `metric OP number`, OP one of < <= > >=;
the run FAILS (exit 1) when a condition is TRUE. Metrics:
  rtt_p50_ms rtt_p90_ms rtt_p95_ms rtt_p99_ms rtt_max_ms
                                     server-measured RTT over all bots, ms
  client_rtt_p99_ms                  Ping/Pong RTT at the bots, ms
  snapshots_per_s                    snapshots per second, mean per client
  interval_p99_ms interval_max_ms    time between two snapshots at a client, ms
  bytes_in_per_s                     WebSocket payload bytes received, mean per client
  errors                             errors of every kind (connect, closed, decode, ...)
  clients_failed                     bots that could not join
  inputs_rejected                    inputs the server rejected (from /metrics)
  tick_rate_per_room                 server ticks per second, slowest room
Without --fail-on the run fails on any error or failed client (errors>0,
clients_failed>0); --allow-errors turns that off.
example: --fail-on 'rtt_p99_ms>150,snapshots_per_s<28'
exit status: 0 pass, 1 a condition failed or no bot connected, 2 usage error,
128+N interrupted by signal N (the report is still printed and written)."""


def _server(key: str) -> Callable[[dict], float | None]:
    return lambda r: None if r.get("server") is None else r["server"].get(key)


METRICS: dict[str, Callable[[dict], float | None]] = {
    "rtt_p50_ms": lambda r: r["rtt_ms"]["p50"],
    "rtt_p90_ms": lambda r: r["rtt_ms"]["p90"],
    "rtt_p95_ms": lambda r: r["rtt_ms"]["p95"],
    "rtt_p99_ms": lambda r: r["rtt_ms"]["p99"],
    "rtt_max_ms": lambda r: r["rtt_ms"]["max"],
    "client_rtt_p99_ms": lambda r: r["client_rtt_ms"]["p99"],
    "snapshots_per_s": lambda r: r["snapshots_per_s"],
    "interval_p99_ms": lambda r: r["snapshot_interval_ms"]["p99"],
    "interval_max_ms": lambda r: r["snapshot_interval_ms"]["max"],
    "bytes_in_per_s": lambda r: r["bytes_in_per_s"],
    "errors": lambda r: float(sum(r["errors"].values())),
    "clients_failed": lambda r: float(r["clients_failed"]),
    "inputs_rejected": _server("inputs_rejected_total"),
    "tick_rate_per_room": _server("tick_rate_per_room_min"),
}
OPS: dict[str, Callable[[float, float], bool]] = {
    "<=": operator.le, ">=": operator.ge, "<": operator.lt, ">": operator.gt,
}
_NUMBER = r"[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?"
_COND = re.compile(r"^\s*([a-z0-9_]+)\s*(<=|>=|<|>)\s*(" + _NUMBER + r")\s*$")


class UsageError(ValueError):
    """A command-line value the run cannot use (exit status 2)."""


@dataclass(frozen=True)
class Condition:
    """One --fail-on condition; the run fails when it is true."""

    metric: str
    op: str
    value: float

    def __str__(self) -> str:
        return f"{self.metric}{self.op}{self.value:g}"

    def failed(self, report: dict) -> tuple[bool, float | None]:
        actual = METRICS[self.metric](report)
        if actual is None or (isinstance(actual, float) and math.isnan(actual)):
            return True, None  # nothing measured cannot pass a threshold
        return OPS[self.op](actual, self.value), actual


#: What a run without --fail-on checks (unless --allow-errors).
DEFAULT_CONDITIONS = (Condition("errors", ">", 0.0), Condition("clients_failed", ">", 0.0))


def parse_fail_on(text: str | None) -> list[Condition]:
    """Parse `rtt_p99_ms>150,snapshots_per_s<28`; raises UsageError naming the bad part."""
    if not text:
        return []
    out = []
    for part in text.split(","):
        if not part.strip():
            raise UsageError(f"--fail-on: empty condition in {text!r}")
        m = _COND.match(part)
        if m is None:
            raise UsageError(f"--fail-on: cannot parse {part.strip()!r}; expected "
                             "`metric OP number` with OP one of < <= > >=")
        metric, op, number = m.groups()
        if metric not in METRICS:
            raise UsageError(f"--fail-on: unknown metric {metric!r}; one of "
                             f"{', '.join(METRICS)}")
        out.append(Condition(metric, op, float(number)))
    return out
