"""The HTTP routes' pure parts: the per-key JSON cache and the bearer check."""

from __future__ import annotations

from aiohttp.test_utils import make_mocked_request

from server.routes import JsonCache, bearer_matches


def test_a_body_is_built_once_per_key_and_rebuilt_when_the_key_changes():
    cache = JsonCache()
    calls = []

    def build() -> dict:
        calls.append(1)
        return {"n": len(calls)}

    assert cache.get("rooms", (1, 5), build) == b'{"n":1}'
    assert cache.get("rooms", (1, 5), build) == b'{"n":1}'
    assert cache.get("rooms", (1, 6), build) == b'{"n":2}'
    assert cache.get("other", (1, 6), build) == b'{"n":3}'  # names are separate bodies
    assert cache.builds == 3


def test_bearer_matches_only_the_configured_token():
    def req(value: str | None):
        return make_mocked_request("GET", "/rooms",
                                   headers={"Authorization": value} if value else {})

    assert bearer_matches(req("Bearer s3cret"), "s3cret")
    assert bearer_matches(req("bearer  s3cret "), "s3cret")
    assert not bearer_matches(req("Bearer s3cre"), "s3cret")
    assert not bearer_matches(req("Basic s3cret"), "s3cret")
    assert not bearer_matches(req(None), "s3cret")
    assert not bearer_matches(req("Bearer "), "")  # no token configured: nobody matches
    assert not bearer_matches(req("Bearer x"), None)
