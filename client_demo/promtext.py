"""Read a Tickwire server's /metrics and /rooms from the load tester (client side).

The client never imports the server: the exposition text is parsed here with
prometheus_client's own parser, into the same flat `{sample: value}` shape the server's
tests use (`name{label="value",...}`, labels sorted by name).
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from prometheus_client.parser import text_string_to_metric_families


def http_url_for(ws_url: str, path: str) -> str:
    """ws://h:p/ws -> http://h:p{path} (wss -> https)."""
    parts = urlsplit(ws_url)
    scheme = {"ws": "http", "wss": "https"}[parts.scheme]
    return urlunsplit((scheme, parts.netloc, path, "", ""))


def sample_key(name: str, labels: dict[str, str]) -> str:
    if not labels:
        return name
    inner = ",".join('{}="{}"'.format(k, v.replace("\\", "\\\\").replace('"', '\\"')
                                      .replace("\n", "\\n"))
                     for k, v in sorted(labels.items()))
    return f"{name}{{{inner}}}"


def parse_exposition(text: str) -> dict[str, float]:
    """Prometheus text exposition -> {sample key: value}; ValueError when malformed."""
    out: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            out[sample_key(sample.name, dict(sample.labels))] = float(sample.value)
    return out


def labelled(metrics: dict[str, float], name: str, label: str) -> dict[str, float]:
    """{label value: sample} for every sample of `name` with one label `label`."""
    prefix = f'{name}{{{label}="'
    return {key[len(prefix):-2]: value for key, value in metrics.items()
            if key.startswith(prefix) and key.endswith('"}') and '",' not in key}


def fetch_metrics(url: str, timeout: float = 2.0) -> dict[str, float] | None:
    """GET /metrics and parse it; None when it cannot be reached or parsed."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:  # only the URL given
            return parse_exposition(resp.read().decode("utf-8"))
    except (urllib.error.URLError, OSError, ValueError):
        return None


def fetch_rooms(url: str, timeout: float = 2.0) -> list[dict[str, Any]] | None:
    """GET /rooms (a list of {id, players, tick, tick_rate, ...}); None when unavailable."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:
            rooms = json.loads(resp.read().decode("utf-8"))
    except (urllib.error.URLError, OSError, ValueError):
        return None
    if not isinstance(rooms, list) or not all(isinstance(r, dict) for r in rooms):
        return None
    return rooms
