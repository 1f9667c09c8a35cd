"""A fleet for real: `tickwire serve --redis` node processes on 127.0.0.1, a real
redis-server, real WebSocket clients. Leases are short (--lease/--refresh flags) so the
failure cases finish in seconds; every wait is bounded.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import os
import signal
import socket
import sys
from collections import Counter
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import aiohttp
import pytest

from client_demo.client import Client
from server.metrics import parse_metrics
from server.nodeproc import ServerProcess, free_port

LEASE_S, REFRESH_S = 2.0, 0.5


def params_file(tmp_path: Path, name: str, max_players: int) -> Path:
    path = tmp_path / f"{name}.toml"
    path.write_text(f"[room]\nmax_players = {max_players}\n[npc]\ncount = 0\n")
    return path


async def http_json(method: str, url: str, body: dict | None = None) -> tuple[int, object]:
    async with aiohttp.ClientSession() as http, \
            http.request(method, url, json=body,
                         timeout=aiohttp.ClientTimeout(total=10)) as resp:
        return resp.status, await resp.json(content_type=None)


async def matchmake(node: ServerProcess, **body: object) -> dict:
    status, answer = await http_json("POST", node.base_url + "/matchmake", body)
    assert status == 200, answer
    return answer


async def rooms(node: ServerProcess) -> list[dict]:
    status, listed = await http_json("GET", node.base_url + "/rooms")
    assert status == 200
    return listed


async def node_id(node: ServerProcess) -> str:
    _, health = await http_json("GET", node.base_url + "/healthz")
    return health["registry"]["node"]


async def metrics(node: ServerProcess) -> dict[str, float]:
    async with aiohttp.ClientSession() as http, http.get(node.base_url + "/metrics") as resp:
        return parse_metrics(await resp.text())


async def eventually(check: Callable[[], object], timeout: float, interval: float = 0.1):
    """Await `check()` (a coroutine function) until it returns something truthy; bounded."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        result = await check()
        if result:
            return result
        if loop.time() > deadline:
            raise AssertionError(f"not within {timeout} s (last: {result!r})")
        await asyncio.sleep(interval)


@pytest.fixture
async def fleet(tmp_path: Path) -> AsyncIterator:
    """`await fleet(n, redis_url, *serve_args)`: n nodes, stopped (by pid) at the end."""
    started: list[ServerProcess] = []

    async def start(n: int, redis_url: str, *args: str) -> list[ServerProcess]:
        nodes = []
        for _ in range(n):
            port = free_port()
            nodes.append(ServerProcess(
                port=port, log_path=tmp_path / f"node-{port}.log",
                extra_args=["--redis", redis_url, "--lease", str(LEASE_S),
                            "--refresh", str(REFRESH_S), *args]))
        started.extend(nodes)
        await asyncio.gather(*(asyncio.to_thread(n.start) for n in nodes))
        return nodes

    yield start
    for node in started:
        with contextlib.suppress(Exception):
            await asyncio.to_thread(node.stop, signal.SIGKILL, 5.0)


@pytest.fixture
def redis_db(redis_server) -> Callable[[], str]:
    """A fresh, flushed database of the session's redis-server per call (DBs 1-15)."""
    import redis as sync_redis

    counter = iter(range(1, 16))

    def take() -> str:
        db = next(counter)
        url = f"redis://{redis_server.host}:{redis_server.port}/{db}"
        sync_redis.Redis.from_url(url).flushdb()
        return url

    return take


async def test_matchmaking_fills_rooms_and_spreads_them_over_three_nodes_functional(
        fleet, redis_db, tmp_path):
    a, b, c = await fleet(3, redis_db(), "--params", str(params_file(tmp_path, "p", 4)))
    ids = {await node_id(n): n for n in (a, b, c)}
    clients: list[Client] = []
    try:
        answers = []
        for i in range(12):
            answer = await matchmake((a, b, c)[i % 3], mode="arena")
            client = Client(answer["url"], f"p{i}", ping_interval_s=0)
            await client.connect()
            clients.append(client)
            answers.append(answer)
        per_room = Counter(x["room"] for x in answers)
        assert sorted(per_room.values()) == [4, 4, 4]  # filled before a new one
        node_of = {x["room"]: x["node"] for x in answers}
        assert sorted(node_of.values()) == sorted(ids)  # one room on each node
        for x in answers:
            assert x["url"].startswith(ids[x["node"]].ws_url + "?token=")

        async def all_listed() -> bool:
            for node in (a, b, c):
                listed = {r["room"]: r for r in await rooms(node)}
                if sorted(listed) != sorted(per_room) or any(
                        r["players"] != 4 or r["free"] != 0 for r in listed.values()):
                    return False
            return True

        await eventually(all_listed, 10.0)
    finally:
        await asyncio.gather(*(x.close() for x in clients))


