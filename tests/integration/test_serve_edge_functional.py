"""`tickwire serve` as an operator runs it (a real subprocess on 127.0.0.1): connections
that never send a request, the drain order, start-up errors, logs."""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import shutil
import signal
import socket
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest

from client_demo.client import Client
from server.metrics import parse_metrics
from server.nodeproc import TICKWIRE, ServerProcess, free_port

pytestmark = pytest.mark.timeout(90)


@pytest.fixture
async def serve_with(tmp_path: Path) -> AsyncIterator:
    """Start `tickwire serve` subprocesses with an argv prefix (None: the `tickwire`
    script); every one is stopped by pid at the end."""
    started: list[ServerProcess] = []

    async def start(command: list[str] | None, *args: str) -> ServerProcess:
        proc = ServerProcess(port=free_port(), log_path=tmp_path / f"serve-{len(started)}.log",
                             extra_args=list(args), command=command)
        started.append(proc)
        return await asyncio.to_thread(proc.start)

    yield start
    for proc in started:
        await asyncio.to_thread(proc.stop, signal.SIGKILL if proc.running else signal.SIGTERM)


@pytest.fixture
def serve(serve_with):
    """`await serve(*args)`: the plain `tickwire serve` with these flags."""
    return lambda *args: serve_with(None, *args)


async def open_from(port: int, source_ip: str = "127.0.0.1"
                    ) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """A TCP connection to the server from `source_ip` (any 127.x address is local)."""
    return await asyncio.wait_for(asyncio.open_connection(
        "127.0.0.1", port, local_addr=(source_ip, 0)), 5)


async def closed_by_server(reader: asyncio.StreamReader, timeout: float) -> bytes:
    """Everything the server sent before closing; fails if it stays open past `timeout`."""
    data = b""
    with contextlib.suppress(ConnectionResetError):
        async with asyncio.timeout(timeout):
            while chunk := await reader.read(4096):
                data += chunk
    return data


async def get(url: str, source_ip: str = "127.0.0.1") -> tuple[int, bytes]:
    connector = aiohttp.TCPConnector(local_addr=(source_ip, 0))
    async with aiohttp.ClientSession(connector=connector) as http, \
            http.get(url, timeout=aiohttp.ClientTimeout(total=5)) as resp:
        return resp.status, await resp.read()


async def served_eventually(url: str, source_ip: str = "127.0.0.1") -> None:
    """A bounded wait for the server to see closed connections: until a GET gets 200."""
    async with asyncio.timeout(10):
        while True:
            with contextlib.suppress(aiohttp.ClientError):
                if (await get(url, source_ip))[0] == 200:
                    return
            await asyncio.sleep(0.05)


async def log_line(server: ServerProcess, pattern: str) -> None:
    """A bounded wait for a line matching `pattern` in the server's log (the summary lines
    are written by a sweep that runs every quarter second)."""
    async with asyncio.timeout(10):
        while not re.search(pattern, server.log_path.read_text()):
            await asyncio.sleep(0.05)


async def metrics(server: ServerProcess, source_ip: str = "127.0.0.1") -> dict[str, float]:
    status, body = await get(server.base_url + "/metrics", source_ip)
    assert status == 200
    return parse_metrics(body.decode())


