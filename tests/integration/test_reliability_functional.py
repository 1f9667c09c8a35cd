"""Faults a player or an operator lives through, against real servers on 127.0.0.1.

Dropped connections and resume (one client, a hundred at once, a stale socket, an expired
token); the server process itself going away (SIGTERM/SIGINT drain, kill -9 and a restart
on the same port); a client process frozen with SIGSTOP (half-open connection); TLS; and
the checks made before the WebSocket upgrade (origin, join tokens, connections per IP,
the Join deadline).

Subprocess servers are `tickwire serve` on a free loopback port, always killed by pid in
a `finally`; every wait is bounded.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import ssl
import struct
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest

from client_demo.client import Client, ClientError
from proto import PROTOCOL_VERSION
from proto import tickwire_pb2 as pb
from server.clock import ManualClock
from server.nodeproc import ServerProcess, free_port
from tests.integration.conftest import RawWebSocket, make_params, wait_until

REPO = Path(__file__).resolve().parents[2]
SECRET = b"0123456789abcdef-test-secret"


# -- helpers ---------------------------------------------------------------------------------


def abort_client(client: Client) -> None:
    """Cut the client's TCP connection without a close frame (a dropped network)."""
    assert client.ws is not None
    transport = client.ws._conn.transport  # aiohttp keeps no public handle on it
    assert transport is not None
    transport.abort()


async def fetch_json(url: str, *, ssl_context: ssl.SSLContext | None = None) -> object:
    connector = aiohttp.TCPConnector(ssl=ssl_context) if ssl_context else None
    async with aiohttp.ClientSession(connector=connector) as http, \
            http.get(url, timeout=aiohttp.ClientTimeout(total=5)) as resp:
        assert resp.status == 200
        return await resp.json()


@pytest.fixture
async def serve(tmp_path: Path) -> AsyncIterator:
    """Start `tickwire serve` subprocesses (their health wait runs off the event loop);
    every one is killed by pid at the end of the test."""
    started: list[ServerProcess] = []

    async def start(*args: str, port: int | None = None, scheme: str = "http",
                    ssl_context: ssl.SSLContext | None = None) -> ServerProcess:
        proc = ServerProcess(port=port or free_port(),
                             log_path=tmp_path / f"serve-{len(started)}.log",
                             extra_args=list(args), host=None, scheme=scheme,
                             ssl_context=ssl_context)
        started.append(proc)
        return await asyncio.to_thread(proc.start)

    yield start
    for proc in started:
        proc.stop(signal.SIGKILL)


def resume_frame(token: bytes) -> bytes:
    return pb.ClientFrame(resume=pb.Resume(protocol_version=PROTOCOL_VERSION, token=token)) \
        .SerializeToString()


async def raw_welcome(raw: RawWebSocket) -> pb.Welcome:
    while True:
        opcode, payload = await raw.read_frame(timeout=5)
        if opcode == 0x2:
            frame = pb.ServerFrame.FromString(payload)
            if frame.HasField("welcome"):
                return frame.welcome


# -- resume ----------------------------------------------------------------------------------


async def test_a_dropped_client_resumes_its_entity_with_a_keyframe_within_the_grace_functional(
        start_server):
    running = await start_server(make_params(**{"npc.count": 0}))
    async with Client(running.ws_url, "dropper") as c:
        for _ in range(10):
            await c.send_input(0.0, 0.0)
            await c.next_snapshot()
        player_id, entity = c.player_id, c.entity
        room = next(iter(running.gateway.lobby.rooms.values()))
        abort_client(c)
        await c.wait_closed(timeout=5)
        await wait_until(lambda: not room.seats[player_id].connected)
        # The entity waits for its player.
        assert room.world.alive[entity] and room.seats[player_id].entity == entity
        keyframes = c.stats.keyframes
        welcome = await c.resume()
        assert (welcome.player_id, welcome.entity) == (player_id, entity)
        await c.next_snapshot()
        assert c.stats.keyframes > keyframes, "a resumed client starts from a keyframe"
        assert room.seats[player_id].connected and len(room.seats) == 1
        await c.send_input(1.0, 0.0)
        await c.next_snapshot()