async def test_private_rooms_are_not_listed_and_joinable_by_id_and_modes_are_respected_functional(
        fleet, redis_db, tmp_path):
    arena = params_file(tmp_path, "arena", 6)
    duel = params_file(tmp_path, "duel", 2)
    a, b = await fleet(2, redis_db(), "--mode", f"arena={arena}", "--mode", f"duel={duel}")
    host = await matchmake(a, mode="duel", create=True)
    assert host["private"] and host["mode"] == "duel"
    friend = await matchmake(b, room=host["room"])
    assert friend["room"] == host["room"] and friend["node"] == host["node"]
    status, full = await http_json("POST", a.base_url + "/matchmake", {"room": host["room"]})
    assert (status, full["error"]) == (409, "room_full")  # a duel seats two
    quick = await matchmake(b, mode="duel")
    assert quick["room"] != host["room"] and not quick["private"]
    arena_seat = await matchmake(a)  # the first --mode is the default
    assert arena_seat["mode"] == "arena"
    async with Client(host["url"], "host", ping_interval_s=0) as h, \
            Client(friend["url"], "friend", ping_interval_s=0) as f:
        await h.next_snapshot()
        await f.next_snapshot()
        assert {p.name for p in f.roster} == {"host", "friend"}  # the same room
        for node in (a, b):
            listed = await rooms(node)
            assert host["room"] not in {r["room"] for r in listed}
            modes = {r["room"]: (r["mode"], r["capacity"]) for r in listed}
            assert modes[quick["room"]] == ("duel", 2)
            assert modes[arena_seat["room"]] == ("arena", 6)
    status, unknown = await http_json("POST", a.base_url + "/matchmake", {"mode": "ctf"})
    assert (status, unknown["error"]) == (404, "unknown_mode")


async def test_a_seat_token_works_once_expires_and_is_refused_on_another_node_functional(
        fleet, redis_db):
    a, b = await fleet(2, redis_db(), "--token-ttl", "1.5")
    ids = {await node_id(n): n for n in (a, b)}
    seat = await matchmake(a)
    owner = ids[seat["node"]]
    other = b if owner is a else a
    token = seat["token"]
    async with aiohttp.ClientSession() as http:
        async def upgrade(node: ServerProcess, tok: str) -> int:
            try:
                async with http.ws_connect(f"{node.ws_url}?token={tok}") as ws:
                    await ws.close()
                    return 101
            except aiohttp.WSServerHandshakeError as exc:
                return exc.status

        assert await upgrade(other, token) == 403  # another node's seat
        assert await upgrade(owner, token) == 101  # the owner: once
        assert await upgrade(owner, token) == 401  # ...and never again
        late = await matchmake(a)
        await asyncio.sleep(1.6)
        assert await upgrade(ids[late["node"]], late["token"]) == 401
    counts = await metrics(owner)
    assert counts.get('tickwire_handshakes_rejected_total{reason="token_used"}', 0) >= 1
    assert await metrics(other) and (await metrics(other)).get(
        'tickwire_handshakes_rejected_total{reason="token_wrong_node"}') == 1


