"""An asyncio Tickwire client on aiohttp: join, send inputs, decode snapshots, measure.

`Mirror` is the sans-I/O part: it decodes each snapshot against the baseline it names and
keeps the recent decoded states, so it always knows what to acknowledge. `Client` is the
socket loop around it, used by the bots, the tests and anyone scripting a player.

The client answers the server's WebSocket pings by itself (aiohttp's autoping), which is
how the server measures this client's RTT; it also measures its own RTT with protobuf
Ping/Pong, which carries the client's clock.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from collections import OrderedDict, deque
from dataclasses import dataclass, field

import aiohttp
import numpy as np

from client_demo.matchmake import MatchmakeError, matchmake, without_token
from proto import PROTOCOL_VERSION, codec
from proto import tickwire_pb2 as pb
from proto.chunks import ChunkMirror

REDUNDANT_INPUTS = 3  # unacknowledged commands resent with each input
MAX_STAT_SAMPLES = 200_000
PING_WAIT_S = 0.1  # how long a due Ping waits for an input to follow


class ClientError(Exception):
    """The connection could not be set up, or closed before it was."""


@dataclass
class ClientStats:
    """What one client saw. Times are seconds on this process's monotonic clock."""

    snapshots: int = 0
    keyframes: int = 0
    bytes_in: int = 0  # WebSocket payload bytes received
    frames_in: int = 0
    frames_out: int = 0
    bytes_out: int = 0
    decode_errors: int = 0
    snapshot_times: list[float] = field(default_factory=list)
    snapshot_ticks: list[int] = field(default_factory=list)
    server_rtt_ms: list[float] = field(default_factory=list)  # as the server measures it
    client_rtt_ms: list[float] = field(default_factory=list)  # from our Ping/Pong
    snapshot_bytes: list[int] = field(default_factory=list)

    def record(self, samples: list, value: float) -> None:
        if len(samples) < MAX_STAT_SAMPLES:
            samples.append(value)


class Mirror:
    """The client's copy of the world: decoded snapshots by tick, and what to ack.

    `history` decoded states are kept (the server encodes against any tick we acked
    within its own ring, so keep at least as many as it does: 2 x tick rate).

    `configure(welcome)` takes the session's position scale and, when the room uses
    interest management, switches to chunked snapshots (``proto.chunks.ChunkMirror``):
    `state` is then the client's view (each record as of the tick it last came in) and
    `states` stays empty.
    """

    def __init__(self, history: int = 256) -> None:
        self.history = history
        self.states: OrderedDict[int, np.ndarray] = OrderedDict()
        self.tick = 0
        self.state = codec.empty_state()
        self.ack_tick = 0
        self.pos_scale = codec.POS_SCALE
        self.chunked: ChunkMirror | None = None

    def configure(self, welcome: pb.Welcome) -> None:
        self.pos_scale = welcome.pos_scale or codec.POS_SCALE
        self.history = max(64, 4 * welcome.tick_rate)
        if welcome.HasField("interest"):
            self.chunked = ChunkMirror(welcome.tick_rate, self.pos_scale, keep=self.history)
        else:
            self.chunked = None

    def apply(self, snapshot: pb.Snapshot) -> np.ndarray:
        """Decode one snapshot; raises codec.CodecError (and then acks 0 for a keyframe)."""
        if self.chunked is not None:
            return self._apply_chunked(snapshot)
        baseline = None
        if snapshot.baseline_tick:
            baseline = self.states.get(snapshot.baseline_tick)
            if baseline is None:
                self.ack_tick = 0
                raise codec.CodecError(f"baseline {snapshot.baseline_tick} is not kept")
        try:
            state = codec.decode(snapshot.payload, baseline, pos_scale=self.pos_scale)
        except codec.CodecError:
            self.ack_tick = 0
            raise
        self.states[snapshot.tick] = state
        while len(self.states) > self.history:
            self.states.popitem(last=False)
        self.tick = snapshot.tick
        self.state = state
        self.ack_tick = snapshot.tick
        return state

    def _apply_chunked(self, snapshot: pb.Snapshot) -> np.ndarray:
        mirror = self.chunked
        assert mirror is not None
        if not mirror.apply(snapshot.tick, list(snapshot.chunks), snapshot.personal):
            self.ack_tick = 0  # waiting for the server's reset
            raise codec.CodecError("waiting for a reset snapshot")
        self.ack_tick = mirror.ack_tick
        self.tick = snapshot.tick
        self.state = mirror.state()
        return self.state

    def reset(self) -> None:
        self.states.clear()
        self.ack_tick = 0
        if self.chunked is not None:
            self.chunked.clear()
            self.chunked.waiting_reset = True

    def position(self, slot: int) -> tuple[float, float] | None:
        """World-unit position of a slot in the newest state, None if empty."""
        if slot >= len(self.state) or self.state["kind"][slot] == 0:
            return None
        row = self.state[slot]
        return float(row["x"]) / self.pos_scale, float(row["y"]) / self.pos_scale


