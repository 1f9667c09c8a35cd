"""One match: the world, its seats, their input queues, and the snapshot history.

Theory of operation
-------------------
A ``Room`` is sans-I/O. The gateway hands it what arrived (``join``, ``submit``,
``disconnect``) with the time, and calls ``tick(now)`` on the room's schedule; ``tick``
returns the bytes to send to each connected seat. Nothing in here touches a socket or
reads a clock, so every rule is tested with plain calls.

Inputs arrive between ticks and wait in a bounded per-seat queue. One command is one
movement step of ``dt``, exactly what the client predicted for it, so reconciliation
against ``last_input_seq`` finds no difference when nothing else interfered. Each tick a
seat earns one step of budget (kept up to ``inputs_per_tick`` while its commands are late)
and spends one per command: a tick without a command leaves the player where it is, and
the commands arriving bunched next tick catch up (earlier ones through ``pre_move``).
Sending faster than the tick rate earns nothing, so over any stretch of time a player
covers at most (ticks + inputs_per_tick - 1) steps. A queue that stays long for a whole
second is trimmed, so a stall or a fast client clock does not add lasting input delay.
Fire is the OR of a tick's commands.

Snapshots: after each step the world is quantised once and pushed into a
``SnapshotHistory``. Each seat gets a delta against the tick it acknowledged (or a
keyframe); the serialized ``Snapshot`` part shared by every seat with the same baseline is
built once per tick, and each seat gets a short personal suffix (its last applied input
seq and RTT), which protobuf merges into the same message on parse.

Seats outlive sockets: a disconnected seat keeps its entity for ``resume_grace_s`` so a
``Resume`` with the seat's token gets the same entity back.

Live parameters: ``set_params`` only stores the change; it takes effect at the start of
the next ``tick`` (never in the middle of one), bumps ``params_version`` and queues a
``Params`` frame for every seat, so the frame and the first snapshot under the new
version leave in the same delivery. Keys that need a restart keep their running values.

Recording: an optional ``recorder`` (see ``server.recording``) is told about every change
to the world — joins, leaves, parameter changes, the dense inputs applied each tick — which
is everything a replay needs to re-simulate the room bit for bit.
"""

from __future__ import annotations

import hmac
import math
import secrets
import struct
from collections import Counter, deque
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np

from proto import PROTOCOL_VERSION, codec
from proto import tickwire_pb2 as pb
from sim.params import Params, restart_keys_changed
from sim.step import Inputs, pre_move, step
from sim.world import World, WorldFullError

# A snapshot's per-client part, written by hand because it is built for every client on
# every tick: ServerFrame field 2 (snapshot), length 10, holding Snapshot field 3
# (last_input_seq, fixed32) and field 4 (rtt_ms, float). Fixed width keeps the shared part's
# WebSocket header the same for every client with the same baseline.
_PERSONAL = struct.Struct("<BBBIBf")
_PERSONAL_TAGS = (0x12, 10, 0x1D)
_RTT_TAG = 0x25

MAX_NAME_CHARS = 24
MAX_CMDS_PER_FRAME = 8
MAX_SEQ_JUMP = 1024
TOKEN_SECRET_BYTES = 16
_AIM_LIMIT = 2 * math.pi + 1e-6
_KNOWN_BUTTONS = 0x1


class RoomRecorder(Protocol):
    """What a Room tells a recorder (``server.recording.RoomRecorder`` implements it)."""

    def on_join(self, room: Room, player_id: int, slot: int) -> None: ...
    def on_leave(self, room: Room, player_id: int, slot: int) -> None: ...
    def on_params(self, room: Room) -> None: ...
    def on_pre_move(self, room: Room, slots: np.ndarray, inputs: Inputs) -> None: ...
    def on_inputs(self, room: Room, slots: np.ndarray, inputs: Inputs) -> None: ...
    def on_stepped(self, room: Room) -> None: ...
    def close(self) -> None: ...


def merge_live_params(running: Params, new: Params) -> tuple[Params, list[str]]:
    """(params to apply now, restart-only keys that differ): ``new`` with every
    restart-only key put back to its ``running`` value. Raises ``ParamsError`` when the
    merged set breaks a cross-field rule (e.g. more projectiles than the running capacity)."""
    restart = restart_keys_changed(running, new)
    if not restart:
        return new, []
    old = running.to_dotted()
    return new.with_changes({key: old[key] for key in restart}), restart