async def test_100_concurrent_matchmakes_on_2_nodes_overfill_no_room_nor_duplicate_one_functional(
        fleet, redis_db, tmp_path):
    nodes = await fleet(2, redis_db(), "--params", str(params_file(tmp_path, "p", 8)))
    ids = [f"req-{i}" for i in range(100)]
    bodies = [(nodes[i % 2], {"mode": "arena", "request_id": rid}) for i, rid in enumerate(ids)]
    retries = [(nodes[(i + 1) % 2], body) for i, (_, body) in enumerate(bodies[:30])]
    async with aiohttp.ClientSession() as http:
        async def post(node: ServerProcess, body: dict) -> dict:
            async with http.post(node.base_url + "/matchmake", json=body) as resp:
                assert resp.status == 200
                return await resp.json()

        answers = await asyncio.gather(*(post(n, b) for n, b in bodies + retries))
    by_request: dict[str, dict] = {}
    for (_, body), answer in zip(bodies + retries, answers, strict=True):
        first = by_request.setdefault(body["request_id"], answer)
        assert (first["room"], first["token"]) == (answer["room"], answer["token"])
    per_room = Counter(x["room"] for x in by_request.values())
    assert max(per_room.values()) <= 8
    assert len(per_room) == math.ceil(100 / 8)
    listed = await rooms(nodes[0])
    assert sorted(r["room"] for r in listed) == sorted(per_room)
    assert all(r["free"] >= 0 for r in listed)


async def test_kill_9_of_a_node_drops_its_rooms_within_the_lease_and_its_players_matchmake_again_functional(  # noqa: E501
        fleet, redis_db, tmp_path):
    a, b = await fleet(2, redis_db(), "--params", str(params_file(tmp_path, "p", 2)))
    ids = {await node_id(n): n for n in (a, b)}
    players = []
    try:
        for i in range(4):  # two rooms of two: one on each node
            p = Client("", f"p{i}", matchmake=a.base_url, reconnect=True,
                       max_reconnect_attempts=10, max_backoff_s=0.5, ping_interval_s=0)
            await p.connect()
            players.append(p)
        on = Counter(ids[p.matchmade["node"]].port for p in players)
        assert on == {a.port: 2, b.port: 2}
        doomed = [p for p in players if ids[p.matchmade["node"]] is b]
        dead_rooms = {p.matchmade["room"] for p in doomed}

        async def listed_on_a() -> set[str]:
            return {r["room"] for r in await rooms(a)}

        await eventually(lambda: _has(listed_on_a, dead_rooms), 5.0)
        os.kill(b.pid, signal.SIGKILL)
        await asyncio.to_thread(b.wait, 5.0)
        # Gone from every live node's /rooms within the lease and a second.
        await eventually(lambda: _lacks(listed_on_a, dead_rooms), LEASE_S + 1.0, 0.05)

        id_a = await node_id(a)

        async def moved() -> bool:
            return all(p.welcome is not None and p.matchmade["node"] == id_a
                       and not p.closed.is_set() for p in doomed)

        await eventually(moved, 15.0)
        for p in doomed:
            assert p.reconnects >= 1
            await p.next_snapshot()
    finally:
        await asyncio.gather(*(p.close() for p in players))


async def _has(listed: Callable, wanted: set[str]) -> bool:
    return wanted <= await listed()


async def _lacks(listed: Callable, unwanted: set[str]) -> bool:
    return not (unwanted & await listed())


