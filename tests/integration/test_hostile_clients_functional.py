"""Hostile clients against a real gateway on 127.0.0.1: one table row per attack.

Each row names what the attacker sends and what the server must do about it: close the
connection with a code (and a reason that says why), or drop what was bad and keep the
connection; either way a counter says so in /metrics. For every row a bystander keeps
receiving snapshots at the tick rate and no tick raises.

The attacker is a `RawWebSocket` (so it can send what no WebSocket library would: fragments
that never finish, frames over aiohttp's own limit, floods of PING control frames). It
answers the server's pings, as a browser does, unless a row says otherwise.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import struct
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

import pytest

from client_demo.client import Client
from proto import PROTOCOL_VERSION
from proto import tickwire_pb2 as pb
from server.room import MAX_SEQ_JUMP, Room, TickResult
from server.session import SessionLimits
from tests.hostile_table import WIRE_ATTACKS
from tests.integration.conftest import RawWebSocket, Running, make_params, wait_until

OP_CONT, OP_TEXT, OP_BINARY, OP_CLOSE, OP_PING, OP_PONG = 0x0, 0x1, 0x2, 0x8, 0x9, 0xA
MAX_FRAME = SessionLimits().max_frame_bytes
TIMEOUT_S = 10.0


class Closed(Exception):
    def __init__(self, code: int | None, reason: str) -> None:
        super().__init__(f"closed {code} {reason!r}")
        self.code = code
        self.reason = reason


def encode(**kind: object) -> bytes:
    return pb.ClientFrame(**kind).SerializeToString()


def join_frame(name: str = "hostile", version: int = PROTOCOL_VERSION) -> bytes:
    return encode(join=pb.Join(protocol_version=version, name=name))


def input_frame(*cmds: pb.InputCmd, ack_tick: int = 0) -> bytes:
    return encode(input=pb.Input(ack_tick=ack_tick, cmds=list(cmds)))


async def next_event(raw: RawWebSocket, timeout: float = TIMEOUT_S) -> pb.ServerFrame:
    """The next ServerFrame; answers pings on the way; raises Closed at the close frame."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        try:
            opcode, payload = await raw.read_frame(max(0.01, deadline - loop.time()))
        except asyncio.IncompleteReadError:
            raise Closed(None, "eof") from None
        if opcode == OP_PING:
            raw.send(payload, opcode=OP_PONG)
        elif opcode == OP_CLOSE:
            code = struct.unpack("!H", payload[:2])[0] if len(payload) >= 2 else 1005
            with contextlib.suppress(Exception):
                raw.send(payload[:2], opcode=OP_CLOSE)  # complete the closing handshake
            raise Closed(code, payload[2:].decode(errors="replace"))
        elif opcode == OP_BINARY:
            frame = pb.ServerFrame()
            frame.ParseFromString(payload)
            return frame


async def read_until(raw: RawWebSocket, want: Callable[[pb.ServerFrame], bool],
                     timeout: float = TIMEOUT_S) -> pb.ServerFrame:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        frame = await next_event(raw, max(0.01, deadline - loop.time()))
        if want(frame):
            return frame


async def read_close(raw: RawWebSocket, timeout: float = TIMEOUT_S) -> tuple[int | None, str]:
    """Skip (and answer pings) until the server closes; (code, reason), (None, 'eof')."""
    try:
        await read_until(raw, lambda _: False, timeout)
    except Closed as closed:
        return closed.code, closed.reason
    raise AssertionError("unreachable")


