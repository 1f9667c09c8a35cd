"""Hostile clients against the newer surfaces: POST /matchmake (bodies, request ids, create
floods, rates), live spectating (private rooms, names, stream caps, readers that stop
reading) and a fleet registry that answers garbage. Real servers on 127.0.0.1, real HTTP
clients (a second loopback address, 127.0.0.2, plays "another host"), a real redis-server;
every wait is bounded. Each test failed before its fix (THREAT_MODEL.md names them)."""

from __future__ import annotations

import asyncio
import contextlib
import socket

import aiohttp
import pytest

from client_demo.client import Client
from server.fleet.app import FleetSettings
from server.fleet.guard import MAX_MATCHMAKE_BODY, MatchmakeLimits
from server.spectate_routes import SPECTATORS_KEY, SpectateLimits
from tests.integration.conftest import make_params, wait_until

OTHER_HOST = "127.0.0.2"  # another source address on loopback: "another client host"
NO_RATES = MatchmakeLimits(rate_per_s=0, creates_per_min=0)


async def post(url: str, body: object = None, *, data: bytes | None = None,
               local: str | None = None) -> tuple[int, dict, aiohttp.typedefs.LooseHeaders]:
    connector = aiohttp.TCPConnector(local_addr=(local, 0)) if local else None
    async with aiohttp.ClientSession(connector=connector) as http, \
            http.post(url, json=None if data is not None else body, data=data,
                      timeout=aiohttp.ClientTimeout(total=10)) as resp:
        return resp.status, await resp.json(content_type=None), resp.headers


async def get(url: str, *, token: str | None = None, local: str | None = None
              ) -> tuple[int, str]:
    connector = aiohttp.TCPConnector(local_addr=(local, 0)) if local else None
    headers = {"Authorization": f"Bearer {token}"} if token else None
    async with aiohttp.ClientSession(connector=connector) as http, \
            http.get(url, headers=headers, timeout=aiohttp.ClientTimeout(total=10)) as resp:
        return resp.status, await resp.text()


# -- POST /matchmake --------------------------------------------------------------------------


async def test_matchmake_bodies_too_large_or_too_deep_get_413_and_400_never_a_500_functional(
        start_server):
    srv = await start_server(make_params(**{"npc.count": 0}))
    url = srv.http_url + "/matchmake"
    deep = b"[" * (MAX_MATCHMAKE_BODY - 10)  # fits the cap; the JSON scanner would recurse
    status, answer, _ = await post(url, data=deep)
    assert (status, answer["error"]) == (400, "bad_request"), answer
    assert "nested too deeply" in answer["message"]
    status, answer, _ = await post(url, data=b'{"mode": "' + b"a" * 900_000 + b'"}')
    assert (status, answer["error"]) == (413, "too_large"), answer
    status, answer, _ = await post(url, data=b'{"mode": "arena",')
    assert (status, answer["error"]) == (400, "bad_request"), answer
    assert (await post(url, {}))[0] == 200  # an honest request still gets a seat
    counts = await srv.metrics()
    assert counts['tickwire_matchmake_total{result="bad_request"}'] == 2
    assert counts['tickwire_matchmake_total{result="too_large"}'] == 1


async def test_a_request_id_is_the_clients_own_another_host_reusing_it_gets_no_token_functional(
        start_server):
    srv = await start_server(make_params(**{"npc.count": 0}))
    url = srv.http_url + "/matchmake"
    _, victim, _ = await post(url, {"request_id": "r-1"})
    _, retry, _ = await post(url, {"request_id": "r-1"})
    assert retry["token"] == victim["token"]  # idempotent for its own client
    _, thief, _ = await post(url, {"request_id": "r-1"}, local=OTHER_HOST)
    assert thief["token"] != victim["token"]  # the id alone does not hand out the seat
    _, other_body, _ = await post(url, {"request_id": "r-1", "create": True})
    assert other_body["token"] != victim["token"] and other_body["private"]
    # The victim's token still works: nobody consumed it.
    async with Client(victim["url"], "victim") as player:
        await player.next_snapshot()


async def test_one_address_flooding_create_gets_429_and_another_host_still_creates_functional(
        start_server):
    limits = MatchmakeLimits(rate_per_s=1e-6, burst=12, creates_per_min=1e-6, create_burst=3)
    srv = await start_server(make_params(**{"npc.count": 0}),
                             config_overrides={"matchmake": limits})
    url = srv.http_url + "/matchmake"
    codes = [(await post(url, {"create": True}))[0] for _ in range(3)]
    assert codes == [200, 200, 200]
    status, answer, headers = await post(url, {"create": True})
    assert (status, answer["error"]) == (429, "create_rate_limited"), answer
    assert int(headers["Retry-After"]) >= 1
    assert (await post(url, {"create": True}, local=OTHER_HOST))[0] == 200
    # Plain requests have their own, wider bucket: 12 in all from this address, then 429.
    plain = [(await post(url, {}))[0] for _ in range(12 - 4)]
    assert plain == [200] * 8
    status, answer, _ = await post(url, {})
    assert (status, answer["error"]) == (429, "rate_limited"), answer
    counts = await srv.metrics()
    assert counts['tickwire_matchmake_total{result="create_rate_limited"}'] == 1
    assert counts['tickwire_matchmake_total{result="rate_limited"}'] == 1
    assert counts['tickwire_matchmake_total{result="created"}'] == 5  # 4 private, 1 public


