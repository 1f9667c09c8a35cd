"""The fleet's aiohttp glue without a socket: GET /modes' answer and its cache (a manual
clock), and the admin page's link to another node."""

from __future__ import annotations

from dataclasses import dataclass, field

from server.fleet.app import MODES_CACHE_S, admin_url, offered_modes


@dataclass
class Capacity:
    max_players: int


@dataclass
class OneServer:
    """The part of a gateway GET /modes reads, for a server without Redis."""

    modes: dict[str, Capacity] = field(default_factory=dict)
    default_mode: str = "arena"
    fleet: None = None


async def test_modes_list_the_default_first_then_by_name_with_capacities():
    server = OneServer({"zone": Capacity(16), "arena": Capacity(32), "duel": Capacity(2)})
    assert await offered_modes(server, {}, now=0.0) == {
        "default": "arena",
        "modes": [{"mode": "arena", "capacity": 32}, {"mode": "duel", "capacity": 2},
                  {"mode": "zone", "capacity": 16}]}


async def test_modes_are_built_at_most_once_per_cache_period():
    server = OneServer({"arena": Capacity(32)})
    cache: dict[str, object] = {}
    first = await offered_modes(server, cache, now=100.0)
    server.modes["duel"] = Capacity(2)  # a change is seen only when the copy is old
    assert await offered_modes(server, cache, now=100.0 + MODES_CACHE_S / 2) == first
    later = await offered_modes(server, cache, now=100.0 + MODES_CACHE_S)
    assert [m["mode"] for m in later["modes"]] == ["arena", "duel"]


def test_admin_links_follow_the_public_url():
    assert admin_url("ws://10.0.0.7:8080") == "http://10.0.0.7:8080/admin"
    assert admin_url("wss://play.example.com/n1") == "https://play.example.com/n1/admin"
    assert admin_url("wss://play.example.com/n1/") == "https://play.example.com/n1/admin"
    assert admin_url("") == "" and admin_url("http://x") == ""
