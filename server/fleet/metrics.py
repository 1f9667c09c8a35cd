"""The fleet's Prometheus metrics, registered in the server's own registry."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Histogram

MATCHMAKE_BUCKETS_S = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0,
                       2.5)


class FleetMetrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        r = registry or CollectorRegistry()
        self.matchmake_seconds = Histogram(
            "tickwire_matchmake_seconds", "Time to answer POST /matchmake, seconds.",
            buckets=MATCHMAKE_BUCKETS_S, registry=r)
        self.matchmake_total = Counter(
            "tickwire_matchmake", "Matchmaking answers by result (joined, created, or the "
            "error code).", ["result"], registry=r)
        self.redis_errors = Counter(
            "tickwire_redis_errors", "Registry (Redis) calls that failed.", registry=r)
