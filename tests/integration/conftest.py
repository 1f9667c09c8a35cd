"""A real Tickwire gateway on 127.0.0.1 for each test, and raw WebSocket helpers."""

from __future__ import annotations

import asyncio
import base64
import os
import socket
import struct
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass

import aiohttp
import pytest
from aiohttp.test_utils import TestServer

from server.clock import Clock
from server.gateway import GATEWAY_KEY, Gateway, GatewayConfig, build_app
from server.metrics import parse_metrics
from server.session import SessionLimits
from sim.params import Params, load_params


def make_params(**changes: object) -> Params:
    """Default parameters with dotted-key changes, e.g. make_params(**{"npc.count": 0})."""
    return load_params().with_changes(changes)


@dataclass
class Running:
    server: TestServer
    gateway: Gateway

    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.server.port}/ws"

    @property
    def http_url(self) -> str:
        return f"http://127.0.0.1:{self.server.port}"

    @property
    def port(self) -> int:
        return self.server.port

    async def metrics(self) -> dict[str, float]:
        """The server's /metrics, parsed into {sample: value}."""
        async with aiohttp.ClientSession() as http, \
                http.get(self.http_url + "/metrics") as resp:
            return parse_metrics(await resp.text())

    async def metric(self, name: str) -> float:
        """One /metrics sample (0 when it has not been recorded yet)."""
        return (await self.metrics()).get(name, 0.0)


StartServer = Callable[..., Awaitable[Running]]


@pytest.fixture
async def start_server() -> AsyncIterator[StartServer]:
    """Start a gateway: `await start_server(params=..., config_overrides={...},
    **SessionLimits overrides)`."""
    servers: list[TestServer] = []

    async def start(params: Params | None = None, *,
                    config_overrides: dict[str, object] | None = None,
                    wall_clock: Clock | None = None, **limits: float) -> Running:
        """`config_overrides`: other GatewayConfig fields, e.g. {"join_secret": b"..."};
        `wall_clock`: the clock join tokens expire by (a ManualClock: no sleeping)."""
        params = params or make_params()
        config = GatewayConfig(params=params,
                               limits=SessionLimits.for_tick_rate(params.tick_rate, **limits),
                               **(config_overrides or {}))
        app = build_app(config, wall_clock=wall_clock)
        server = TestServer(app, host="127.0.0.1", port=0)
        await server.start_server()
        servers.append(server)
        return Running(server=server, gateway=app[GATEWAY_KEY])

    yield start
    for server in servers:
        await server.close()


async def wait_until(predicate: Callable[[], bool], timeout: float = 5.0,
                     interval: float = 0.02) -> None:
    """Poll a condition with a bounded wait (integration tests only)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not predicate():
        if loop.time() > deadline:
            raise AssertionError(f"condition not met within {timeout} s")
        await asyncio.sleep(interval)


class RawWebSocket:
    """A bare-bones WebSocket client over a plain socket, for what aiohttp won't do:
    stop reading entirely, send fragments that never finish, shrink the receive buffer."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer

    @classmethod
    async def connect(cls, port: int, *, rcvbuf: int | None = None,
                      origin: str | None = None) -> RawWebSocket:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        if rcvbuf is not None:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        sock.setblocking(False)
        await asyncio.get_running_loop().sock_connect(sock, ("127.0.0.1", port))
        reader, writer = await asyncio.open_connection(sock=sock, limit=2**20)
        key = base64.b64encode(os.urandom(16)).decode()
        lines = [
            "GET /ws HTTP/1.1", f"Host: 127.0.0.1:{port}", "Upgrade: websocket",
            "Connection: Upgrade", f"Sec-WebSocket-Key: {key}", "Sec-WebSocket-Version: 13",
        ]
        if origin:
            lines.append(f"Origin: {origin}")
        writer.write(("\r\n".join(lines) + "\r\n\r\n").encode())
        await writer.drain()
        status = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
        if not status.startswith(b"HTTP/1.1 101"):
            raise ConnectionError(status.decode(errors="replace"))
        return cls(reader, writer)

    def send(self, payload: bytes, *, opcode: int = 0x2, fin: bool = True) -> None:
        mask = os.urandom(4)
        n = len(payload)
        first = (0x80 if fin else 0) | opcode
        if n < 126:
            header = struct.pack("!BB", first, 0x80 | n)
        elif n < 65536:
            header = struct.pack("!BBH", first, 0x80 | 126, n)
        else:
            header = struct.pack("!BBQ", first, 0x80 | 127, n)
        masked = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
        self.writer.write(header + mask + masked)

    async def read_frame(self, timeout: float = 5.0) -> tuple[int, bytes]:
        async def read() -> tuple[int, bytes]:
            head = await self.reader.readexactly(2)
            n = head[1] & 0x7F
            if n == 126:
                (n,) = struct.unpack("!H", await self.reader.readexactly(2))
            elif n == 127:
                (n,) = struct.unpack("!Q", await self.reader.readexactly(8))
            return head[0] & 0x0F, await self.reader.readexactly(n)

        return await asyncio.wait_for(read(), timeout)

    async def read_close(self, timeout: float = 5.0) -> tuple[int, str]:
        """Skip frames until the server's close frame; return (code, reason)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            opcode, payload = await self.read_frame(max(0.01, deadline - loop.time()))
            if opcode == 0x8:
                code = struct.unpack("!H", payload[:2])[0] if len(payload) >= 2 else 1005
                return code, payload[2:].decode(errors="replace")

    def stop_reading(self) -> None:
        """Stop taking bytes off the socket, as a stalled or frozen client would."""
        self.writer.transport.pause_reading()

    def abort(self) -> None:
        self.writer.transport.abort()
