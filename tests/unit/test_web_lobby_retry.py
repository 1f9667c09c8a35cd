"""The start screen's matchmaking verdicts (client_demo/web/lobby.js) under Node: a
transient refusal carries the server's Retry-After, so net.js never retries sooner than
the server asked; a permanent one carries none."""

from __future__ import annotations

import json

import pytest

from tests.unit.webnode import WEB, run_script

SCRIPT = r"""
globalThis.window = globalThis;
globalThis.location = { search: "" };
globalThis.localStorage = { getItem: () => null, setItem: () => {} };
const web = process.argv[2];
const { MatchError, retryAfterSeconds } = await import(`${web}/lobby.js`);
const cases = JSON.parse(process.argv[3]);
const out = cases.map(([status, code, header]) => {
  const err = new MatchError(status, code, "", retryAfterSeconds(header));
  return { retry: err.retry, after: err.verdict.retryAfterS };
});
const headers = ["7", " 12 ", "", null, "1.5", "-3", "Wed, 21 Oct 2015 07:28:00 GMT"];
console.log(JSON.stringify({ out, parsed: headers.map(retryAfterSeconds) }));
"""

CASES = [
    (429, "rate_limited", "7", True, 7),
    (429, "create_rate_limited", "60", True, 60),
    (503, "registry_unavailable", "2", True, 2),
    (503, "fleet_full", None, True, 0),
    (0, "unreachable", None, True, 0),
    (409, "room_full", "5", False, 0),
    (404, "no_such_room", None, False, 0),
]


@pytest.fixture(scope="module")
def results(tmp_path_factory: pytest.TempPathFactory) -> dict:
    cases = [[s, c, h] for s, c, h, _, _ in CASES]
    return run_script(tmp_path_factory.mktemp("lobby") / "lobby.mjs", SCRIPT, WEB.as_uri(),
                      json.dumps(cases))


@pytest.mark.parametrize(("i", "case"), list(enumerate(CASES)))
def test_a_transient_refusal_waits_at_least_the_servers_retry_after(results, i, case) -> None:
    _, _, _, retry, after = case
    assert results["out"][i] == {"retry": retry, "after": after}


def test_retry_after_header_values(results) -> None:
    assert results["parsed"] == [7, 12, 0, 0, 0, 0, 0]
