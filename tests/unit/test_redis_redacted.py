"""`server.fleet.redis_registry.redacted`: a Redis URL as shown in logs and answers."""

from __future__ import annotations

import pytest

from server.fleet.redis_registry import redacted


@pytest.mark.parametrize("url, shown", [
    ("redis://127.0.0.1:6379/0", "redis://127.0.0.1:6379/0"),
    ("redis://:pw@127.0.0.1:6379/0", "redis://:***@127.0.0.1:6379/0"),
    ("redis://user:pw@h:1/2", "redis://user:***@h:1/2"),
    ("rediss://:p%40ss@[::1]:6380/0", "rediss://:***@[::1]:6380/0"),
    ("redis://h:1/0?password=pw&db=2", "redis://h:1/0?password=***&db=2"),
])
def test_a_password_is_never_shown(url: str, shown: str) -> None:
    assert redacted(url) == shown