async def test_a_stale_socket_is_replaced_by_a_resume_and_closed_with_1008_functional(
        start_server):
    running = await start_server()
    async with Client(running.ws_url, "twice") as old:
        await old.next_snapshot()
        raw = await RawWebSocket.connect(running.port)
        try:
            raw.send(resume_frame(bytes(old.welcome.resume_token)))
            code, reason = await old.wait_closed(timeout=5)
            assert code == 1008 and "replaced" in reason
            welcome = await raw_welcome(raw)
            assert (welcome.player_id, welcome.entity) == (old.player_id, old.entity)
            # The new socket holds the seat; nothing was duplicated.
            conn = running.gateway.connections[old.player_id]
            assert conn.session.player_id == old.player_id
            assert running.gateway.lobby.player_count == 1
            assert len(running.gateway.connections) == 1
        finally:
            raw.abort()


async def test_a_resume_after_the_grace_period_is_refused_with_1008_functional(start_server):
    running = await start_server(make_params(**{"room.resume_grace_s": 0.5}))
    async with Client(running.ws_url, "late") as c:
        await c.next_snapshot()
        player_id = c.player_id
        abort_client(c)
        await c.wait_closed(timeout=5)
        room = next(iter(running.gateway.lobby.rooms.values()))
        await wait_until(lambda: player_id not in room.seats, timeout=5)
        with pytest.raises(ClientError):
            await c.resume()
        assert c.close_code == 1008
        assert "resume token" in c.close_reason
    assert await running.metric('tickwire_frames_rejected_total{reason="bad_resume"}') == 1


async def test_a_hundred_clients_cut_at_once_all_resume_without_duplicates_functional(
        start_server):
    n = 100
    running = await start_server(make_params(**{"npc.count": 0}))
    clients = [Client(running.ws_url, f"p{i}", reconnect=True, ping_interval_s=0)
               for i in range(n)]
    try:
        await asyncio.gather(*(c.connect() for c in clients))
        before = {c.player_id: c.entity for c in clients}
        rooms_before = {c.welcome.room for c in clients}
        assert len(before) == n and len(running.gateway.connections) == n
        for c in clients:
            abort_client(c)
        await wait_until(lambda: all(c.reconnects >= 1 for c in clients), timeout=30)
        await wait_until(lambda: len(running.gateway.connections) == n, timeout=10)
        after = {c.player_id: c.entity for c in clients}
        assert after == before, "every client got its own player and entity back"
        assert {c.welcome.room for c in clients} == rooms_before
        lobby = running.gateway.lobby
        assert lobby.player_count == n, "no extra seats"
        assert all(s.connected for r in lobby.rooms.values() for s in r.seats.values())
        await asyncio.gather(*(c.next_snapshot(timeout=10) for c in clients))
    finally:
        await asyncio.gather(*(c.close() for c in clients), return_exceptions=True)


# -- the server process going away -------------------------------------------------------------


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
async def test_a_signal_drains_clients_with_1001_and_exits_0_functional(serve, sig):
    shutdown_s = 3.0
    server = await serve("--shutdown-timeout", str(shutdown_s))
    async with Client(server.ws_url, "drained") as c:
        await c.next_snapshot()
        server.send_signal(sig)
        code, reason = await c.wait_closed(timeout=shutdown_s + 5)
        assert code == 1001
        assert reason == "server shutting down"
        assert c.kick is not None and c.kick.code == 1001
        assert await asyncio.to_thread(server.wait, shutdown_s + 5) == 0


async def test_a_killed_server_is_noticed_and_a_restart_on_the_same_port_lets_it_back_functional(
        serve):
    first = await serve()
    c = Client(first.ws_url, "survivor", reconnect=True, max_backoff_s=0.5,
               max_reconnect_attempts=100)
    try:
        await c.connect()
        await c.next_snapshot()
        old_token = bytes(c.welcome.resume_token)
        first.send_signal(signal.SIGKILL)
        await c.wait_closed(timeout=5)  # noticed, no hang
        await wait_until(lambda: c.reconnect_failures >= 2, timeout=10)
        await serve(port=first.port)
        await wait_until(lambda: c.reconnects == 1, timeout=15)
        # The new process knows no seats: the resume was refused and the client joined anew.
        assert bytes(c.welcome.resume_token) != old_token
        await c.next_snapshot(timeout=5)
        assert c.stats.decode_errors == 0
    finally:
        await c.close()