async def test_a_burst_of_create_requests_never_puts_more_than_max_rooms_on_a_node_functional(
        start_server):
    srv = await start_server(make_params(**{"npc.count": 0}),
                             config_overrides={"max_rooms": 8, "matchmake": NO_RATES})
    node = srv.gateway.fleet
    codes = []
    for i in range(24):
        codes.append((await post(srv.http_url + "/matchmake", {"create": True}))[0])
        if i % 3 == 2:  # the node's registry refresh runs between bursts
            await node.refresh_once()
    await node.refresh_once()
    assert len(srv.gateway.lobby.rooms) <= 8, len(srv.gateway.lobby.rooms)
    assert codes.count(200) == 8 and set(codes) == {200, 503}, codes


# -- live spectating --------------------------------------------------------------------------


async def test_spectating_hides_private_rooms_and_names_unless_the_admin_token_functional(
        start_server):
    srv = await start_server(make_params(**{"npc.count": 0}),
                             config_overrides={"admin_token": "admin-secret-123"})
    _, private, _ = await post(srv.http_url + "/matchmake", {"create": True})
    _, public, _ = await post(srv.http_url + "/matchmake", {})
    # The private room's id is its only lock: 64 random bits (a public one's is listed).
    assert len(private["room"].rsplit("-", 1)[1]) == 16
    _, friend, _ = await post(srv.http_url + "/matchmake", {"room": private["room"]})
    assert friend["room"] == private["room"]  # the id is still a working share link
    async with Client(private["url"], "PrivateName") as a, \
            Client(public["url"], "PublicName") as b:
        await a.next_snapshot()
        await b.next_snapshot()
        base = srv.http_url + "/spectate/"
        assert (await get(base + private["room"]))[0] == 404
        assert (await get(base + private["room"] + "/events"))[0] == 404
        assert (await get(base + "no-such-room"))[0] == 404  # the same answer: no oracle
        status, body = await get(base + public["room"])
        assert status == 200 and "PublicName" not in body and str(b.player_id) in body
        status, body = await get(base + private["room"], token="admin-secret-123")
        assert status == 200 and "PrivateName" in body
    counts = await srv.metrics()
    assert counts['tickwire_spectators_refused_total{reason="private"}'] == 2


async def _stream_open(url: str, http: aiohttp.ClientSession) -> aiohttp.ClientResponse:
    resp = await http.get(url, timeout=aiohttp.ClientTimeout(total=None, sock_connect=5))
    if resp.status == 200:
        await asyncio.wait_for(resp.content.readline(), 5.0)  # the first event arrived
    return resp


async def test_one_address_cannot_take_every_spectator_stream_functional(start_server):
    srv = await start_server(make_params(**{"npc.count": 0}), config_overrides={
        "spectate": SpectateLimits(max_streams=64, per_ip=2)})
    srv.gateway.ensure_room("watched", "arena", False)
    url = srv.http_url + "/spectate/watched/events"
    mine = aiohttp.ClientSession()
    other = aiohttp.ClientSession(connector=aiohttp.TCPConnector(local_addr=(OTHER_HOST, 0)))
    try:
        held = [await _stream_open(url, mine) for _ in range(2)]
        assert [r.status for r in held] == [200, 200]
        third = await _stream_open(url, mine)
        assert third.status == 503 and (await third.json())["error"] == "per_ip"
        honest = await _stream_open(url, other)
        assert honest.status == 200
        for resp in (*held, third, honest):
            resp.close()
    finally:
        await mine.close()
        await other.close()
    assert (await srv.metrics())['tickwire_spectators_refused_total{reason="per_ip"}'] == 1