async def assert_alive(raw: RawWebSocket, timeout: float = TIMEOUT_S) -> None:
    """The server still answers this connection: a protobuf Ping gets its Pong (asked
    again every 0.25 s, since a ping sent while the frame bucket is empty is dropped)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while loop.time() < deadline:
        raw.send(encode(ping=pb.Ping(client_time=4242.0)))
        with contextlib.suppress(TimeoutError):
            await read_until(raw, lambda f: f.HasField("pong") and
                             f.pong.client_time == 4242.0, timeout=0.25)
            return
    raise AssertionError(f"no Pong within {timeout} s")


async def join_raw(port: int, name: str) -> tuple[RawWebSocket, pb.Welcome]:
    raw = await RawWebSocket.connect(port)
    raw.send(join_frame(name))
    frame = await read_until(raw, lambda f: f.HasField("welcome"))
    return raw, frame.welcome


async def wait_for_metric(running: Running, name: str, timeout: float = 5.0) -> float:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        value = (await running.metrics()).get(name, 0.0)
        if value >= 1 or loop.time() > deadline:
            return value
        await asyncio.sleep(0.05)


async def wait_ticks(room: Room, n: int) -> None:
    target = room.tick_number + n
    await wait_until(lambda: room.tick_number >= target, timeout=5)


@dataclass
class Ctx:
    """What an attack works with: the server, the attacker's socket and its Welcome."""

    running: Running
    raw: RawWebSocket
    welcome: pb.Welcome | None
    notes: dict = field(default_factory=dict)
    background: list[asyncio.Task] = field(default_factory=list)

    @property
    def room(self) -> Room:
        return next(iter(self.running.gateway.lobby.rooms.values()))

    def own_position(self) -> tuple[float, float]:
        assert self.welcome is not None
        x, y = self.room.world.pos[self.welcome.entity]
        return float(x), float(y)


Action = Callable[[Ctx], Awaitable[None]]


# -- the attacks ---------------------------------------------------------------------------


def writing(wire: Callable[[], bytes]) -> Action:
    """Raw bytes onto the socket, framed (or misframed) by the table."""
    async def act(ctx: Ctx) -> None:
        ctx.raw.writer.write(wire())
    return act


def sending(data: bytes) -> Action:
    async def act(ctx: Ctx) -> None:
        ctx.raw.send(data)
    return act


async def fragment_never_finished(ctx: Ctx) -> None:
    """Half a message in a non-FIN frame, then nothing but pong answers (next_event)."""
    body = input_frame(pb.InputCmd(seq=1))
    ctx.raw.send(body[:3], opcode=OP_BINARY, fin=False)


def _input(seq: int, **values: float) -> pb.InputCmd:
    return pb.InputCmd(seq=seq, client_tick=seq, **values)


async def input_flood_sustained(ctx: Ctx) -> None:
    """Valid inputs at 10x the tick rate, for as long as the server lets us (max 5 s)."""
    rate = ctx.room.params.tick_rate
    burst = 10  # per tick period: 10x the tick rate

    async def flood() -> None:
        seq = 0
        for _ in range(5 * rate):
            if ctx.raw.writer.transport.is_closing():
                return
            for _ in range(burst):
                seq += 1
                ctx.raw.send(input_frame(_input(seq)))
            await asyncio.sleep(1 / rate)

    ctx.background.append(asyncio.create_task(flood()))


async def input_burst(ctx: Ctx) -> None:
    """One burst a little over the frame bucket: some frames are dropped, fewer than the
    drops that close a connection."""
    limits = ctx.running.gateway.config.limits
    for seq in range(1, int(limits.frame_burst) + 21):
        ctx.raw.send(input_frame(_input(seq)))


async def nan_input(ctx: Ctx) -> None:
    ctx.notes["start"] = ctx.own_position()
    ctx.raw.send(input_frame(_input(1, move_x=float("nan"), move_y=1.0, aim=float("nan"))))
    await wait_ticks(ctx.room, 5)


async def inf_inputs_sustained(ctx: Ctx) -> None:
    for seq in range(1, 60):
        ctx.raw.send(input_frame(_input(seq, move_x=float("inf"), aim=float("-inf"))))


async def out_of_range_input(ctx: Ctx) -> None:
    ctx.notes["start"] = ctx.own_position()
    ctx.raw.send(input_frame(_input(1, move_x=50.0, move_y=-50.0)))
    await wait_ticks(ctx.room, 5)


async def future_ack(ctx: Ctx) -> None:
    ctx.raw.send(input_frame(_input(1), ack_tick=ctx.room.tick_number + 10_000))
    await wait_ticks(ctx.room, 2)


async def seq_jump(ctx: Ctx) -> None:
    ctx.notes["start"] = ctx.own_position()
    ctx.raw.send(input_frame(_input(MAX_SEQ_JUMP + 2, move_x=1.0)))
    await wait_ticks(ctx.room, 5)