class Client:
    """One player over one WebSocket. Use `async with Client(url, name) as c:`."""

    def __init__(self, url: str, name: str = "bot", *, session: aiohttp.ClientSession | None
                 = None, connect_timeout_s: float = 10.0, ping_interval_s: float = 1.0,
                 reconnect: bool = False, max_reconnect_attempts: int = 20,
                 max_backoff_s: float = 8.0, autoping: bool = True,
                 matchmake: str | None = None, mode: str | None = None) -> None:
        """`reconnect`: after an unexpected close, reconnect on our own with exponential
        backoff and jitter, resuming the same player (a fresh Join if the server refuses
        the resume), at most `max_reconnect_attempts` times in a row.

        `matchmake`: http(s)://HOST:PORT of any node; each Join first asks it for a seat
        (of `mode`) and connects where it says, and a resume that fails (the node is
        gone, or the seat) goes back to matchmaking. `url` is then unused."""
        self.url = url
        self.matchmake_base = matchmake
        self.mode = mode
        self.matchmade: dict | None = None  # the last /matchmake answer
        # With autoping off, the server's WebSocket pings reach `_on_ping` (a subclass that
        # delays traffic must delay the pong too, or the server's RTT would not see it).
        self.autoping = autoping
        self.reconnect = reconnect
        self.max_reconnect_attempts = max_reconnect_attempts
        self.max_backoff_s = max_backoff_s
        self.reconnects = 0  # successful reconnections
        self.reconnect_failures = 0
        self._user_closed = False
        self._reconnector: asyncio.Task | None = None
        self.name = name
        self.connect_timeout_s = connect_timeout_s
        self.ping_interval_s = ping_interval_s
        self._ping_due = False  # the ping loop asks; the next input carries it out
        self._own_session = session is None
        self._session = session
        self.ws: aiohttp.ClientWebSocketResponse | None = None
        self.mirror = Mirror()
        self.stats = ClientStats()
        self.welcome: pb.Welcome | None = None
        self.roster: list[pb.PlayerInfo] = []
        self.params: pb.MoveParams | None = None
        self.last_input_seq = 0  # newest seq the server says it applied
        self.last_baseline_tick = 0  # baseline of the newest snapshot (0: it was a keyframe)
        self.server_rtt_ms = 0.0
        self.client_rtt_ms: float | None = None
        self.close_code: int | None = None
        self.close_reason = ""
        self.kick: pb.Kick | None = None
        self._seq = 0
        self._unacked: deque[pb.InputCmd] = deque(maxlen=REDUNDANT_INPUTS)
        self._reader: asyncio.Task | None = None
        self._pongs: set[asyncio.Task] = set()
        self._pinger: asyncio.Task | None = None
        self._welcomed = asyncio.Event()
        self._snapshot_event = asyncio.Event()
        self.closed = asyncio.Event()

    # -- lifecycle --------------------------------------------------------------------------

    async def __aenter__(self) -> Client:
        await self.connect()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    @property
    def player_id(self) -> int:
        return self.welcome.player_id if self.welcome else 0

    @property
    def entity(self) -> int:
        return self.welcome.entity if self.welcome else -1

    @property
    def tick_rate(self) -> int:
        return self.welcome.tick_rate if self.welcome else 30

    async def connect(self, *, resume_token: bytes | None = None) -> pb.Welcome:
        """Open the socket, send Join (or Resume) and wait for the Welcome."""
        if self._session is None:
            self._session = aiohttp.ClientSession()
        self._user_closed = False
        if self._pinger is not None:
            self._pinger.cancel()
            self._pinger = None
        self._welcomed.clear()
        self.closed.clear()
        self.close_code = None
        self.close_reason = ""
        self._seq = 0
        self._unacked.clear()
        self.mirror.reset()
        url = self.url
        if resume_token is not None:
            url = without_token(url)  # seat tokens are single-use; a Resume needs none
        elif self.matchmake_base:
            try:
                self.matchmade = await matchmake(self._session, self.matchmake_base,
                                                 mode=self.mode)
            except MatchmakeError as exc:
                raise ClientError(f"matchmaking failed: {exc}") from exc
            url = self.url = self.matchmade["url"]
        try:
            self.ws = await self._session.ws_connect(
                url, autoping=self.autoping, heartbeat=None, max_msg_size=16 * 1024 * 1024,
                timeout=aiohttp.ClientWSTimeout(ws_close=2.0),
                receive_timeout=None)
        except (aiohttp.ClientError, OSError, TimeoutError) as exc:
            raise ClientError(f"cannot connect to {self.url}: {exc}") from exc
        self._reader = asyncio.create_task(self._read_loop(), name=f"client-read-{self.name}")
        if resume_token is not None:
            first = pb.ClientFrame(resume=pb.Resume(protocol_version=PROTOCOL_VERSION,
                                                    token=resume_token))
        else:
            first = pb.ClientFrame(join=pb.Join(protocol_version=PROTOCOL_VERSION,
                                                name=self.name))
        await self._send(first)
        waiter = asyncio.create_task(self._welcomed.wait())
        closer = asyncio.create_task(self.closed.wait())
        try:
            await asyncio.wait({waiter, closer}, timeout=self.connect_timeout_s,
                               return_when=asyncio.FIRST_COMPLETED)
        finally:
            waiter.cancel()
            closer.cancel()
        if not self._welcomed.is_set():
            await self._drop_socket()
            raise ClientError(f"no Welcome from {self.url}: closed {self.close_code} "
                              f"{self.close_reason!r}")
        if self.ping_interval_s > 0:
            self._pinger = asyncio.create_task(self._ping_loop())
        assert self.welcome is not None
        return self.welcome

    async def resume(self) -> pb.Welcome:
        """Reconnect with the resume token of the last Welcome (same entity)."""
        if self.welcome is None:
            raise ClientError("nothing to resume: never welcomed")
        token = bytes(self.welcome.resume_token)
        await self._drop_socket()
        return await self.connect(resume_token=token)

    async def close(self, code: int = 1000) -> None:
        """Close for good. A clean close (1000) of a joined socket first sends Leave, so
        the server frees the seat at once instead of keeping it for the resume grace."""
        self._user_closed = True
        if code == 1000 and self.welcome is not None and self.ws is not None \
                and not self.ws.closed and not self.closed.is_set():
            with contextlib.suppress(Exception):
                await self._send(pb.ClientFrame(leave=pb.Leave()))
        if self._reconnector is not None and self._reconnector is not asyncio.current_task():
            self._reconnector.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._reconnector
            self._reconnector = None
        await self._drop_socket(code)
        if self._own_session and self._session is not None:
            await self._session.close()
            self._session = None

    async def _drop_socket(self, code: int = 1000) -> None:
        was_user_closed = self._user_closed
        self._user_closed = True  # this close is ours: no reconnect
        try:
            await self._drop_socket_now(code)
        finally:
            self._user_closed = was_user_closed

    async def _drop_socket_now(self, code: int) -> None:
        if self._pinger is not None:
            self._pinger.cancel()
            self._pinger = None
        if self.ws is not None and not self.ws.closed:
            with contextlib.suppress(Exception):
                await self.ws.close(code=code)
        if self._reader is not None:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await asyncio.wait_for(self._reader, 3.0)
            self._reader = None

    # -- sending ------------------------------------------------------------------------------

    async def _send(self, frame: pb.ClientFrame) -> None:
        if self.ws is None or self.ws.closed:
            raise ClientError("not connected")
        data = frame.SerializeToString()
        self.stats.frames_out += 1
        self.stats.bytes_out += len(data)
        await self.ws.send_bytes(data)

    async def send_input(self, move_x: float = 0.0, move_y: float = 0.0, aim: float = 0.0,
                         fire: bool = False) -> int:
        """Send one input command (plus the last few unacknowledged ones). Returns its seq."""
        self._seq += 1
        cmd = pb.InputCmd(seq=self._seq, client_tick=self.mirror.tick + 1, move_x=move_x,
                          move_y=move_y, aim=aim, buttons=1 if fire else 0)
        while self._unacked and self._unacked[0].seq <= self.last_input_seq:
            self._unacked.popleft()
        self._unacked.append(cmd)
        await self._send(pb.ClientFrame(input=pb.Input(ack_tick=self.mirror.ack_tick,
                                                       cmds=list(self._unacked))))
        if self._ping_due:
            await self.ping()
        return self._seq

    async def send_raw(self, data: bytes) -> None:
        """Send arbitrary bytes as one binary frame (for tests of hostile input)."""
        if self.ws is None:
            raise ClientError("not connected")
        await self.ws.send_bytes(data)

    async def ping(self) -> None:
        self._ping_due = False
        await self._send(pb.ClientFrame(ping=pb.Ping(client_time=time.monotonic())))

    async def _ping_loop(self) -> None:
        # A due Ping goes right after the next input (see send_input), or on its own when
        # no input comes within PING_WAIT_S. A server reading at the tick times a read by
        # its newest bytes: a Ping followed by an input in the same read would be timed
        # at the input's arrival, and its round trip come out too long.
        with contextlib.suppress(ClientError, ConnectionError, asyncio.CancelledError):
            while True:
                self._ping_due = True
                await asyncio.sleep(min(PING_WAIT_S, self.ping_interval_s))
                if self._ping_due:
                    await self.ping()
                await asyncio.sleep(max(0.0, self.ping_interval_s - PING_WAIT_S))

    # -- receiving ------------------------------------------------------------------------------

    async def _read_loop(self) -> None:
        ws = self.ws
        assert ws is not None
        self._on_open()
        try:
            while True:
                msg = await ws.receive()
                if msg.type == aiohttp.WSMsgType.BINARY:
                    self._on_frame(msg.data)
                elif msg.type == aiohttp.WSMsgType.PING:
                    self._on_ping(msg.data)
                elif msg.type == aiohttp.WSMsgType.CLOSE:
                    if msg.extra:
                        self.close_reason = str(msg.extra)
                    break
                elif msg.type in (aiohttp.WSMsgType.CLOSING, aiohttp.WSMsgType.CLOSED,
                                  aiohttp.WSMsgType.ERROR):
                    break
        except (aiohttp.ClientError, ConnectionError):
            pass
        finally:
            self.close_code = ws.close_code
            self.closed.set()
            self._snapshot_event.set()
            self._on_closed()
            if self.reconnect and not self._user_closed and self._welcomed.is_set():
                self._reconnector = asyncio.create_task(self._reconnect_loop())

    async def _reconnect_loop(self) -> None:
        """Reconnect with exponential backoff (0.25 s doubling to max_backoff_s, +-25%
        jitter so a crowd cut at once does not come back in lockstep)."""
        delay = 0.25
        for _ in range(self.max_reconnect_attempts):
            await asyncio.sleep(delay * random.uniform(0.75, 1.25))
            if self._user_closed:
                return
            token = bytes(self.welcome.resume_token) if self.welcome else None
            try:
                try:
                    await self.connect(resume_token=token)
                except ClientError:
                    # The seat is gone (1008), or with matchmaking the node may be: a new
                    # seat wherever the fleet has one.
                    if token is None or (self.close_code != 1008 and not self.matchmake_base):
                        raise
                    await self.connect()
                self.reconnects += 1
                return
            except ClientError:
                self.reconnect_failures += 1
                delay = min(delay * 2, self.max_backoff_s)

    # Hooks for subclasses (see client_demo/netsim.py): the socket opened or closed, and a
    # WebSocket ping arrived (only with autoping off).
    def _on_open(self) -> None:
        pass

    def _on_closed(self) -> None:
        pass

    def _on_ping(self, payload: bytes) -> None:
        if self.ws is not None:
            task = asyncio.get_running_loop().create_task(self.ws.pong(payload))
            self._pongs.add(task)  # a strong reference until it is done
            task.add_done_callback(self._pongs.discard)

    def _on_frame(self, data: bytes) -> None:
        now = time.monotonic()
        self.stats.frames_in += 1
        self.stats.bytes_in += len(data)
        frame = pb.ServerFrame()
        frame.ParseFromString(data)
        kind = frame.WhichOneof("kind")
        if kind == "snapshot":
            self._on_snapshot(frame.snapshot, len(data), now)
        elif kind == "welcome":
            self.welcome = frame.welcome
            self.params = frame.welcome.params
            self.mirror.configure(frame.welcome)
            self._welcomed.set()
        elif kind == "pong":
            # Minus the time the Ping waited in the server to be read at its tick: the
            # network's round trip, as NTP takes it.
            rtt = max(0.0, now - frame.pong.client_time - frame.pong.held) * 1000.0
            self.client_rtt_ms = rtt
            self.stats.record(self.stats.client_rtt_ms, rtt)
        elif kind == "roster":
            self.roster = list(frame.roster.players)
        elif kind == "params":
            self.params = frame.params.params
        elif kind == "kick":
            self.kick = frame.kick
            self.close_reason = frame.kick.reason

    def _on_snapshot(self, snap: pb.Snapshot, size: int, now: float) -> None:
        stats = self.stats
        try:
            self.mirror.apply(snap)
        except codec.CodecError:
            stats.decode_errors += 1
            return
        stats.snapshots += 1
        if snap.baseline_tick == 0 and (not snap.personal or snap.personal[0] & 1):
            stats.keyframes += 1  # a keyframe, or a chunked snapshot that reset the view
        stats.record(stats.snapshot_times, now)
        stats.record(stats.snapshot_ticks, snap.tick)
        stats.record(stats.snapshot_bytes, size)
        if snap.rtt_ms > 0:
            stats.record(stats.server_rtt_ms, snap.rtt_ms)
        self.server_rtt_ms = snap.rtt_ms
        self.last_input_seq = snap.last_input_seq
        self.last_baseline_tick = snap.baseline_tick
        self._snapshot_event.set()

    async def next_snapshot(self, timeout: float = 5.0) -> int:
        """Wait for the next decoded snapshot; returns its tick. Raises TimeoutError."""
        self._snapshot_event.clear()
        await asyncio.wait_for(self._snapshot_event.wait(), timeout)
        if self.closed.is_set():
            raise ClientError(f"closed: {self.close_code} {self.close_reason!r}")
        return self.mirror.tick

    async def wait_closed(self, timeout: float = 5.0) -> tuple[int | None, str]:
        await asyncio.wait_for(self.closed.wait(), timeout)
        return self.close_code, self.close_reason

    def own_position(self) -> tuple[float, float] | None:
        return self.mirror.position(self.entity) if self.welcome else None
