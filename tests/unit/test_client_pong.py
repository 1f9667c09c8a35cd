"""The Python client's round trip from a Pong: the time the Ping waited in the server to
be read at its tick (`Pong.held`) is not network time and is taken out."""

from __future__ import annotations

import time

from client_demo.client import Client
from proto import tickwire_pb2 as pb


def _pong(client_time: float, held: float) -> bytes:
    return pb.ServerFrame(pong=pb.Pong(client_time=client_time, server_time=1.0,
                                       held=held)).SerializeToString()


def test_the_client_round_trip_leaves_out_the_servers_hold():
    client = Client("ws://127.0.0.1:9/ws", "p")
    client._on_frame(_pong(time.monotonic() - 0.5, 0.45))  # sent 0.5 s ago, 0.45 s held
    rtt = client.stats.client_rtt_ms[-1]
    assert 50.0 <= rtt < 400.0  # 500 ms if the hold were counted
    assert client.client_rtt_ms == rtt


def test_a_pong_without_a_hold_is_the_whole_round_trip():
    client = Client("ws://127.0.0.1:9/ws", "p")
    client._on_frame(_pong(time.monotonic() - 0.5, 0.0))
    assert client.stats.client_rtt_ms[-1] >= 500.0


class _RecordingSocket:
    """Stands in for the WebSocket under the client: records what it is asked to send."""

    closed = False

    def __init__(self) -> None:
        self.sent: list[pb.ClientFrame] = []

    async def send_bytes(self, data: bytes) -> None:
        self.sent.append(pb.ClientFrame.FromString(data))


async def test_a_due_ping_goes_right_after_the_next_input_and_only_once():
    client = Client("ws://127.0.0.1:9/ws", "p")
    client.ws = _RecordingSocket()
    await client.send_input(1.0, 0.0)
    assert [f.WhichOneof("kind") for f in client.ws.sent] == ["input"]
    client._ping_due = True  # what the ping loop sets every ping_interval_s
    await client.send_input(1.0, 0.0)
    await client.send_input(1.0, 0.0)
    kinds = [f.WhichOneof("kind") for f in client.ws.sent]
    assert kinds == ["input", "input", "ping", "input"]
    assert not client._ping_due