async def test_redis_paused_for_5_s_while_20_bots_play_disconnects_nobody_functional(
        fleet, own_redis):
    (node,) = await fleet(1, own_redis.url)
    clients = [Client("", f"b{i}", matchmake=node.base_url, ping_interval_s=0)
               for i in range(20)]
    stop = asyncio.Event()

    async def play(c: Client) -> None:
        await c.connect()
        while not stop.is_set():
            await c.send_input(move_x=1.0)
            await asyncio.sleep(1 / 30)

    def tick_counts(m: dict[str, float]) -> tuple[float, float]:
        return (m.get("tickwire_ticks_skipped_total", 0.0),
                m.get("tickwire_tick_overruns_total", 0.0))

    tasks = [asyncio.create_task(play(c)) for c in clients]
    try:
        await eventually(lambda: _all_welcomed(clients), 20.0)
        before0 = tick_counts(await metrics(node))
        await asyncio.sleep(5.0)
        before1 = tick_counts(await metrics(node))
        own_redis.pause()
        try:
            status, answer = await http_json("POST", node.base_url + "/matchmake", {})
            assert (status, answer["error"]) == (503, "registry_unavailable")
            assert "redis" in answer["message"]
            await asyncio.sleep(5.0)
            status, _ = await http_json("POST", node.base_url + "/matchmake", {})
            assert status == 503
            _, health = await http_json("GET", node.base_url + "/healthz")
            assert health["registry"]["reachable"] is False
            during = tick_counts(await metrics(node))
        finally:
            own_redis.resume()

        async def recovered() -> bool:
            status, _ = await http_json("POST", node.base_url + "/matchmake", {})
            return status == 200

        await eventually(recovered, 10.0, 0.25)
        assert not any(c.closed.is_set() for c in clients)  # nobody was disconnected
        skipped_before, overruns_before = (y - x for x, y in zip(before0, before1, strict=True))
        skipped_during, overruns_during = (y - x for x, y in zip(before1, during, strict=True))
        # Ticks during the outage as on time as in the same length of time before it.
        assert skipped_during <= max(2.0, 2 * skipped_before)
        assert overruns_during <= max(3.0, 2 * overruns_before)
        counts = await metrics(node)
        assert counts["tickwire_redis_errors_total"] >= 1
        assert counts['tickwire_matchmake_total{result="registry_unavailable"}'] >= 2
    finally:
        stop.set()
        await asyncio.gather(*tasks, return_exceptions=True)
        await asyncio.gather(*(c.close() for c in clients))


async def _all_welcomed(clients: list[Client]) -> bool:
    return all(c.welcome is not None for c in clients)


async def test_a_node_given_sigterm_gets_no_new_seat_while_it_drains_functional(
        fleet, redis_db, tmp_path):
    # A long lease: only the node's own draining mark and deregistration can explain what
    # the other node sees.
    url = redis_db()
    args = ("--params", str(params_file(tmp_path, "p", 3)), "--lease", "30",
            "--shutdown-timeout", "3")
    (a,) = await fleet(1, url, *args)
    players = []
    try:
        for i in range(3):  # a full room on A...
            p = Client("", f"p{i}", matchmake=a.base_url, ping_interval_s=0)
            await p.connect()
            players.append(p)
        (b,) = await fleet(1, url, *args)
        id_b = await node_id(b)
        p = Client("", "p3", matchmake=a.base_url, ping_interval_s=0)
        await p.connect()
        players.append(p)
        # ...and one on B with two free seats: where quick play would go next.
        assert p.matchmade["node"] == id_b
        room_b = p.matchmade["room"]
        b.send_signal(signal.SIGTERM)
        log = b.log_path

        async def marked() -> bool:
            return "marked draining" in log.read_text(errors="replace")

        await eventually(marked, 5.0, 0.02)
        seats = [await matchmake(a) for _ in range(6)]
        assert id_b not in {s["node"] for s in seats}
        status, answer = await http_json("POST", a.base_url + "/matchmake", {"room": room_b})
        assert status in (404, 409) and answer["error"] in ("room_closing", "no_such_room")
        await asyncio.to_thread(b.wait, 10.0)
        assert id_b not in {r["node"] for r in await rooms(a)}  # deregistered at exit
    finally:
        await asyncio.gather(*(p.close() for p in players), return_exceptions=True)


def _two_free_ports() -> int:
    """A port P with P + 1 free too (`tickwire fleet --workers 2` listens on both; CI once
    found P + 1 taken)."""
    for _ in range(100):
        port = free_port()
        with socket.socket() as probe:
            try:
                probe.bind(("127.0.0.1", port + 1))
            except OSError:
                continue
        return port
    raise AssertionError("no two consecutive free ports on 127.0.0.1")