async def test_a_spectator_that_stops_reading_is_cut_and_frees_its_slot_functional(
        start_server):
    # Frames of 400 NPCs (~25 KB, 30 a second) fill a non-reading socket's buffers in a
    # few seconds; the write then blocks and the stall limit cuts the stream.
    srv = await start_server(make_params(**{"npc.count": 400}), config_overrides={
        "spectate": SpectateLimits(max_streams=1, per_ip=1, stall_s=0.5)})
    srv.gateway.ensure_room("watched", "arena", False)
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.setblocking(False)
    loop = asyncio.get_running_loop()
    try:
        await loop.sock_connect(sock, ("127.0.0.1", srv.port))
        await loop.sock_sendall(sock, b"GET /spectate/watched/events HTTP/1.1\r\n"
                                      b"Host: 127.0.0.1\r\n\r\n")
        # ...and never reads again.
        name = 'tickwire_spectators_refused_total{reason="stalled"}'

        async def cut() -> bool:
            return (await srv.metrics()).get(name, 0) == 1

        deadline = loop.time() + 30.0
        while not await cut():
            assert loop.time() < deadline, "the stalled stream was not cut within 30 s"
            await asyncio.sleep(0.2)
    finally:
        sock.close()
    # Its slot is free again: the one stream allowed opens.
    async with aiohttp.ClientSession() as http:
        resp = await _stream_open(srv.http_url + "/spectate/watched/events", http)
        assert resp.status == 200
        resp.close()


# -- a registry that answers garbage ------------------------------------------------------------


@pytest.fixture
def redis_url(redis_server):
    import redis as sync_redis

    url = f"redis://{redis_server.host}:{redis_server.port}/14"
    sync_redis.Redis.from_url(url).flushdb()
    return url


async def test_garbage_in_redis_never_kills_the_node_loop_nor_fails_rooms_functional(
        start_server, redis_url):
    import redis.asyncio as aioredis

    srv = await start_server(make_params(**{"npc.count": 0}), config_overrides={
        "fleet": FleetSettings(redis_url=redis_url, lease_s=2.0, refresh_s=0.1)})
    node = srv.gateway.fleet
    _, seat, _ = await post(srv.http_url + "/matchmake", {})
    r = aioredis.Redis.from_url(redis_url)
    try:
        # A room someone else wrote, with its `created` field missing: /rooms must still
        # list the real rooms (it was a 500 for every caller on every node).
        await r.hset("tw:room:forged", mapping={"node": node.config.node_id, "players": 0,
                                                "capacity": 8})
        await r.zadd("tw:public:arena", {"forged": 0})
        status, body = await get(srv.http_url + "/rooms")
        assert status == 200 and seat["room"] in body and "forged" not in body
        # A shared secret that is not hex: the refresh cannot use the answer.
        await r.set("tw:secret", "not hex at all")
        await wait_until(lambda: not node.available, timeout=10.0)
        assert "garbage" in node.last_error
        status, answer, _ = await post(srv.http_url + "/matchmake", {})
        assert (status, answer["error"]) == (503, "registry_unavailable")
        await r.delete("tw:secret")  # repaired: the node's loop is alive and re-asserts
        await wait_until(lambda: node.available, timeout=10.0)
        assert (await post(srv.http_url + "/matchmake", {}))[0] == 200
    finally:
        with contextlib.suppress(Exception):
            await r.aclose()
    assert (await srv.metrics())["tickwire_redis_errors_total"] >= 1


def _evalsha_calls(url: str) -> int:
    import redis as sync_redis

    stats = sync_redis.Redis.from_url(url).info("commandstats")
    return int(stats.get("cmdstat_evalsha", {}).get("calls", 0))


async def test_polling_rooms_costs_redis_one_listing_per_refresh_not_one_per_request_functional(
        start_server, redis_url):
    # A refresh beat far longer than the test: only the requests could call Redis.
    srv = await start_server(make_params(**{"npc.count": 0}), config_overrides={
        "fleet": FleetSettings(redis_url=redis_url, lease_s=120.0, refresh_s=60.0)})
    node = srv.gateway.fleet
    _, seat, _ = await post(srv.http_url + "/matchmake", {})
    await get(srv.http_url + "/rooms")  # the listing script is loaded into Redis once
    await node.refresh_once()
    before = _evalsha_calls(redis_url)
    async with aiohttp.ClientSession() as http:
        async def poll() -> str:
            async with http.get(srv.http_url + "/rooms") as resp:
                assert resp.status == 200
                return await resp.text()

        bodies = await asyncio.gather(*(poll() for _ in range(100)))
        bodies += [await poll() for _ in range(100)]
    assert all(seat["room"] in body for body in bodies)
    assert _evalsha_calls(redis_url) - before == 1  # 200 polls, one listing script
    await node.refresh_once()  # the next beat: a fresh listing
    await get(srv.http_url + "/rooms")
    assert _evalsha_calls(redis_url) - before == 3  # + the refresh + one listing