async def seq_backwards(ctx: Ctx) -> None:
    ctx.raw.send(input_frame(_input(50)))  # standing still, seq 50
    await wait_until(lambda: ctx.room.seats[ctx.welcome.player_id].last_applied_seq == 50)
    ctx.notes["start"] = ctx.own_position()
    # Older sequence numbers asking to move: replays of old commands, ignored.
    ctx.raw.send(input_frame(_input(10, move_x=1.0), _input(49, move_y=1.0)))
    await wait_ticks(ctx.room, 5)


async def check_no_effect_on_world(ctx: Ctx) -> None:
    seat = ctx.room.seats[ctx.welcome.player_id]
    assert ctx.own_position() == ctx.notes["start"], "a refused input moved the player"
    assert not seat.queue


async def check_inputs_not_counted(ctx: Ctx) -> None:
    await check_no_effect_on_world(ctx)
    assert ctx.room.seats[ctx.welcome.player_id].last_queued_seq == 50
    samples = await ctx.running.metrics()
    assert not any(k.startswith("tickwire_inputs_rejected_total") and v
                   for k, v in samples.items())


async def wrong_resume_token(ctx: Ctx) -> None:
    """A victim drops; the attacker guesses its token (right player id, wrong secret)."""
    victim, welcome = await join_raw(ctx.running.port, "victim")
    victim.abort()
    seat = ctx.room.seats[welcome.player_id]
    await wait_until(lambda: not seat.connected)
    token = bytes(welcome.resume_token)
    forged = token[:4] + bytes(b ^ 0x5A for b in token[4:])
    ctx.notes.update(victim=welcome, dropped_at=seat.disconnected_at)
    ctx.raw.send(encode(resume=pb.Resume(protocol_version=PROTOCOL_VERSION, token=forged)))


async def check_victim_still_resumes(ctx: Ctx) -> None:
    welcome: pb.Welcome = ctx.notes["victim"]
    seat = ctx.room.seats[welcome.player_id]
    assert not seat.connected and seat.disconnected_at == ctx.notes["dropped_at"]
    raw = await RawWebSocket.connect(ctx.running.port)
    try:
        raw.send(encode(resume=pb.Resume(protocol_version=PROTOCOL_VERSION,
                                         token=bytes(welcome.resume_token))))
        back = (await read_until(raw, lambda f: f.HasField("welcome"))).welcome
        assert (back.player_id, back.entity) == (welcome.player_id, welcome.entity)
        assert seat.connected
    finally:
        raw.abort()


async def fill_the_server(ctx: Ctx) -> None:
    """One room of two seats, the only room allowed: the bystander and a filler take it."""
    filler, _ = await join_raw(ctx.running.port, "filler")
    ctx.notes["filler"] = filler
    ctx.raw.send(join_frame("one-too-many"))


async def check_filler_unharmed(ctx: Ctx) -> None:
    filler: RawWebSocket = ctx.notes["filler"]
    await assert_alive(filler)
    filler.abort()
    assert len(ctx.running.gateway.lobby.rooms) == 1


async def crash_in_handler(ctx: Ctx) -> None:
    """A bug while handling this client's input (simulated): it alone is closed."""
    room, hostile = ctx.room, ctx.welcome.player_id
    submit = room.submit

    def buggy_submit(player_id: int, msg: pb.Input) -> list[str]:
        if player_id == hostile:
            raise ZeroDivisionError("simulated bug")
        return submit(player_id, msg)

    room.submit = buggy_submit
    ctx.raw.send(input_frame(_input(1)))


async def pings_instead_of_join(ctx: Ctx) -> None:
    """Never joins, but keeps the socket busy with control frames: the Join deadline is
    absolute, so this must not keep it open."""
    async def keep_pinging() -> None:
        while True:
            ctx.raw.send(b"p", opcode=OP_PING)
            ctx.raw.send(b"q", opcode=OP_PONG)
            await asyncio.sleep(0.05)
    ctx.background.append(asyncio.create_task(keep_pinging()))