def check_name(name: str) -> str:
    """The display name trimmed, or JoinRefused when it is empty, too long or unprintable."""
    name = name.strip()
    if not 1 <= len(name) <= MAX_NAME_CHARS or not name.isprintable():
        raise JoinRefused(f"name must be 1-{MAX_NAME_CHARS} printable characters")
    return name


class RoomFullError(Exception):
    """No free seat in this room."""


class JoinRefused(Exception):
    """A Join or Resume that breaks the protocol; `reason` is for the close frame."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(slots=True)
class Seat:
    """A player's place in the room. Owned by the room; the gateway reads it."""

    player_id: int
    name: str
    entity: int
    secret: bytes
    connected: bool = True
    disconnected_at: float = 0.0
    queue: deque = field(default_factory=deque)  # (seq, move_x, move_y, aim, fire)
    last_applied_seq: int = 0
    last_queued_seq: int = 0
    acked_tick: int = 0
    rtt_ms: float = 0.0
    budget: int = 0  # movement steps earned but not yet spent (see Room._apply_inputs)
    queue_floor: int = 1 << 30  # the shortest the queue was in this trim window
    window_ticks: int = 0

    @property
    def resume_token(self) -> bytes:
        """player id (4 bytes, big-endian) + a random secret compared in constant time."""
        return struct.pack("!I", self.player_id) + self.secret


@dataclass(slots=True)
class Delivery:
    """What one seat gets this tick: event frames first, then the snapshot.

    The snapshot frame is ``snapshot_shared + snapshot_personal`` (two serialized
    ServerFrames that protobuf merges); `snapshot_shared` is the same object for every
    seat with the same baseline, so the gateway may reuse work per object identity.
    """

    player_id: int
    frames: list[bytes]
    snapshot_shared: bytes
    snapshot_personal: bytes
    keyframe: bool


@dataclass(slots=True)
class TickResult:
    tick: int
    deliveries: list[Delivery]
    expired: list[int]  # player ids whose grace ran out this tick
    # (player id, reason, count) of inputs rejected at the tick (charged by the gateway)
    input_rejections: list[tuple[int, str, int]] = field(default_factory=list)


