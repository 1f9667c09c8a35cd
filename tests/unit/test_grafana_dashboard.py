"""The shipped Grafana dashboard queries only metrics the server exposes."""

from __future__ import annotations

import json
import re
from pathlib import Path

from server.metrics import CONTRACT_NAMES, Metrics

DASHBOARD = Path(__file__).resolve().parents[2] / "docs" / "grafana" / "tickwire.json"
_NAME = re.compile(r"\b((?:tickwire|process)_[a-z0-9_]+)")


def queries() -> list[str]:
    dash = json.loads(DASHBOARD.read_text())
    exprs = [t["expr"] for p in dash["panels"] for t in p.get("targets", [])]
    exprs += [v["definition"] for v in dash["templating"]["list"] if "definition" in v]
    return exprs


def family(sample_name: str, histograms: set[str]) -> str:
    """The metric family a sample name in a query belongs to."""
    for suffix in ("_bucket", "_count", "_sum"):
        base = sample_name.removesuffix(suffix)
        if base != sample_name and base in histograms:
            return base
    return sample_name


def exposed_families(body: str) -> dict[str, str]:
    return dict(re.findall(r"^# TYPE (\S+) (\S+)$", body, flags=re.M))


def dashboard_families(types: dict[str, str]) -> set[str]:
    histograms = {name for name, kind in types.items() if kind == "histogram"}
    return {family(name, histograms) for q in queries() for name in _NAME.findall(q)}


def test_every_metric_the_dashboard_queries_is_in_the_contract_and_exposed():
    types = exposed_families(Metrics().render()[0].decode())
    used = dashboard_families(types)
    assert len(used) >= 20  # the panels do cover the families
    assert not used - set(CONTRACT_NAMES), used - set(CONTRACT_NAMES)
    assert not used - set(types), used - set(types)


def test_the_dashboard_covers_tick_health_players_bytes_rtt_and_rejections():
    dash = json.loads(DASHBOARD.read_text())
    rows = [p["title"] for p in dash["panels"] if p["type"] == "row"]
    for title in ("Tick health", "Players", "Bytes", "Round-trip time", "Rejections"):
        assert title in rows
    ids = [p["id"] for p in dash["panels"]]
    assert len(ids) == len(set(ids))
    for panel in dash["panels"]:
        for target in panel.get("targets", []):
            assert target["datasource"]["uid"] == "${datasource}"