FROZEN_CLIENT = """
import asyncio, sys
from client_demo.client import Client

async def main():
    c = Client(sys.argv[1], "frozen")
    await c.connect()
    print(c.player_id, flush=True)
    await asyncio.sleep(600)

asyncio.run(main())
"""


async def test_a_stopped_client_process_is_closed_within_the_liveness_window_functional(
        serve):
    server = await serve("--ping-timeout", "1")
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-c", FROZEN_CLIENT, server.ws_url, cwd=REPO,
        stdout=asyncio.subprocess.PIPE)
    try:
        player_id = int(await asyncio.wait_for(proc.stdout.readline(), 20))
        os.kill(proc.pid, signal.SIGSTOP)

        async def seat() -> dict:
            rooms = await fetch_json(server.base_url + "/rooms")
            return next(s for r in rooms for s in r["seats"] if s["player_id"] == player_id)

        assert (await seat())["connected"]
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 15
        while (await seat())["connected"]:
            assert loop.time() < deadline, "the frozen client was never closed"
            await asyncio.sleep(0.1)
        health = await fetch_json(server.base_url + "/healthz")
        assert health["connections"] == 0 and health["players"] == 1  # seat kept for resume
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.kill(proc.pid, signal.SIGKILL)
        await asyncio.wait_for(proc.wait(), 10)


# -- TLS -------------------------------------------------------------------------------------


def make_certificate(directory: Path) -> tuple[Path, Path]:
    cert, key = directory / "cert.pem", directory / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=127.0.0.1",
         "-addext", "subjectAltName=IP:127.0.0.1", "-days", "1",
         "-keyout", str(key), "-out", str(cert)],
        check=True, capture_output=True, timeout=60)
    return cert, key


async def test_tls_serves_https_and_wss_and_refuses_plain_http_functional(serve, tmp_path):
    cert, key = make_certificate(tmp_path)
    trust = ssl.create_default_context(cafile=str(cert))
    server = await serve("--tls-cert", str(cert), "--tls-key", str(key), scheme="https",
                         ssl_context=trust)
    health = await fetch_json(server.base_url + "/healthz", ssl_context=trust)
    assert health["status"] == "ok"
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=trust)) as session, \
            Client(server.ws_url, "secure", session=session) as c:
        assert server.ws_url.startswith("wss://")
        for _ in range(3):
            await c.send_input(0.0, 0.0)
            await c.next_snapshot()
        assert c.stats.decode_errors == 0
    # Without trusting the certificate the handshake fails.
    with pytest.raises(aiohttp.ClientConnectorCertificateError):
        await fetch_json(server.base_url + "/healthz", ssl_context=ssl.create_default_context())
    # Plain http to the TLS port gets no HTTP answer.
    with pytest.raises((aiohttp.ClientError, TimeoutError)):
        await fetch_json(f"http://127.0.0.1:{server.port}/healthz")


# -- checks before the upgrade -----------------------------------------------------------------


async def upgrade_status(url: str, *, origin: str | None = None) -> int:
    """101 when the WebSocket opens, else the HTTP status of the refusal."""
    async with aiohttp.ClientSession() as http:
        try:
            ws = await http.ws_connect(url, origin=origin, timeout=aiohttp.ClientWSTimeout(
                ws_close=1.0))
        except aiohttp.WSServerHandshakeError as exc:
            return exc.status
        await ws.close()
        return 101


async def test_origins_not_on_the_list_get_403_before_the_upgrade_functional(start_server):
    running = await start_server(config_overrides={
        "allowed_origins": ("https://game.example",)})
    assert await upgrade_status(running.ws_url, origin="https://evil.example") == 403
    assert await upgrade_status(running.ws_url, origin="https://game.example") == 101
    assert await upgrade_status(running.ws_url) == 101  # not a browser: no Origin
    assert await running.metric('tickwire_handshakes_rejected_total{reason="origin"}') == 1
    # The refused one never got a socket.
    assert await running.metric("tickwire_connections_total") == 2


async def test_by_default_only_the_servers_own_origin_may_connect_functional(start_server):
    running = await start_server()
    assert await upgrade_status(running.ws_url, origin=running.http_url) == 101
    assert await upgrade_status(running.ws_url, origin="http://localhost:1") == 403
    assert await upgrade_status(running.ws_url, origin="null") == 403


