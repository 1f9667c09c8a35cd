"""Pytest fixtures for a real redis-server (Debian's package, started per test session on a
free loopback port by `server.redis_server.RedisServer`). No fake Redis in tests.

When redis-server is missing, scripts/install_redis.sh is tried once; if it is still
missing the tests that need it are skipped, except under CI=true, where that is a failure.
Made visible to every test directory by tests/conftest.py.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from server.redis_server import RedisServer, RedisUnavailable

INSTALL_REDIS = Path(__file__).resolve().parents[1] / "scripts" / "install_redis.sh"


def _unavailable(reason: str) -> None:
    if os.environ.get("CI") == "true":
        pytest.fail(f"Redis tests cannot run: {reason}", pytrace=False)
    pytest.skip(reason)


@pytest.fixture(scope="session")
def redis_server() -> Iterator[RedisServer]:
    """One redis-server for the whole test session; tests keep apart by key prefix or by
    `redis_url` (a fresh, flushed database number)."""
    try:
        server = RedisServer.start()
    except RedisUnavailable:
        subprocess.run(["bash", str(INSTALL_REDIS)], check=False, timeout=600)
        try:
            server = RedisServer.start()
        except RedisUnavailable as exc:
            _unavailable(str(exc))
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def own_redis() -> Iterator[RedisServer]:
    """A redis-server of this test's own, for tests that stop, pause or restart it."""
    try:
        server = RedisServer.start()
    except RedisUnavailable as exc:
        _unavailable(str(exc))
    try:
        yield server
    finally:
        server.stop()