async def inputs_from_a_replaced_socket(ctx: Ctx) -> None:
    """The player resumes on a new socket while the old one is still sending inputs: the
    old one is closed as replaced (not as an internal error), the new one plays on."""
    async def keep_sending() -> None:
        seq = 0
        while True:
            seq += 1
            ctx.raw.send(input_frame(_input(seq)))
            await asyncio.sleep(0.01)
    ctx.background.append(asyncio.create_task(keep_sending()))
    await asyncio.sleep(0.1)
    fresh = await RawWebSocket.connect(ctx.running.port)
    ctx.notes["fresh"] = fresh
    fresh.send(encode(resume=pb.Resume(protocol_version=PROTOCOL_VERSION,
                                       token=ctx.welcome.resume_token)))


async def check_resumed_socket_plays(ctx: Ctx) -> None:
    fresh: RawWebSocket = ctx.notes["fresh"]
    welcome = (await read_until(fresh, lambda f: f.HasField("welcome"))).welcome
    assert welcome.entity == ctx.welcome.entity
    await assert_alive(fresh)
    fresh.abort()
    assert (await ctx.running.metrics()).get(frames("internal_error"), 0.0) == 0


async def resume_with_a_used_token(ctx: Ctx) -> None:
    """A victim drops and resumes; the attacker replays the token the victim just used
    (a leaked token, a copied tab): every resume rotates the token, so it opens nothing."""
    victim, welcome = await join_raw(ctx.running.port, "victim")
    victim.abort()
    seat = ctx.room.seats[welcome.player_id]
    await wait_until(lambda: not seat.connected)
    used = bytes(welcome.resume_token)
    back = await RawWebSocket.connect(ctx.running.port)
    back.send(encode(resume=pb.Resume(protocol_version=PROTOCOL_VERSION, token=used)))
    fresh = (await read_until(back, lambda f: f.HasField("welcome"))).welcome
    assert fresh.entity == welcome.entity and bytes(fresh.resume_token) != used
    ctx.notes.update(victim=back, token=bytes(fresh.resume_token), seat=seat)
    ctx.raw.send(encode(resume=pb.Resume(protocol_version=PROTOCOL_VERSION, token=used)))


async def check_victim_keeps_its_seat(ctx: Ctx) -> None:
    back: RawWebSocket = ctx.notes["victim"]
    await assert_alive(back)
    assert ctx.notes["seat"].connected
    assert ctx.notes["seat"].resume_token == ctx.notes["token"]  # the attempt changed nothing
    back.abort()


HOSTILE_SEATS = 31


async def acks_of_many_old_ticks(ctx: Ctx) -> None:
    """31 joined sockets (the attacker and 30 more), each acking its own old tick (3..33
    back) every tick for 2 s: without a bound, 31 snapshot encodes per tick."""
    room = ctx.room
    tick = room.tick
    encodes: list[int] = []

    def counting_tick(now: float) -> TickResult:
        before = room.history.encodes
        result = tick(now)
        encodes.append(room.history.encodes - before)
        return result

    room.tick = counting_tick
    others = [(await join_raw(ctx.running.port, f"acker{i}"))[0]
              for i in range(HOSTILE_SEATS - 1)]
    sockets = [ctx.raw, *others]
    rate = room.params.tick_rate
    for seq in range(1, 2 * rate + 1):
        newest = room.tick_number
        for lag, raw in enumerate(sockets, start=3):
            raw.send(input_frame(_input(seq), ack_tick=max(1, newest - lag)))
        await wait_ticks(room, 1)
    ctx.notes.update(encodes=list(encodes), measured_from=rate)  # all lags in the ring by then
    for raw in others:
        raw.abort()
    await wait_until(lambda: len(ctx.running.gateway.connections) == 2, timeout=5)


async def check_encodes_bounded(ctx: Ctx) -> None:
    encodes: list[int] = ctx.notes["encodes"]
    window = encodes[ctx.notes["measured_from"]:]
    assert window, encodes
    assert max(window) <= ctx.room._baselines.max_deltas + 1, encodes
    assert ctx.room.baselines_snapped > 0


@dataclass(frozen=True)
class Attack:
    name: str
    act: Action
    code: int | None  # the close code; None: the connection is kept
    counter: str | None  # a /metrics sample that must reach 1
    reason: str = ""  # a part of the close reason
    joined: bool = True  # the attacker joins before attacking
    limits: dict = field(default_factory=dict)
    config: dict = field(default_factory=dict)  # GatewayConfig fields
    params: dict = field(default_factory=dict)  # dotted sim parameters
    check: Action | None = None  # more checks once the outcome is seen


