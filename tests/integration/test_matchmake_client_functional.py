"""The Python client's /matchmake against a real server's rate limits: a 429 is retried
after the server's Retry-After, and a wait longer than the client accepts is an error at
once, not a hang. Real server on 127.0.0.1, bounded waits."""

from __future__ import annotations

import time

import aiohttp
import pytest

from client_demo.matchmake import MatchmakeError, matchmake
from server.fleet.guard import MatchmakeLimits
from tests.integration.conftest import make_params


async def test_a_429_is_retried_after_the_servers_retry_after_functional(start_server):
    # One request per second from this address, no burst beyond one.
    limits = MatchmakeLimits(rate_per_s=1.0, burst=1, creates_per_min=0)
    srv = await start_server(make_params(**{"npc.count": 0}),
                             config_overrides={"matchmake": limits})
    async with aiohttp.ClientSession() as http:
        first = await matchmake(http, srv.http_url)
        began = time.monotonic()
        second = await matchmake(http, srv.http_url, attempts=3)
        waited = time.monotonic() - began
    assert first["token"] != second["token"]
    counts = await srv.metrics()
    assert counts['tickwire_matchmake_total{result="rate_limited"}'] == 1
    # The server asked for a whole second (Retry-After is whole seconds, at least 1); the
    # client's own backoff would have retried after 0.2 s and been refused again.
    assert waited >= 0.9


async def test_a_retry_after_longer_than_the_client_accepts_fails_at_once_functional(
        start_server):
    limits = MatchmakeLimits(rate_per_s=0.01, burst=1, creates_per_min=0)
    srv = await start_server(make_params(**{"npc.count": 0}),
                             config_overrides={"matchmake": limits})
    async with aiohttp.ClientSession() as http:
        await matchmake(http, srv.http_url)
        with pytest.raises(MatchmakeError) as refused:
            await matchmake(http, srv.http_url, max_wait_s=5.0)
    assert refused.value.status == 429
    assert "retry after 100 s" in str(refused.value)
    counts = await srv.metrics()
    assert counts['tickwire_matchmake_total{result="rate_limited"}'] == 1
