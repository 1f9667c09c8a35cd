"""Server CPU per input frame with a lean load generator, two source trees side by side.

    python -m bench.receive_cpu --tree NEW_TREE [--tree OLD_TREE ...] [--clients 200]
                                [--seconds 8] [--rounds 2]

Theory of operation
-------------------
`bench.arena` drives the server with full Python clients, which on a small shared
machine measure the bots as much as the server. Here one asyncio process holds M raw
WebSocket connections that do only what the arena's clients do on the wire: Join, then
one masked Input per tick (the ack is the newest snapshot tick seen) and
a Pong for every server Ping. Each tree runs twice per round: one input per tick, then
three (the budget allows four); the difference in server CPU over the difference in
frames is the marginal cost of one input frame, with the tick's own work cancelled out.
Server frames are split by their headers; only binary frames are parsed, to read the
snapshot tick for the ack.

Each `--tree` is a source checkout; its server runs as `python -m server.cli serve` with
that directory first on the path, so trees can be compared in one sitting (rounds are
interleaved: A, B, A, B). The server's CPU (utime + stime from /proc) over the window,
divided by the input frames the clients wrote in it, is the figure; snapshots received
per client per second says whether the load was really applied. Results are data.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import math
import os
import socket
import struct
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from proto import PROTOCOL_VERSION
from proto import tickwire_pb2 as pb

ROOT = Path(__file__).resolve().parents[1]
ARENA = ROOT / "bench" / "scenarios" / "arena.toml"
CLK_TCK = os.sysconf("SC_CLK_TCK")
MASK = b"\x11\x22\x33\x44"


def masked(payload: bytes, opcode: int = 0x2) -> bytes:
    n = len(payload)
    header = struct.pack("!BB", 0x80 | opcode, 0x80 | n) if n < 126 else \
        struct.pack("!BBH", 0x80 | opcode, 0x80 | 126, n)
    key = (MASK * (n // 4 + 1))[:n]
    body = (int.from_bytes(payload, "big") ^ int.from_bytes(key, "big")).to_bytes(n, "big") \
        if n else b""
    return header + MASK + body


def input_frame(seq: int, ack: int) -> bytes:
    angle = (seq // 60) * 1.7
    return masked(pb.ClientFrame(input=pb.Input(ack_tick=ack, cmds=[pb.InputCmd(
        seq=seq, client_tick=seq, move_x=math.cos(angle), move_y=math.sin(angle),
        aim=angle % math.pi)])).SerializeToString())


class Player(asyncio.Protocol):
    """One raw client: reads server frames, acks snapshots, answers pings."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.buf = b""
        self.upgraded = asyncio.get_running_loop().create_future()
        self.ack = 0
        self.snapshots = 0
        self.seq = 0
        self.closed = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def connection_lost(self, exc: BaseException | None) -> None:
        self.closed = True

    def data_received(self, data: bytes) -> None:
        buf = self.buf + data
        if not self.upgraded.done():
            end = buf.find(b"\r\n\r\n")
            if end < 0:
                self.buf = buf
                return
            self.upgraded.set_result(buf[:12] == b"HTTP/1.1 101")
            buf = buf[end + 4:]
        pos = 0
        while len(buf) - pos >= 2:
            opcode, n, head = buf[pos] & 0x0F, buf[pos + 1] & 0x7F, 2
            if n == 126:
                if len(buf) - pos < 4:
                    break
                n, head = struct.unpack_from("!H", buf, pos + 2)[0], 4
            elif n == 127:
                if len(buf) - pos < 10:
                    break
                n, head = struct.unpack_from("!Q", buf, pos + 2)[0], 10
            if len(buf) - pos < head + n:
                break
            payload = buf[pos + head:pos + head + n]
            pos += head + n
            if opcode == 0x9:
                self.transport.write(masked(payload, 0xA))
            elif opcode == 0x2:
                frame = pb.ServerFrame.FromString(payload)
                if frame.HasField("snapshot"):
                    self.snapshots += 1
                    self.ack = max(self.ack, frame.snapshot.tick)
        self.buf = buf[pos:]

    def send_input(self) -> None:
        self.seq += 1
        self.transport.write(input_frame(self.seq, self.ack))