def frames(label: str) -> str:
    return f'tickwire_frames_rejected_total{{reason="{label}"}}'


def inputs(label: str) -> str:
    return f'tickwire_inputs_rejected_total{{reason="{label}"}}'


ATTACKS = [
    Attack("fragment_never_finished", fragment_never_finished, 1008,
           'tickwire_disconnects_total{code="1008"}', "no input for",
           limits={"idle_timeout_s": 1.0, "ping_interval_s": 0.2}),
    Attack("input_flood_10x_tick_rate", input_flood_sustained, 1008, frames("flood"),
           "too many frames"),
    Attack("input_burst_over_bucket", input_burst, None, frames("rate_limited")),
    Attack("nan_input", nan_input, None, inputs("non_finite"),
           check=check_no_effect_on_world),
    Attack("infinite_inputs_sustained", inf_inputs_sustained, 1008, inputs("non_finite"),
           "too many invalid inputs"),
    Attack("out_of_range_input", out_of_range_input, None, inputs("out_of_range"),
           check=check_no_effect_on_world),
    Attack("ack_of_a_future_tick", future_ack, None, inputs("bad_ack")),
    Attack("seq_jump", seq_jump, None, inputs("seq_jump"), check=check_no_effect_on_world),
    Attack("seq_backwards", seq_backwards, None, None, check=check_inputs_not_counted),
    Attack("resume_with_wrong_token", wrong_resume_token, 1008, frames("bad_resume"),
           "resume token", joined=False, check=check_victim_still_resumes),
    Attack("join_when_every_room_is_full", fill_the_server, 1008, frames("server_full"),
           "server full", joined=False, config={"max_rooms": 1},
           params={"room.max_players": 2}, check=check_filler_unharmed),
    Attack("bug_while_handling_its_frame", crash_in_handler, 1011, frames("internal_error"),
           "internal error"),
    Attack("control_frames_instead_of_join", pings_instead_of_join, 1008,
           frames("join_timeout"), "no Join", joined=False, limits={"join_timeout_s": 0.5}),
    Attack("inputs_from_a_replaced_socket", inputs_from_a_replaced_socket, 1008,
           'tickwire_disconnects_total{code="1008"}', "replaced",
           check=check_resumed_socket_plays),
    # Issue #11: names that show nothing, a token reused after a resume, acks that would
    # force one snapshot encode per seat per tick.
    Attack("name_of_fillers_and_blanks", sending(join_frame("\u3164\u2800\u3164")), 1008,
           frames("bad_join"), "visible character", joined=False),
    Attack("name_of_combining_marks", sending(join_frame("\u0301\u0302\u20dd")), 1008,
           frames("bad_join"), "visible character", joined=False),
    Attack("resume_with_a_used_token", resume_with_a_used_token, 1008, frames("bad_resume"),
           "resume token", joined=False, check=check_victim_keeps_its_seat),
    Attack("acks_of_31_different_old_ticks", acks_of_many_old_ticks, None, None,
           params={"room.max_players": 40}, check=check_encodes_bounded),
]
# The attacks that are only bytes on the wire come from the table the unit tests run
# against the protocol object (tests/hostile_table.py).
ATTACKS += [Attack(w.name, writing(w.wire), w.code, frames(w.label), w.reason, joined=w.joined,
                   limits=w.limits) for w in WIRE_ATTACKS]