async def test_silent_and_trickling_connections_are_closed_after_the_head_deadline_functional(
        serve):
    server = await serve("--request-head-timeout", "0.5")
    silent = [await open_from(server.port) for _ in range(3)]
    trickle_r, trickle_w = await open_from(server.port)
    trickle_w.write(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")

    async def trickle() -> None:
        # One header byte every 50 ms: never a complete head (bounded: 200 bytes).
        with contextlib.suppress(ConnectionError):
            for _ in range(200):
                trickle_w.write(b"X")
                await trickle_w.drain()
                await asyncio.sleep(0.05)

    trickler = asyncio.create_task(trickle())
    try:
        # A normal client is served meanwhile.
        status, body = await get(server.base_url + "/healthz")
        assert status == 200 and json.loads(body)["status"] == "ok"
        for reader, _ in silent:
            assert (await closed_by_server(reader, 10)).startswith(b"HTTP/1.1 408")
        assert (await closed_by_server(trickle_r, 10)).startswith(b"HTTP/1.1 408")
    finally:
        trickler.cancel()
        for _, writer in [*silent, (trickle_r, trickle_w)]:
            writer.close()
    m = await metrics(server)
    assert m['tickwire_http_connections_dropped_total{reason="head_timeout"}'] == 4
    assert m["tickwire_http_pending_connections"] == 0
    await log_line(server, r"closed \d+ connections that sent no complete request head "
                           r"within 0.5 s")
    assert "Traceback" not in server.log_path.read_text()


async def test_the_pending_caps_refuse_the_excess_and_others_are_still_served_functional(
        serve):
    server = await serve("--request-head-timeout", "30", "--max-pending-per-ip", "3")
    held = [await open_from(server.port, "127.0.0.1") for _ in range(3)]
    try:
        reader, writer = await open_from(server.port, "127.0.0.1")
        assert (await closed_by_server(reader, 5)).startswith(b"HTTP/1.1 503")
        writer.close()
        # Another address is not affected, for plain HTTP and for a game socket.
        status, _ = await get(server.base_url + "/healthz", "127.0.0.2")
        assert status == 200
        m = await metrics(server, "127.0.0.2")
        assert m['tickwire_http_connections_dropped_total{reason="pending_ip_cap"}'] == 1
        assert m["tickwire_http_pending_connections"] == 3
    finally:
        for _, w in held:
            w.close()
    # Their slots are free again once they are gone.
    await served_eventually(server.base_url + "/healthz", "127.0.0.1")

    capped = await serve("--request-head-timeout", "30", "--max-pending-connections", "4",
                         "--max-pending-per-ip", "0")
    held = [await open_from(capped.port, f"127.0.0.{i + 1}") for i in range(4)]
    try:
        reader, writer = await open_from(capped.port, "127.0.0.9")
        assert (await closed_by_server(reader, 5)).startswith(b"HTTP/1.1 503")
        writer.close()
    finally:
        for _, w in held:
            w.close()
    await served_eventually(capped.base_url + "/healthz")
    m = await metrics(capped)
    # (the polling above may itself have been refused once or twice before the closes)
    assert m['tickwire_http_connections_dropped_total{reason="pending_cap"}'] >= 1
    await log_line(capped, r"refused \d+ connections: too many waiting for a request head")


async def test_healthz_answers_503_draining_until_the_listener_closes_functional(serve):
    server = await serve("--drain-grace", "4")
    async with Client(server.ws_url, "stayer") as player:
        await player.next_snapshot()
        server.send_signal(signal.SIGTERM)
        seen = []
        async with asyncio.timeout(20):
            while True:
                try:
                    status, body = await get(server.base_url + "/healthz")
                except (aiohttp.ClientError, OSError):
                    seen.append("refused")
                    break
                seen.append((status, json.loads(body)["status"]))
                if seen.count((503, "draining")) == 1:
                    # Early in the grace the player still plays and newcomers are refused.
                    await player.next_snapshot()
                    assert await upgrade_status(server.ws_url) == 503
                await asyncio.sleep(0.05)
        # The drain then closed the player with 1001.
        code, _ = await player.wait_closed(timeout=10)
        assert code == 1001
    assert (503, "draining") in seen, seen
    # Once 503 is seen it never goes back to 200: after it, only the refused listener.
    first = seen.index((503, "draining"))
    assert all(s in ((503, "draining"), "refused") for s in seen[first:]), seen
    assert seen[-1] == "refused"
    assert await asyncio.to_thread(server.wait, 15) == 0
    log = server.log_path.read_text()
    assert "drain started signal=SIGTERM grace_s=4.0" in log and "drain finished" in log
    assert re.search(r"disconnected by server: 1001 .*code=1001 ", log), log
    assert log.index("drain started") < log.index("drain finished")


async def upgrade_status(url: str) -> int:
    async with aiohttp.ClientSession() as http:
        try:
            ws = await http.ws_connect(url)
        except aiohttp.WSServerHandshakeError as exc:
            return exc.status
        await ws.close()
        return 101


def run_cli(*args: str, timeout: float = 30) -> subprocess.CompletedProcess:
    return subprocess.run([str(TICKWIRE), *args], capture_output=True, text=True,
                          timeout=timeout)


def test_a_port_in_use_is_one_line_and_exit_2_functional():
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        done = run_cli("serve", "--port", str(port), "--plain-logs")
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert lines == [f"tickwire serve: cannot listen on 127.0.0.1:{port}: "
                     "address already in use"], done.stderr
    assert "serving" not in done.stdout + done.stderr


@pytest.mark.parametrize("kind", ["regular_file", "under_a_file"])
def test_an_unusable_record_directory_is_one_line_and_exit_2_functional(tmp_path, kind):
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("x")
    target = blocker if kind == "regular_file" else blocker / "rec"
    done = run_cli("serve", "--port", str(free_port()), "--record", str(target))
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("tickwire serve: ") and \
        "recording directory" in lines[0], done.stderr


def test_bad_log_level_is_refused_by_argparse_and_version_is_printed_functional():
    done = run_cli("serve", "--log-level", "verbose")
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert "invalid choice: 'verbose'" in done.stderr.splitlines()[-1]
    version = run_cli("--version")
    assert version.returncode == 0 and version.stdout.startswith("tickwire ")
    help_text = run_cli("serve", "--help").stdout
    assert "{debug,info,warning,error}" in help_text


def test_the_package_runs_with_python_dash_m_too_functional():
    done = subprocess.run([sys.executable, "-m", "server.cli", "--version"],
                          capture_output=True, text=True, timeout=30)
    assert done.returncode == 0 and done.stdout.strip().startswith("tickwire ")


PRLIMIT = shutil.which("prlimit")


@pytest.mark.skipif(PRLIMIT is None, reason="prlimit (util-linux) is not installed")
async def test_under_a_256_fd_limit_400_silent_connections_do_not_lock_others_out_functional(
        serve_with):
    # The probe's case: 400 silent connections against a process limited to 256 files.
    server = await serve_with([PRLIMIT, "--nofile=256:256", str(TICKWIRE)])
    silent = []
    try:
        for _ in range(400):
            with contextlib.suppress(OSError, TimeoutError):
                silent.append(await open_from(server.port, "127.0.0.1"))
        # Another address is still served, for plain HTTP and for a game socket.
        status, _ = await get(server.base_url + "/healthz", "127.0.0.2")
        assert status == 200
        m = await metrics(server, "127.0.0.2")
        assert m["process_max_fds"] == 256
        # the default caps for 256 files: 64 pending in all, 16 per address
        assert m["tickwire_http_pending_connections"] == 16
        assert m['tickwire_http_connections_dropped_total{reason="pending_ip_cap"}'] >= 300
    finally:
        for _, writer in silent:
            writer.close()


@pytest.mark.skipif(PRLIMIT is None, reason="prlimit (util-linux) is not installed")
async def test_nearing_the_fd_limit_is_logged_once_and_counted_functional(serve_with):
    server = await serve_with([PRLIMIT, "--nofile=64:64", str(TICKWIRE)],
                              "--max-pending-connections", "0", "--max-pending-per-ip", "0")
    held = []
    try:
        for _ in range(60):
            with contextlib.suppress(OSError, TimeoutError):
                held.append(await open_from(server.port))
        await log_line(server, r"open file descriptors near the limit: \d+ of 64")
    finally:
        for _, writer in held:
            writer.close()
    await served_eventually(server.base_url + "/healthz")
    m = await metrics(server)
    assert m["tickwire_fd_near_limit_total"] == 1
    await log_line(server, r"open file descriptors back below 44 of 64")