async def connect(port: int, name: str) -> Player:
    loop = asyncio.get_running_loop()
    _, player = await loop.create_connection(Player, "127.0.0.1", port)
    key = base64.b64encode(os.urandom(16)).decode()
    player.transport.write((
        f"GET /ws HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\n"
        f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
        "Sec-WebSocket-Version: 13\r\n\r\n").encode())
    if not await asyncio.wait_for(player.upgraded, 10):
        raise RuntimeError("upgrade refused")
    player.transport.write(masked(pb.ClientFrame(join=pb.Join(
        protocol_version=PROTOCOL_VERSION, name=name)).SerializeToString()))
    return player


def cpu_s(pid: int) -> float:
    with open(f"/proc/{pid}/stat", encoding="ascii") as fh:
        rest = fh.read().rsplit(")", 1)[1].split()
    return (int(rest[11]) + int(rest[12])) / CLK_TCK


async def drive(port: int, pid: int, clients: int, seconds: float, per_tick: int
                ) -> dict[str, float]:
    players = []
    for i in range(clients):  # bounded: M connections, one at a time
        players.append(await connect(port, f"b{i}"))
    loop = asyncio.get_running_loop()
    period = 1 / 30
    warm_until = loop.time() + 3.0
    start_cpu = start_t = None
    frames = snaps0 = 0
    next_t = loop.time()
    end = warm_until + seconds
    while loop.time() < end:
        if start_cpu is None and loop.time() >= warm_until:
            start_cpu, start_t = cpu_s(pid), loop.time()
            snaps0 = sum(p.snapshots for p in players)
        for _ in range(per_tick):
            for p in players:
                if not p.closed:
                    p.send_input()
        if start_cpu is not None:
            frames += len(players) * per_tick
        next_t += period
        await asyncio.sleep(max(0.0, next_t - loop.time()))
    used, wall = cpu_s(pid) - start_cpu, loop.time() - start_t
    snaps = sum(p.snapshots for p in players) - snaps0
    for p in players:
        p.transport.abort()
    return {"per_tick": per_tick, "frames_per_s": round(frames / wall),
            "server_cpu_s_per_s": used / wall,
            "server_cores": round(used / wall, 4),
            "server_us_per_input_frame": round(used / frames * 1e6, 2),
            "snapshots_per_client_s": round(snaps / clients / wall, 2),
            "closed": sum(p.closed for p in players)}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run_tree(tree: Path, clients: int, seconds: float, per_tick: int) -> dict[str, float]:
    port = free_port()
    env = dict(os.environ, PYTHONPATH=str(tree))
    proc = subprocess.Popen(
        [sys.executable, "-m", "server.cli", "serve", "--port", str(port), "--params",
         str(ARENA), "--max-conns-per-ip", "0", "--plain-logs"],
        cwd=tree, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=1).read()
                break
            except OSError:
                if time.monotonic() > deadline or proc.poll() is not None:
                    raise RuntimeError(f"server from {tree} did not start") from None
                time.sleep(0.1)
        return asyncio.run(drive(port, proc.pid, clients, seconds, per_tick))
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--tree", action="append", type=Path, required=True)
    p.add_argument("--clients", type=int, default=200)
    p.add_argument("--seconds", type=float, default=8.0)
    p.add_argument("--rounds", type=int, default=2)
    args = p.parse_args()
    results: dict[str, list[dict[str, float]]] = {str(t): [] for t in args.tree}
    for _ in range(args.rounds):
        for tree in args.tree:
            pair = [run_tree(tree.resolve(), args.clients, args.seconds, n) for n in (1, 3)]
            # The marginal cost of an input frame: the extra server CPU for the extra
            # frames when every client sends 3 inputs per tick instead of 1 (the tick's own
            # work, the same in both runs, cancels out).
            extra_cpu = pair[1]["server_cpu_s_per_s"] - pair[0]["server_cpu_s_per_s"]
            extra_frames = pair[1]["frames_per_s"] - pair[0]["frames_per_s"]
            entry = {"one_per_tick": pair[0], "three_per_tick": pair[1],
                     "marginal_us_per_input_frame": round(extra_cpu / extra_frames * 1e6, 2)}
            results[str(tree)].append(entry)
            print(tree, json.dumps(entry), flush=True)
    print(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