async def test_seat_tokens_from_matchmake_are_required_signed_single_use_and_expire_functional(
        start_server):
    ttl_s = 2.0
    tokens_clock = ManualClock(time.time())  # token expiry by a clock the test moves
    running = await start_server(config_overrides={"join_secret": SECRET,
                                                   "join_token_ttl_s": ttl_s},
                                 wall_clock=tokens_clock)
    # Without a token a socket may only Resume a seat: a Join is refused.
    with pytest.raises(ClientError, match="1008"):
        async with Client(running.ws_url, "no-ticket"):
            pass

    async def matchmake() -> dict:
        async with aiohttp.ClientSession() as http, \
                http.post(running.http_url + "/matchmake", json={"mode": "arena"}) as resp:
            assert resp.status == 200
            return await resp.json()

    issued = await matchmake()
    token = issued["token"]
    assert issued["url"] == f"{running.ws_url}?token={token}"
    async with Client(issued["url"], "ticketed") as c:
        await c.next_snapshot()
    tampered = token[:-2] + ("A" if token[-2] != "A" else "B") + token[-1]
    assert await upgrade_status(f"{running.ws_url}?token={tampered}") == 401
    assert await upgrade_status(f"{running.ws_url}?token=not-a-token") == 401
    # Single use: the seat was taken once.
    assert await upgrade_status(f"{running.ws_url}?token={token}") == 401
    second, third = await matchmake(), await matchmake()
    tokens_clock.advance(ttl_s - 0.001)
    assert await upgrade_status(f"{running.ws_url}?token={second['token']}") == 101
    tokens_clock.advance(0.001)  # expired to the millisecond
    assert await upgrade_status(f"{running.ws_url}?token={third['token']}") == 401
    for label in ("token_invalid", "token_malformed", "token_expired", "token_used"):
        assert await running.metric(f'tickwire_handshakes_rejected_total{{reason="{label}"}}') == 1
    assert await running.metric('tickwire_frames_rejected_total{reason="token_missing"}') == 1


async def test_matchmake_without_a_join_secret_is_optional_and_refuses_bad_requests_functional(
        start_server):
    running = await start_server()
    async with aiohttp.ClientSession() as http:
        async with http.post(running.http_url + "/matchmake", json={}) as resp:
            assert resp.status == 200
            issued = await resp.json()
        for body, status, code in (({"mode": "nope"}, 404, "unknown_mode"),
                                   ({"mode": 3}, 400, "bad_request"),
                                   ({"room": "x", "create": True}, 400, "bad_request"),
                                   ({"surprise": 1}, 400, "bad_request")):
            async with http.post(running.http_url + "/matchmake", json=body) as resp:
                assert resp.status == status and (await resp.json())["error"] == code
        async with http.post(running.http_url + "/matchmake", data=b"{") as resp:
            assert resp.status == 400
    async with Client(issued["url"], "matchmade") as a, Client(running.ws_url, "direct") as b:
        await a.next_snapshot()
        await b.next_snapshot()
        # Both land in the one public room: a token is optional without a join secret.
        rooms = await fetch_json(running.http_url + "/rooms")
        assert [(r["room"], r["players"]) for r in rooms] == [(issued["room"], 2)]
    assert await running.metric('tickwire_matchmake_total{result="unknown_mode"}') == 1


async def test_one_address_gets_429_past_its_connection_cap_functional(start_server):
    cap = 3
    running = await start_server(config_overrides={"max_conns_per_ip": cap})
    sockets = [await RawWebSocket.connect(running.port) for _ in range(cap)]
    try:
        with pytest.raises(ConnectionError, match="429"):
            await RawWebSocket.connect(running.port)
        sockets.pop().abort()
        await wait_until(lambda: sum(running.gateway.per_ip.open.values()) == cap - 1)
        sockets.append(await RawWebSocket.connect(running.port))  # a freed slot is reusable
    finally:
        for raw in sockets:
            raw.abort()
    assert await running.metric('tickwire_handshakes_rejected_total{reason="ip_cap"}') == 1