async def test_a_rooms_cached_spectator_frame_goes_with_its_last_watcher_functional(
        start_server):
    # Every room ever watched kept its last frame (hundreds of KB for a big world) for the
    # life of the process: watching each public room once made memory grow with churn.
    srv = await start_server(make_params(**{"npc.count": 50}))
    streams = srv.server.app[SPECTATORS_KEY]
    for room_id in ("a", "b", "c"):
        srv.gateway.ensure_room(room_id, "arena", False)
    async with aiohttp.ClientSession() as http:
        opened = [await _stream_open(srv.http_url + f"/spectate/{r}/events", http)
                  for r in ("a", "a", "b", "c")]
        assert sorted(streams.frames) == ["a", "b", "c"]
        opened[0].close()  # one of a's two watchers leaves: a's frame stays
        opened[2].close()
        await wait_until(lambda: sorted(streams.frames) == ["a", "c"], timeout=10.0)
        for resp in opened:
            resp.close()
        await wait_until(lambda: not streams.frames and not streams.encoded, timeout=10.0)
    assert streams.open == 0


async def test_another_sites_page_cannot_make_its_visitors_matchmake_functional(start_server):
    # A page on evil.example POSTs a text/plain body (no CORS preflight) from each
    # visitor's browser: before, every visitor reserved a seat or created a room here.
    srv = await start_server(make_params(**{"npc.count": 0}))
    url = srv.http_url + "/matchmake"
    async with aiohttp.ClientSession() as http:
        async with http.post(url, data=b'{"create": true}', headers={
                "Origin": "http://evil.example", "Content-Type": "text/plain"}) as resp:
            assert resp.status == 403
            assert (await resp.json())["error"] == "origin"
        async with http.post(url, json={}, headers={"Origin": srv.http_url}) as resp:
            assert resp.status == 200  # the server's own page (quick play) still works
        async with http.post(url, json={}) as resp:
            assert resp.status == 200  # not a browser: no Origin, not affected
    await srv.gateway.fleet.refresh_once()  # rooms the registry made now exist here
    assert not any(private for _, private, _ in srv.gateway.lobby.meta.values())
    assert (await srv.metrics())['tickwire_matchmake_total{result="origin"}'] == 1


async def test_a_redis_password_never_reaches_healthz_or_a_matchmake_answer_functional(
        start_server, caplog):
    # An unreachable Redis's message went verbatim to /healthz and to every 503 of
    # /matchmake, which anyone may read: URL, password and all.
    from server.nodeproc import free_port

    url = f"redis://:hunter2-pass@127.0.0.1:{free_port()}/0"  # nothing listens there
    srv = await start_server(make_params(**{"npc.count": 0}), config_overrides={
        "join_secret": b"j" * 32, "fleet": FleetSettings(redis_url=url)})
    status, health = await get(srv.http_url + "/healthz")
    assert status == 200 and '"reachable":false' in health
    assert "hunter2" not in health and "redis://:***@127.0.0.1" in health
    status, answer, _ = await post(srv.http_url + "/matchmake", {})
    assert (status, answer["error"]) == (503, "registry_unavailable")
    assert "hunter2" not in answer["message"] and ":***@" in answer["message"]
    assert not any("hunter2" in r.getMessage() for r in caplog.records)


# -- tickwire replay FILE --serve -----------------------------------------------------------


def test_the_replay_server_closes_a_request_head_that_never_ends_functional(tmp_path):
    # With web.run_app a connection trickling a head that never ends stayed open for good
    # (still open after 20 s): a slowloris could hold every descriptor of the replay
    # server. It now has the game server's listener: 408 after --request-head-timeout.
    import subprocess
    import time

    from server.nodeproc import TICKWIRE, free_port
    from tests.unit.test_recording import play, recorded_room

    if not TICKWIRE.exists():
        pytest.skip(f"{TICKWIRE} is missing (run make install)")
    room, recorder = recorded_room(tmp_path)
    room.join(7, "a", 0.0)
    play(room, 30)
    recorder.close()
    (path,) = recorder.files
    port = free_port()
    log = (tmp_path / "replay.log").open("wb")
    proc = subprocess.Popen([str(TICKWIRE), "replay", str(path), "--serve", "--port",
                             str(port), "--request-head-timeout", "1"],
                            stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 20.0
        while True:
            assert proc.poll() is None, (tmp_path / "replay.log").read_text()
            try:
                socket.create_connection(("127.0.0.1", port), 0.5).close()
                break
            except OSError:
                assert time.monotonic() < deadline, "the replay server did not listen"
                time.sleep(0.1)
        with socket.create_connection(("127.0.0.1", port), 5.0) as slow:
            slow.settimeout(15.0)
            slow.sendall(b"GET /replay/info HTTP/1.1\r\nHo")  # ...and never the rest
            answer = slow.recv(200)
        assert answer.startswith(b"HTTP/1.1 408"), answer
        with socket.create_connection(("127.0.0.1", port), 5.0) as honest:
            honest.settimeout(10.0)
            honest.sendall(b"GET /replay/info HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            assert honest.recv(100).startswith(b"HTTP/1.1 200")
    finally:
        proc.terminate()
        proc.wait(timeout=10)
        log.close()
    assert "serving" in (tmp_path / "replay.log").read_text()
