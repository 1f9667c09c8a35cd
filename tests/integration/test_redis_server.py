"""The local redis-server helper that `tickwire fleet` and the tests use."""

from __future__ import annotations

import socket

import pytest

from server.redis_server import RedisServer, RedisUnavailable, redis_binary


def _ask(server: RedisServer, command: bytes, timeout_s: float = 1.0) -> bytes:
    with socket.create_connection((server.host, server.port), timeout=timeout_s) as s:
        s.sendall(command)
        return s.recv(64)


def test_started_redis_answers_and_keeps_nothing_on_disk(own_redis: RedisServer) -> None:
    assert _ask(own_redis, b"PING\r\n").startswith(b"+PONG")
    assert own_redis.url == f"redis://127.0.0.1:{own_redis.port}/0"
    assert b"save" in _ask(own_redis, b"CONFIG GET save\r\n")


def test_paused_redis_does_not_answer_until_resumed(own_redis: RedisServer) -> None:
    own_redis.pause()
    try:
        with pytest.raises(TimeoutError):
            _ask(own_redis, b"PING\r\n", timeout_s=0.3)
    finally:
        own_redis.resume()
    assert _ask(own_redis, b"PING\r\n").startswith(b"+PONG")


def test_stop_then_restart_on_the_same_port(own_redis: RedisServer) -> None:
    port, pid = own_redis.port, own_redis.pid
    own_redis.stop()
    with pytest.raises(OSError):
        _ask(own_redis, b"PING\r\n", timeout_s=0.3)
    own_redis.restart()
    assert own_redis.port == port and own_redis.pid != pid
    assert _ask(own_redis, b"PING\r\n").startswith(b"+PONG")


def test_missing_binary_names_the_package(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", "/nonexistent")
    with pytest.raises(RedisUnavailable, match="redis-server"):
        redis_binary()