async def test_one_address_gets_429_when_it_opens_sockets_too_fast_functional(start_server):
    # Connect-and-drop in a loop would fill rooms with seats waiting for a resume.
    running = await start_server(config_overrides={"connects_per_ip_per_s": 0.5,
                                                   "connect_burst_per_ip": 2})
    sockets = [await RawWebSocket.connect(running.port) for _ in range(2)]
    for raw in sockets:
        raw.abort()
    with pytest.raises(ConnectionError, match="429"):
        await RawWebSocket.connect(running.port)
    assert await running.metric('tickwire_handshakes_rejected_total{reason="ip_rate"}') == 1


async def test_a_socket_that_never_joins_is_closed_and_frees_its_slot_functional(start_server):
    running = await start_server(join_timeout_s=0.5,
                                 config_overrides={"max_conns_per_ip": 1})
    idle = await RawWebSocket.connect(running.port)
    try:
        code, reason = await idle.read_close(timeout=5)
        assert code == 1008 and "no Join within" in reason
    finally:
        idle.abort()
    await wait_until(lambda: not running.gateway.per_ip.open)
    async with Client(running.ws_url, "next") as c:  # the slot it held is free again
        await c.next_snapshot()
    assert await running.metric('tickwire_frames_rejected_total{reason="join_timeout"}') == 1


# -- backlog versus flood (issue 11 item 2) ------------------------------------------------


async def _play(client: Client, stop: asyncio.Event) -> None:
    """An honest player: one input per tick period until told to stop."""
    while not stop.is_set() and not client.closed.is_set():
        await client.send_input(1.0, 0.0)
        await asyncio.sleep(1 / 30)


async def _metrics_of(base_url: str) -> dict[str, float]:
    from server.metrics import parse_metrics
    async with aiohttp.ClientSession() as http, \
            http.get(base_url + "/metrics", timeout=aiohttp.ClientTimeout(total=5)) as resp:
        return parse_metrics(await resp.text())


async def test_a_4_s_server_pause_keeps_honest_players_and_still_closes_a_flood_functional(
        serve):
    """SIGSTOP the server for 4 s while players send an input per tick: everything they
    sent meanwhile arrives at once. That is a backlog, not a flood: all stay. A client
    flooding at 10x the tick rate across the same pause is still closed with 1008."""
    from tests.wsframes import input_cmd, input_frame, join_frame
    server = await serve()
    stop = asyncio.Event()
    players = [Client(server.ws_url, f"honest{i}") for i in range(3)]
    flooder = await RawWebSocket.connect(server.port)
    flood_task = None
    try:
        for p in players:
            await p.connect()
            await p.next_snapshot()
        tasks = [asyncio.create_task(_play(p, stop)) for p in players]
        flooder.send(join_frame("flooder"))
        flooder_closed: asyncio.Future = asyncio.get_running_loop().create_future()

        async def answer_pings() -> None:  # the flooder is a browser-like peer otherwise
            with contextlib.suppress(Exception):
                while True:
                    opcode, payload = await flooder.read_frame(timeout=30)
                    if opcode == 0x9:
                        flooder.send(payload, opcode=0xA)
                    elif opcode == 0x8:
                        flooder_closed.set_result((struct.unpack("!H", payload[:2])[0],
                                                   payload[2:].decode()))
                        return

        reader = asyncio.create_task(answer_pings())

        async def flood() -> None:
            seq = 0
            for _ in range(30 * 12):  # bounded: at most 12 s
                if flooder.writer.transport.is_closing():
                    return
                for _ in range(10):
                    seq += 1
                    flooder.send(input_frame(input_cmd(seq)))
                await asyncio.sleep(1 / 30)

        await asyncio.sleep(1.0)
        server.send_signal(signal.SIGSTOP)
        try:
            await asyncio.sleep(4.0)  # the pause itself (not a timing assert)
        finally:
            server.send_signal(signal.SIGCONT)
        flood_task = asyncio.create_task(flood())
        for p in players:  # snapshots flow again to every honest player
            for _ in range(30):
                await p.next_snapshot(timeout=10)
        code, reason = await asyncio.wait_for(flooder_closed, 15)
        assert code == 1008 and "too many frames" in reason
        reader.cancel()
        stop.set()
        await asyncio.gather(*tasks)
        for p in players:
            assert not p.closed.is_set(), (p.close_code, p.close_reason)
        flooder.abort()
        key = 'tickwire_disconnects_total{code="1008"}'
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 10
        while (samples := await _metrics_of(server.base_url)).get(key, 0) < 1:
            assert loop.time() < deadline, samples
            await asyncio.sleep(0.1)
        assert samples[key] == 1  # the flooder, nobody else
        assert samples.get('tickwire_frames_rejected_total{reason="flood"}', 0) == 1
    finally:
        stop.set()
        if flood_task is not None:
            flood_task.cancel()
        flooder.abort()
        for p in players:
            await p.close()


