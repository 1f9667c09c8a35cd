"""Fixtures shared by every test layer."""

from tests.redis_fixtures import own_redis, redis_server

__all__ = ["own_redis", "redis_server"]