async def test_tickwire_fleet_starts_nodes_and_a_redis_and_stops_what_it_started_functional(
        tmp_path):
    port = _two_free_ports()
    proc = await asyncio.create_subprocess_exec(
        str(Path(sys.executable).with_name("tickwire")), "fleet", "--workers", "2",
        "--port", str(port), "--log-dir", str(tmp_path), "--", "--lease", "2",
        "--refresh", "0.5", stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT)
    pids = []
    try:
        while len(pids) < 3:
            line = (await asyncio.wait_for(proc.stdout.readline(), 30)).decode()
            if not line:
                code = await asyncio.wait_for(proc.wait(), 10)
                raise AssertionError(f"tickwire fleet exited early with {code} "
                                     f"(logs in {tmp_path})")
            if "(pid " in line:
                pids.append(int(line.rsplit("(pid ", 1)[1].split(")")[0]))
        for pid in pids[1:]:  # the nodes get the Redis URL in their environment, not argv
            assert b"redis://" not in Path(f"/proc/{pid}/cmdline").read_bytes()
            assert b"TICKWIRE_REDIS_URL=redis://" in Path(f"/proc/{pid}/environ").read_bytes()
        base = f"http://127.0.0.1:{port + 1}"
        status, answer = await http_json("POST", base + "/matchmake", {})
        assert status == 200 and answer["url"].startswith("ws://127.0.0.1:")
        async with Client(answer["url"], "fleet-player", ping_interval_s=0) as c:
            await c.next_snapshot()
        # A browser page served by the *other* node may open the socket (each node allows
        # every node's page origin); a foreign origin may not.
        for port_of_page, allowed in ((None, True), (free_port(), False)):
            _, seat = await http_json("POST", base + "/matchmake", {})
            node_port = int(seat["url"].split(":")[2].split("/")[0])
            other = port_of_page or (port + 1 if node_port == port else port)
            async with aiohttp.ClientSession() as http:
                try:
                    ws = await http.ws_connect(seat["url"],
                                               origin=f"http://127.0.0.1:{other}")
                    await ws.close()
                    upgraded = True
                except aiohttp.WSServerHandshakeError as exc:
                    assert exc.status == 403
                    upgraded = False
            assert upgraded is allowed, (other, seat["url"])
        proc.send_signal(signal.SIGINT)
        assert await asyncio.wait_for(proc.wait(), 30) == 0
        for pid in pids:  # the redis-server and both nodes are gone
            with pytest.raises(ProcessLookupError):
                os.kill(pid, 0)
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()



async def test_a_redis_that_restarts_empty_gets_every_room_and_the_secret_back_functional(
        fleet, own_redis, tmp_path):
    (a,) = await fleet(1, own_redis.url, "--params", str(params_file(tmp_path, "p", 4)))
    players = [Client("", f"p{i}", matchmake=a.base_url, ping_interval_s=0) for i in range(2)]
    try:
        for p in players:
            await p.connect()
        room = players[0].matchmade["room"]
        await asyncio.to_thread(own_redis.stop)
        status, _ = await http_json("POST", a.base_url + "/matchmake", {})
        assert status == 503
        await asyncio.to_thread(own_redis.restart)  # same port, no data

        import redis as sync_redis
        registry = sync_redis.Redis.from_url(own_redis.url)

        async def room_back() -> bool:  # in Redis again, with its players
            return registry.hget(f"tw:room:{room}", "players") == b"2"

        await eventually(room_back, 10.0, 0.1)
        assert [(r["room"], r["players"]) for r in await rooms(a)] == [(room, 2)]
        # A node that joins now agrees on the seat-token secret with the first one.
        (b,) = await fleet(1, own_redis.url, "--params", str(params_file(tmp_path, "p", 4)))
        third = Client("", "p2", matchmake=b.base_url, ping_interval_s=0)
        players.append(third)
        await third.connect()  # quick play fills the re-registered room on node a
        assert third.matchmade["room"] == room
        assert third.matchmade["node"] == await node_id(a)
        assert not any(p.closed.is_set() for p in players)
    finally:
        await asyncio.gather(*(p.close() for p in players), return_exceptions=True)


async def admin_fleet(node: ServerProcess, token: str | None = "fleet-admin") -> tuple[int, dict]:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    async with aiohttp.ClientSession() as http, \
            http.get(node.base_url + "/admin/fleet", headers=headers,
                     timeout=aiohttp.ClientTimeout(total=10)) as resp:
        return resp.status, await resp.json(content_type=None)