async def test_a_4_s_network_stall_on_one_client_is_a_backlog_not_a_flood_functional(
        start_server):
    """One client's network stalls: for 4 s nothing it sends leaves, then it all arrives
    at once (inputs at the tick rate and its pong answers). It stays, and plays on."""
    from tests.integration.test_hostile_clients_functional import assert_alive, join_raw
    from tests.wsframes import OP_PING, OP_PONG, client_frame, input_cmd, input_frame
    running = await start_server(make_params(**{"npc.count": 0}))
    raw, _ = await join_raw(running.port, "stalled")
    held: list[bytes] = []
    try:
        seq = 0
        loop = asyncio.get_running_loop()
        end = loop.time() + 4.0
        while loop.time() < end:  # 4 s of input that the network holds back
            seq += 1
            held.append(client_frame(input_frame(input_cmd(seq))))
            with contextlib.suppress(TimeoutError):
                opcode, payload = await raw.read_frame(timeout=1 / 30)
                if opcode == OP_PING:
                    held.append(client_frame(payload, OP_PONG))
        assert seq > 60
        raw.writer.write(b"".join(held))  # the stall ends: everything at once
        await assert_alive(raw)
        assert await running.metric('tickwire_frames_rejected_total{reason="rate_limited"}') == 0
        assert len(running.gateway.connections) == 1
    finally:
        raw.abort()


# -- what the server sent is what is counted (issue 11 item 6) -----------------------------


async def test_disconnect_codes_are_bounded_labels_and_our_own_closes_are_counted_functional(
        start_server):
    from tests.wsframes import OP_CLOSE, client_frame, input_cmd, input_frame, join_frame
    running = await start_server(make_params(**{"npc.count": 0}))
    for code in (3000, 3999, 4000, 4321, 4999):  # client-chosen codes: one label
        raw = await RawWebSocket.connect(running.port)
        raw.writer.write(client_frame(join_frame(f"c{code}")))
        await raw_welcome(raw)
        raw.writer.write(client_frame(struct.pack("!H", code), OP_CLOSE))
        await raw.read_close()
        raw.abort()
    unmasked = await RawWebSocket.connect(running.port)  # a close the server itself sends
    unmasked.writer.write(client_frame(input_frame(input_cmd(1)), masked=False))
    assert (await unmasked.read_close())[0] == 1002
    unmasked.abort()
    await wait_until(lambda: not running.gateway.sockets)
    samples = await running.metrics()
    disconnects = {k: v for k, v in samples.items()
                   if k.startswith("tickwire_disconnects_total")}
    assert disconnects == {'tickwire_disconnects_total{code="application"}': 5.0,
                           'tickwire_disconnects_total{code="1002"}': 1.0}, disconnects


# -- leave (ClientFrame.leave) -----------------------------------------------------------------


async def test_leave_frees_the_seat_at_once_and_closes_with_1000_left_functional(start_server):
    from tests.wsframes import client_frame, encode
    running = await start_server(make_params(**{"npc.count": 0}))
    raw = await RawWebSocket.connect(running.port)
    try:
        raw.writer.write(client_frame(encode(join=pb.Join(protocol_version=PROTOCOL_VERSION,
                                                          name="leaver"))))
        welcome = await raw_welcome(raw)
        room = next(iter(running.gateway.lobby.rooms.values()))
        assert welcome.player_id in room.seats
        raw.writer.write(client_frame(encode(leave=pb.Leave())))
        assert await raw.read_close() == (1000, "left")
        assert welcome.player_id not in room.seats  # no resume grace
        await wait_until(lambda: not running.gateway.connections)
        assert await running.metric('tickwire_disconnects_total{code="1000"}') == 1
    finally:
        raw.abort()