class Room:
    """A match. `now` arguments are seconds on the server's monotonic clock."""

    def __init__(self, room_id: str, params: Params, *, now: float = 0.0,
                 params_version: int = 1) -> None:
        self.room_id = room_id
        self.params = params
        self.params_version = params_version
        self.recorder: RoomRecorder | None = None
        self._pending_params: tuple[Params, int | None] | None = None
        self.world = World.create(params)
        self.history = codec.SnapshotHistory(size=max(64, 2 * params.tick_rate),
                                             tick_rate=params.tick_rate)
        self.seats: dict[int, Seat] = {}
        self.created_at = now
        self.inputs_rejected: Counter[str] = Counter()
        self.inputs_dropped = 0  # queue overflow: commands older than the queue bound
        self.inputs_trimmed = 0  # commands dropped to cut a standing queue (input delay)
        self._inputs = Inputs.empty(self.world.capacity)
        self._pre_inputs = Inputs.empty(self.world.capacity)  # scratch for pre_move rounds
        self._pending: dict[int, list[bytes]] = {}  # event frames queued per seat
        self._roster_dirty = False
        self.last_state = self._quantize()

    # -- membership ---------------------------------------------------------------------

    @property
    def capacity(self) -> int:
        return self.params.max_players

    @property
    def tick_number(self) -> int:
        """The newest completed tick (0 before the first)."""
        return self.world.tick

    def has_free_seat(self) -> bool:
        return len(self.seats) < self.params.max_players

    def join(self, player_id: int, name: str, now: float) -> Seat:
        """Seat a new player and spawn their entity. Raises RoomFullError, JoinRefused."""
        name = check_name(name)
        if player_id in self.seats:
            raise ValueError(f"player {player_id} is already seated")
        if not self.has_free_seat():
            raise RoomFullError(self.room_id)
        try:
            entity = self.world.add_player(player_id)
        except WorldFullError as exc:
            raise RoomFullError(self.room_id) from exc
        seat = Seat(player_id=player_id, name=name, entity=entity,
                    secret=secrets.token_bytes(TOKEN_SECRET_BYTES))
        self.seats[player_id] = seat
        if self.recorder is not None:
            self.recorder.on_join(self, player_id, entity)
        self._pending[player_id] = [self._welcome(seat)]
        self._roster_dirty = True
        return seat

    def find_by_token(self, token: bytes) -> Seat | None:
        """The seat this resume token belongs to, if the token is right (constant-time)."""
        if len(token) != 4 + TOKEN_SECRET_BYTES:
            return None
        (player_id,) = struct.unpack("!I", token[:4])
        seat = self.seats.get(player_id)
        if seat is None or not hmac.compare_digest(seat.secret, token[4:]):
            return None
        return seat

    def resume(self, seat: Seat, now: float) -> None:
        """Reattach a seat to a new socket: same entity, a keyframe next, queue cleared.

        The caller closes any stale socket still attached to the seat. Raises JoinRefused
        when the seat's grace period is over (even if no tick has reaped it yet).
        """
        if not seat.connected and now - seat.disconnected_at >= self.params.resume_grace_s:
            raise JoinRefused("resume token expired")
        seat.connected = True
        seat.acked_tick = 0
        seat.budget = 0
        seat.queue_floor, seat.window_ticks = 1 << 30, 0
        seat.queue.clear()
        # The client restarts its sequence numbers on a new socket.
        seat.last_applied_seq = seat.last_queued_seq = 0
        self._pending[seat.player_id] = [self._welcome(seat)]
        self._roster_dirty = True

    def disconnect(self, player_id: int, now: float) -> None:
        """The socket went away: keep the seat for the resume grace period."""
        seat = self.seats.get(player_id)
        if seat is None or not seat.connected:
            return
        if self.params.resume_grace_s <= 0:
            self.leave(player_id)
            return
        seat.connected = False
        seat.disconnected_at = now
        seat.queue.clear()
        self._roster_dirty = True

    def leave(self, player_id: int) -> None:
        """Free the seat and its entity now."""
        seat = self.seats.pop(player_id, None)
        if seat is None:
            return
        self.world.remove_player(seat.entity)
        if self.recorder is not None:
            self.recorder.on_leave(self, player_id, seat.entity)
        self._pending.pop(player_id, None)
        self._roster_dirty = True

    # -- inputs -------------------------------------------------------------------------

    def submit(self, player_id: int, msg: pb.Input) -> list[str]:
        """Queue one Input frame's commands and record its ack.

        Returns the reasons (metric labels) of the parts that were rejected, [] when all
        was fine; each is also counted in `inputs_rejected`. The gateway decides when a
        client has been rejected often enough to be closed.
        """
        seat = self.seats.get(player_id)
        if seat is None:
            return ["no_seat"]
        rejected: list[str] = []
        if msg.ack_tick > self.world.tick:
            rejected.append("bad_ack")
        elif msg.ack_tick == 0 or msg.ack_tick > seat.acked_tick:
            # 0 is a client saying it lost its baseline: the next snapshot is a keyframe.
            seat.acked_tick = msg.ack_tick
        cmds = msg.cmds
        if len(cmds) > MAX_CMDS_PER_FRAME:
            rejected.append("too_many_cmds")
            cmds = cmds[-MAX_CMDS_PER_FRAME:]
        limit = self.params.input_queue
        for cmd in cmds:
            if cmd.seq <= seat.last_queued_seq:
                continue  # a redundant copy of a command we already have
            reason = _check_cmd(cmd, seat.last_queued_seq)
            if reason:
                rejected.append(reason)
                continue
            seat.queue.append((cmd.seq, cmd.move_x, cmd.move_y, cmd.aim,
                               bool(cmd.buttons & 1)))
            seat.last_queued_seq = cmd.seq
            if len(seat.queue) > limit:
                seat.queue.popleft()
                self.inputs_dropped += 1
        for reason in rejected:
            self.inputs_rejected[reason] += 1
        return rejected

    def set_rtt(self, player_id: int, rtt_ms: float) -> None:
        seat = self.seats.get(player_id)
        if seat is not None:
            seat.rtt_ms = rtt_ms

    # -- live parameters ------------------------------------------------------------------

    def set_params(self, params: Params, now: float, *, version: int | None = None
                   ) -> list[str]:
        """Apply ``params`` at the start of the next tick; returns the restart-only keys
        that differ (they keep their running values). ``version`` is the new
        ``params_version`` (default: the current one + 1). A second call before that tick
        replaces the first. Raises ``ParamsError`` if the live part cannot apply."""
        del now  # the change is tied to the next tick, not to a time
        effective, restart = merge_live_params(self.params, params)
        self._pending_params = (effective, version)
        return restart

    def _apply_pending_params(self) -> None:
        if self._pending_params is None:
            return
        params, version = self._pending_params
        self._pending_params = None
        self.world.set_params(params)
        self.params = params
        self.params_version = version if version is not None else self.params_version + 1
        frame = pb.ServerFrame(params=pb.Params(
            version=self.params_version, params=self.move_params())).SerializeToString()
        for player_id in self.seats:
            self._pending.setdefault(player_id, []).append(frame)
        if self.recorder is not None:
            self.recorder.on_params(self)

    # -- the tick -----------------------------------------------------------------------

    def tick(self, now: float) -> TickResult:
        """Advance one tick and return what every connected seat should be sent."""
        self._apply_pending_params()
        expired = self._expire_seats(now)
        self._apply_inputs()
        if self.recorder is not None:
            self.recorder.on_inputs(self, np.flatnonzero(self._inputs.active), self._inputs)
        step(self.world, self._inputs)
        if self.recorder is not None:
            self.recorder.on_stepped(self)
        tick = self.world.tick
        self.last_state = self._quantize()
        self.history.push(tick, self.last_state)
        roster = self._roster_frame() if self._roster_dirty else None
        self._roster_dirty = False
        return TickResult(tick=tick, deliveries=self._deliveries(tick, now, roster),
                          expired=expired)

    def _expire_seats(self, now: float) -> list[int]:
        grace = self.params.resume_grace_s
        gone = [s.player_id for s in self.seats.values()
                if not s.connected and now - s.disconnected_at >= grace]
        for player_id in gone:
            self.leave(player_id)
        return gone

    def _apply_inputs(self) -> None:
        """Turn queued commands into this tick's movement: one command, one step.

        Each tick a seat earns one step of budget, kept up to `inputs_per_tick` while its
        commands are late, and spends one per command applied. A seat with nothing queued
        does not move (its command is late, not absent: the client already predicted that
        step, and it is applied when the command arrives). Earlier commands of a bunch
        are applied by `pre_move`, round by round, so the server's position after command
        `seq` is exactly the client's prediction; a client sending faster than the tick
        rate earns no extra steps.

        A queue that never empties is input delay nobody needs (after a stall, or a client
        clock running a little fast): when its shortest length over a window of one second
        was above one, the surplus oldest commands are dropped (counted in
        `inputs_trimmed`). The client sees one correction instead of lasting extra lag.
        """
        inputs = self._inputs
        inputs.fire[:] = False
        inputs.active[:] = False
        cap = self.params.inputs_per_tick
        early: list[list[tuple[int, float, float, float]]] = []  # per round: slot, move, aim
        # One Python iteration per seat (not per entity): the queues are per connection.
        window = self.params.tick_rate
        for seat in self.seats.values():
            seat.budget = min(seat.budget + 1, cap)
            n = min(seat.budget, len(seat.queue))
            self._trim_standing_queue(seat, len(seat.queue) - n, window)
            if n == 0:
                continue
            seat.budget -= n
            fire = False
            for r in range(n):
                seq, move_x, move_y, aim, fired = seat.queue.popleft()
                fire = fire or fired
                if r < n - 1:
                    if len(early) == r:
                        early.append([])
                    early[r].append((seat.entity, move_x, move_y, aim))
            seat.last_applied_seq = seq
            row = seat.entity
            inputs.move[row, 0] = move_x
            inputs.move[row, 1] = move_y
            inputs.aim[row] = aim
            inputs.fire[row] = fire
            inputs.active[row] = True
        for rows in early:
            slots = np.array([r[0] for r in rows], dtype=np.int64)
            pre = self._pre_inputs
            pre.move[slots] = [(r[1], r[2]) for r in rows]
            pre.aim[slots] = [r[3] for r in rows]
            pre_move(self.world, slots, pre)
            if self.recorder is not None:
                self.recorder.on_pre_move(self, slots, pre)

    def _trim_standing_queue(self, seat: Seat, left_after_tick: int, window: int) -> None:
        seat.queue_floor = min(seat.queue_floor, left_after_tick)
        seat.window_ticks += 1
        if seat.window_ticks < window:
            return
        surplus = seat.queue_floor - 1
        seat.queue_floor, seat.window_ticks = 1 << 30, 0
        if surplus > 0 and len(seat.queue) > surplus:
            for _ in range(surplus):
                seat.queue.popleft()
            self.inputs_trimmed += surplus

    def _quantize(self) -> np.ndarray:
        w = self.world
        return codec.quantize(pos=w.pos, vel=w.vel, hp=w.hp, score=w.score, kind=w.kind,
                              gen=w.gen, aim=w.aim, flags=w.flags, alive=w.alive)

    def _deliveries(self, tick: int, now: float, roster: bytes | None) -> list[Delivery]:
        shared_by_baseline: dict[int, tuple[bytes, bool]] = {}
        out = []
        for seat in self.seats.values():
            if not seat.connected:
                continue
            payload, baseline = self.history.payload_for(tick, seat.acked_tick)
            shared = shared_by_baseline.get(baseline)
            if shared is None:
                frame = pb.ServerFrame(snapshot=pb.Snapshot(
                    tick=tick, baseline_tick=baseline, params_version=self.params_version,
                    payload=payload, server_time=now))
                shared = (frame.SerializeToString(), baseline == 0)
                shared_by_baseline[baseline] = shared
            personal = _PERSONAL.pack(*_PERSONAL_TAGS, seat.last_applied_seq, _RTT_TAG,
                                      seat.rtt_ms)
            frames = self._pending.pop(seat.player_id, [])
            if roster is not None:
                frames.append(roster)
            out.append(Delivery(seat.player_id, frames, shared[0], personal, shared[1]))
        return out

    # -- frames -------------------------------------------------------------------------

    def move_params(self) -> pb.MoveParams:
        p = self.params
        return pb.MoveParams(
            world_width=p.world_width, world_height=p.world_height,
            player_accel=p.player_accel, player_max_speed=p.player_max_speed,
            player_friction=p.player_friction, player_radius=p.player_radius,
            projectile_speed=p.projectile_speed, fire_cooldown_s=p.fire_cooldown_s)

    def _welcome(self, seat: Seat) -> bytes:
        return pb.ServerFrame(welcome=pb.Welcome(
            player_id=seat.player_id, room=self.room_id, tick_rate=self.params.tick_rate,
            tick=self.world.tick, entity=seat.entity, params=self.move_params(),
            params_version=self.params_version, resume_token=seat.resume_token,
            protocol_version=PROTOCOL_VERSION)).SerializeToString()

    def _roster_frame(self) -> bytes:
        return pb.ServerFrame(roster=pb.Roster(players=[
            pb.PlayerInfo(player_id=s.player_id, entity=s.entity, name=s.name,
                          connected=s.connected)
            for s in self.seats.values()
        ])).SerializeToString()


def _check_cmd(cmd: pb.InputCmd, last_seq: int) -> str | None:
    """Why an input command is unacceptable, or None. Reasons are metric labels."""
    values = (cmd.move_x, cmd.move_y, cmd.aim)
    if not all(math.isfinite(v) for v in values):
        return "non_finite"
    if abs(cmd.move_x) > 1.0 or abs(cmd.move_y) > 1.0 or abs(cmd.aim) > _AIM_LIMIT:
        return "out_of_range"
    if cmd.buttons & ~_KNOWN_BUTTONS:
        return "unknown_buttons"
    if cmd.seq - last_seq > MAX_SEQ_JUMP:
        return "seq_jump"
    return None