async def test_admin_fleet_view_shows_nodes_load_and_private_rooms_to_kick_in_functional(
        fleet, redis_db, tmp_path):
    arena = params_file(tmp_path, "arena", 4)
    duel = params_file(tmp_path, "duel", 2)
    a, b = await fleet(2, redis_db(), "--admin-token", "fleet-admin",
                       "--mode", f"arena={arena}", "--mode", f"duel={duel}")
    ids = {await node_id(a): a, await node_id(b): b}
    # The modes on offer, default first, as the start screen's picker reads them.
    _, offered = await http_json("GET", b.base_url + "/modes")
    assert offered == {"default": "arena", "modes": [{"mode": "arena", "capacity": 4},
                                                     {"mode": "duel", "capacity": 2}]}
    assert (await admin_fleet(a, None))[0] == 401
    assert (await admin_fleet(a, "wrong"))[0] == 401
    host = await matchmake(a, mode="duel", create=True)
    public = await matchmake(a)
    owner = ids[host["node"]]
    async with Client(host["url"], "secret-host", ping_interval_s=0) as h, \
            Client(public["url"], "public-one", ping_interval_s=0) as p:
        await h.next_snapshot()
        await p.next_snapshot()

        async def both_counted() -> dict | None:
            # Both players counted by a refresh, seen from the node that does not own
            # the private room (so its rooms come from Redis, not from its own memory).
            other = b if owner is a else a
            status, view = await admin_fleet(other)
            assert status == 200, view
            rooms = {r["room"]: r for n in view["nodes"] for r in n["rooms"]}
            ok = (rooms.get(host["room"], {}).get("players") == 1
                  and rooms.get(public["room"], {}).get("players") == 1)
            return view if ok else None

        view = await eventually(both_counted, 10)
        assert {n["node"] for n in view["nodes"]} == set(ids)
        for n in view["nodes"]:
            assert n["url"] == ids[n["node"]].ws_url.removesuffix("/ws")
            assert n["admin_url"] == ids[n["node"]].base_url + "/admin"
            assert n["draining"] is False and 0 <= n["refreshed_age_s"] < LEASE_S
            assert n["modes"] == {"arena": 4, "duel": 2}
        by_room = {r["room"]: (n, r) for n in view["nodes"] for r in n["rooms"]}
        node_of_host, private = by_room[host["room"]]
        assert node_of_host["node"] == host["node"] and private["private"] is True
        assert private["mode"] == "duel" and private["capacity"] == 2
        assert sum(n["players"] for n in view["nodes"]) == 2
        # The owner's own view carries the private room's seats (with names); the other
        # node's view gets them from the owner (same admin token), so either can kick.
        _, mine = await admin_fleet(owner)
        me = next(n for n in mine["nodes"] if n["self"])
        seats = next(r for r in me["rooms"] if r["room"] == host["room"])["seats"]
        assert [s["name"] for s in seats] == ["secret-host"]
        other = b if owner is a else a
        _, theirs = await admin_fleet(other)
        remote = next(n for n in theirs["nodes"] if n["node"] == host["node"])
        assert not remote["self"] and "seats_error" not in remote
        remote_room = next(r for r in remote["rooms"] if r["room"] == host["room"])
        assert [s["name"] for s in remote_room["seats"]] == ["secret-host"]
        kick_path = (f"/admin/nodes/{host['node']}/rooms/{host['room']}/kick/"
                     f"{seats[0]['player_id']}")
        status, _ = await http_json("POST", other.base_url + kick_path)
        assert status == 401  # the forwarding route is the admin's too
        async with aiohttp.ClientSession() as http, http.post(
                other.base_url + "/admin/nodes/nobody/rooms/x/kick/1",
                headers={"Authorization": "Bearer fleet-admin"}) as resp:
            assert resp.status == 404
        async with aiohttp.ClientSession() as http, http.post(
                other.base_url + kick_path,
                headers={"Authorization": "Bearer fleet-admin"}) as resp:
            answer = await resp.json()
            assert resp.status == 200, answer
            assert answer["kicked"] == seats[0]["player_id"]
        await eventually(lambda: _closed(h), 10)
        assert h.kick is not None and h.kick.label == "kicked"
        # The private room is still not in anyone's public list.
        for node in (a, b):
            assert host["room"] not in {r["room"] for r in await rooms(node)}


async def _closed(client: Client) -> bool:
    return client.ws is None or client.ws.closed