@pytest.mark.parametrize("attack", ATTACKS, ids=[a.name for a in ATTACKS])
async def test_hostile_client_gets_its_outcome_and_a_bystander_plays_on_functional(
        start_server, attack: Attack):
    running = await start_server(make_params(**{"npc.count": 0, **attack.params}),
                                 config_overrides=attack.config, **attack.limits)
    async with Client(running.ws_url, "bystander", ping_interval_s=0.25) as bystander:
        await bystander.next_snapshot()
        before = bystander.stats.snapshots
        if attack.joined:
            raw, welcome = await join_raw(running.port, "hostile")
        else:
            raw, welcome = await RawWebSocket.connect(running.port), None
        ctx = Ctx(running=running, raw=raw, welcome=welcome)
        try:
            await attack.act(ctx)
            if attack.code is None:
                await assert_alive(raw)
                assert len(running.gateway.connections) == 2
            else:
                code, reason = await read_close(raw)
                assert code == attack.code, (code, reason)
                assert attack.reason in reason, reason
            if attack.counter is not None:
                assert await wait_for_metric(running, attack.counter) >= 1, attack.counter
            if attack.check is not None:
                await attack.check(ctx)
        finally:
            for task in ctx.background:
                task.cancel()
            raw.abort()
        # The bystander kept its seat and its snapshots throughout.
        for _ in range(10):
            await bystander.send_input(0.0, 0.0)
            await bystander.next_snapshot()
        assert not bystander.closed.is_set()
        assert bystander.stats.snapshots >= before + 10
        assert bystander.stats.decode_errors == 0
    assert (await running.metrics()).get("tickwire_tick_errors_total", 0.0) == 0


async def test_random_bytes_are_accepted_or_refused_with_a_documented_code_functional(
        start_server):
    """Seeded random frames after joining: each is either taken (the socket stays) or
    refused with one of our close codes and a reason; never anything else."""
    rng = random.Random(7)
    running = await start_server(make_params(**{"npc.count": 0}))
    outcomes: dict[str, int] = {}
    for i in range(40):
        raw, _ = await join_raw(running.port, f"fuzz{i}")
        try:
            raw.send(rng.randbytes(rng.randint(1, 48)))
            raw.send(encode(ping=pb.Ping(client_time=4242.0)))
            try:
                await read_until(raw, lambda f: f.HasField("pong"), timeout=5)
                outcome = "kept"
            except Closed as closed:
                assert closed.code in (1003, 1007, 1008, 1009), closed
                assert closed.reason
                outcome = str(closed.code)
            outcomes[outcome] = outcomes.get(outcome, 0) + 1
        finally:
            raw.abort()
    # Garbage is overwhelmingly not protobuf; some of it must have been refused as such.
    assert outcomes.get("1007", 0) > 0, outcomes
    assert (await running.metrics()).get("tickwire_tick_errors_total", 0.0) == 0


async def test_an_empty_continuation_flood_is_closed_and_a_bystander_misses_no_tick_functional(
        start_server):
    """Issue 11 item 1: a fragmented message kept open with empty continuation frames sent
    as fast as the socket takes them. Every frame is charged, so the attacker is closed
    1008; meanwhile the bystander gets a snapshot for every tick the room ran.
    (Fragment-count limit lifted, so the frame budget is what closes it.)"""
    from tests.wsframes import client_frame
    running = await start_server(make_params(**{"npc.count": 0}), max_fragments=10**9)
    async with Client(running.ws_url, "bystander") as bystander:
        await bystander.next_snapshot()
        raw, _ = await join_raw(running.port, "attacker")
        room = next(iter(running.gateway.lobby.rooms.values()))
        tick0, seen0 = room.tick_number, bystander.stats.snapshots
        empty = client_frame(b"", OP_CONT, fin=False, mask=b"\x00\x00\x00\x00") * 2000

        async def flood() -> None:
            raw.send(b"\x0a", fin=False)
            for _ in range(500):  # bounded: 1M frames at most
                if raw.writer.transport.is_closing():
                    return
                raw.writer.write(empty)
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(raw.writer.drain(), 1.0)

        task = asyncio.create_task(flood())
        try:
            code, reason = await read_close(raw)
            assert code == 1008 and "too many frames" in reason, (code, reason)
        finally:
            task.cancel()
            raw.abort()
        await wait_ticks(room, 30)
        for _ in range(5):  # let the snapshots in flight arrive
            await bystander.send_input(0.0, 0.0)
            await bystander.next_snapshot()
        ticks = room.tick_number - tick0
        got = bystander.stats.snapshots - seen0
        assert got >= ticks - 2, (got, ticks)
        # (Skipped ticks are not asserted: attacker, server and bystander share this
        # process's event loop, so a loaded machine can make the loop fall behind.)
        assert await running.metric('tickwire_frames_rejected_total{reason="flood"}') == 1
