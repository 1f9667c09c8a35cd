"""One match: the world, its seats, their input queues, and the snapshot history.

Theory of operation
-------------------
A ``Room`` is sans-I/O. The gateway hands it what arrived (``join``, ``submit``,
``disconnect``) with the time, and calls ``tick(now)`` on the room's schedule; ``tick``
returns the bytes to send to each connected seat. Nothing in here touches a socket or
reads a clock, so every rule is tested with plain calls.

Inputs arrive between ticks. ``submit`` does the per-frame part only (the seat, its
ack, the frame's shape) and hands the new commands to ``server.inputs.SeatInputs``, which
packs them into one per-room byte buffer; at the start of each tick they are validated
(in NumPy when ``defer_input_checks``, see that module) and queued in per-seat rings, all
seats at once. One command is one movement step of ``dt``, exactly what the client
predicted for it, so reconciliation against ``last_input_seq`` finds no difference when
nothing else interfered. Each tick a seat earns one step of budget (kept up to ``inputs_per_tick``
while its commands are late) and spends one per command: a tick without a command leaves
the player where it is, and the commands arriving bunched next tick catch up (earlier ones
through ``pre_move``). Sending faster than the tick rate earns nothing, so over any stretch
of time a player covers at most (ticks + inputs_per_tick - 1) steps. A queue that stays
long for a whole second is trimmed, so a stall or a fast client clock does not add lasting
input delay. Fire is the OR of a tick's commands; the first firing command of the tick
names the shot (its ``seq`` and aim) and, for a hitscan weapon, the view the client was
drawing (``view_tick``, ``view_next_tick``, ``view_blend``). The room limits how far that view may
rewind to what the seat's measured RTT, the client's interpolation and the command's wait
in the queue allow (see ``INTERP_ALLOWANCE_MS``); the sim caps it again at
``weapon.max_rewind_ms``. After the step every seat gets a ``Shots`` frame with the tick's
hitscan shots (tracers; the shooter's hit marker) and its own projectile shots (to match
its predicted projectiles by seq), and ``shot_stats`` counts the rewind depths and the
clamped shots.

Snapshots: after each step the world is quantised once and pushed into a
``SnapshotHistory``. Each seat gets a delta against a tick it acknowledged (or a keyframe);
``server.baselines.BaselinePicker`` keeps that to at most a few baselines per tick whatever
the acks claim, so a tick's encodes are bounded. The serialized ``Snapshot`` part shared by
every seat with the same baseline is built once per tick, and each seat gets a short
personal suffix (its last applied input seq and RTT), which protobuf merges into the same
message on parse. The per-seat state the delivery needs (rows, acks, seqs, RTTs) lives in
arrays, so building the deliveries is a few NumPy calls plus one small object per seat.

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
import operator
import secrets
import struct
import unicodedata
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np

from proto import PROTOCOL_VERSION, codec
from proto import tickwire_pb2 as pb
from proto.snapframe import snapshot_frame
from server.baselines import DEFAULT_MAX_DELTAS, BaselinePicker
from server.inputs import (
    BUFFER_BYTES_PER_CMD,
    FLUSH_AT,
    MAX_CMDS_PER_FRAME,
    MAX_SEQ_JUMP,
    SeatInputs,
)
from server.interestroom import InterestRoom, personal_frames
from server.shotstats import ShotStats
from sim.params import Params, ParamsError, restart_keys_changed
from sim.step import Inputs, StepEvents, pre_move, step
from sim.world import World, WorldFullError

__all__ = ["MAX_CMDS_PER_FRAME", "MAX_SEQ_JUMP"]  # re-exported: tests and the gateway use them

# A snapshot's per-client part, written by hand because it is built for every client on
# every tick: ServerFrame field 2 (snapshot), length 10, holding Snapshot field 3
# (last_input_seq, fixed32) and field 4 (rtt_ms, float). Fixed width keeps the shared part's
# WebSocket header the same for every client with the same baseline. Built for all seats at
# once as one structured array.
_PERSONAL = np.dtype([("frame_tag", "u1"), ("frame_len", "u1"), ("seq_tag", "u1"),
                      ("seq", "<u4"), ("rtt_tag", "u1"), ("rtt", "<f4")])
_PERSONAL_TAGS = (0x12, 10, 0x1D)
_RTT_TAG = 0x25
assert _PERSONAL.itemsize == 12
_PERSONAL_BYTES = np.dtype((np.void, _PERSONAL.itemsize))  # a record as one bytes value

MAX_NAME_CHARS = 24
_ACKED_TICK = operator.attrgetter("acked_tick")  # a C-level read per seat, no Python loop
_FLUSH_AT_BYTES = BUFFER_BYTES_PER_CMD * FLUSH_AT  # SeatInputs.buffer is packed bytes
TOKEN_SECRET_BYTES = 16
# Characters in otherwise visible categories that render as nothing: the Hangul fillers
# (Lo) and the blank Braille pattern (So). Everything else is judged by its category.
_BLANK_GLYPHS = frozenset("\u115f\u1160\u3164\uffa0\u2800")
_VISIBLE_CATEGORIES = frozenset("LNPS")  # letters, numbers, punctuation, symbols
# What an honest client's view can lag behind the tick its shot is applied in, beyond its
# RTT: the demo client's interpolation delay (2 snapshot intervals plus up to 100 ms for
# jitter), a tick of queueing and a tick of tolerance.
INTERP_ALLOWANCE_MS = 100.0
REWIND_SLACK_TICKS = 4


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


def _visible(char: str) -> bool:
    return unicodedata.category(char)[0] in _VISIBLE_CATEGORIES and char not in _BLANK_GLYPHS


def check_name(name: str) -> str:
    """The display name trimmed, or JoinRefused when it is empty, too long, unprintable or
    made only of characters that show nothing (combining marks, fillers, blanks)."""
    name = name.strip()
    if not 1 <= len(name) <= MAX_NAME_CHARS or not name.isprintable():
        raise JoinRefused(f"name must be 1-{MAX_NAME_CHARS} printable characters")
    if not any(_visible(c) for c in name):
        raise JoinRefused("name must contain a visible character")
    return name


class RoomFullError(Exception):
    """No free seat in this room."""


class JoinRefused(Exception):
    """A Join or Resume that breaks the protocol; `reason` is for the close frame."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(slots=True, eq=False)
class Seat:
    """A player's place in the room. Owned by the room; the gateway reads it.

    `row` indexes the room's per-seat arrays; the numeric state written per tick lives
    there and is read through the properties below."""

    player_id: int
    name: str
    entity: int
    secret: bytes
    row: int
    room: Room = field(repr=False)
    connected: bool = True
    disconnected_at: float = 0.0
    acked_tick: int = 0  # the newest snapshot tick the client acknowledged (0: none)

    @property
    def resume_token(self) -> bytes:
        """player id (4 bytes, big-endian) + a random secret compared in constant time.
        The secret changes on every resume, so a token opens the seat once."""
        return struct.pack("!I", self.player_id) + self.secret

    @property
    def last_queued_seq(self) -> int:
        """The newest accepted command's seq (as of the last flush of the room's inputs)."""
        return self.room._inputs.newest_seq[self.row]

    @property
    def last_applied_seq(self) -> int:
        return int(self.room._inputs.last_applied[self.row])

    @property
    def budget(self) -> int:
        """Movement steps earned but not yet spent."""
        return int(self.room._inputs.budget[self.row])

    @property
    def rtt_ms(self) -> float:
        return float(self.room._rtt_ms[self.row])

    @property
    def queue(self) -> list[tuple[int, float, float, float, bool]]:
        """(seq, move_x, move_y, aim, fire) of the queued commands, oldest first; commands
        received since the last tick are validated and queued first."""
        return self.room.queued_commands(self.player_id)


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
    # Interest management (None without): the chunk fragments written between the shared
    # part (then a per-tick header) and the personal part, each shared by identity between
    # seats; and what to call when the delivery skips this snapshot (the room must resync
    # the seat).
    chunks: tuple[bytes, ...] | None = None
    on_skip: Callable[[], None] | None = None


@dataclass(slots=True)
class TickResult:
    tick: int
    deliveries: list[Delivery]
    expired: list[int]  # player ids whose grace ran out this tick
    # Commands rejected when this tick validated them (deferred checks):
    # (player_id, reason label, count). The gateway charges them to that player.
    input_rejections: list[tuple[int, str, int]] = field(default_factory=list)


class Room:
    """A match. `now` arguments are seconds on the server's monotonic clock.

    `defer_input_checks`: validate commands once per tick in NumPy and report rejections in
    ``TickResult.input_rejections`` (``submit`` then returns only the frame-level reasons:
    no_seat, bad_ack, too_many_cmds); when False, ``submit`` checks each new command at
    once and returns every reason. `max_baselines`: delta baselines encoded per tick at
    most (plus one keyframe), see ``server.baselines``.
    """

    def __init__(self, room_id: str, params: Params, *, now: float = 0.0,
                 params_version: int = 1, defer_input_checks: bool = False,
                 max_baselines: int = DEFAULT_MAX_DELTAS) -> None:
        self.room_id = room_id
        self.params = params
        self.params_version = params_version
        self.recorder: RoomRecorder | None = None
        self._pending_params: tuple[Params, int | None] | None = None
        self.world = World.create(params)
        # Fixed for the room's life: snapshots in flight must decode with the scale the
        # clients were told in Welcome (set_params refuses a world it cannot cover).
        self.pos_scale = codec.pos_scale_for(params.world_width, params.world_height)
        self.history = codec.SnapshotHistory(size=max(64, 2 * params.tick_rate),
                                             tick_rate=params.tick_rate,
                                             pos_scale=self.pos_scale)
        self.interest = (InterestRoom(params, self.world.capacity, self.history)
                         if params.interest_enabled else None)
        self.seats: dict[int, Seat] = {}
        self.created_at = now
        rows = params.max_players  # restart-only, so the per-seat arrays never resize
        self._inputs = SeatInputs(rows, params.input_queue, defer_checks=defer_input_checks)
        self._baselines = BaselinePicker(rows, self.history.size, max_baselines)
        self._free_rows = list(range(rows - 1, -1, -1))  # pop() gives the lowest row
        self._entity = np.zeros(rows, dtype=np.int64)
        self._rtt_ms = np.zeros(rows, dtype=np.float32)
        self._personal = np.zeros(rows, dtype=_PERSONAL)
        self._personal["frame_tag"], self._personal["frame_len"] = _PERSONAL_TAGS[:2]
        self._personal["seq_tag"], self._personal["rtt_tag"] = _PERSONAL_TAGS[2], _RTT_TAG
        self._rejections: list[tuple[int, str, int]] = []
        self._step_inputs = Inputs.empty(self.world.capacity)
        self._views_set = False  # _step_inputs holds a shot's view claim or rewind limit
        self._pre_inputs = Inputs.empty(self.world.capacity)  # scratch for pre_move rounds
        self._pending: dict[int, list[bytes]] = {}  # event frames queued per seat
        self._fire_seq = np.zeros(self.world.capacity, dtype=np.int64)  # per slot, this tick
        self.shot_stats = ShotStats()
        self.last_events: StepEvents | None = None
        self._disconnected: dict[int, Seat] = {}
        self._roster_dirty = False
        self._members_dirty = True
        self._connected: list[Seat] = []
        self._connected_ids: list[int] = []
        self._connected_rows = np.zeros(0, dtype=np.int64)
        self._connected_run: np.ndarray | slice = self._connected_rows
        self.last_state = self._quantize()

    # -- counters (the gateway turns them into metrics) -----------------------------------

    @property
    def defer_input_checks(self) -> bool:
        return self._inputs.defer_checks

    @property
    def inputs_rejected(self) -> Counter[str]:
        """Rejected inputs by reason over the room's life (frame-level and per command)."""
        return self._inputs.rejected

    @property
    def inputs_dropped(self) -> int:
        """Queue overflow: commands older than the queue bound."""
        return self._inputs.dropped

    @property
    def inputs_trimmed(self) -> int:
        """Commands dropped to cut a standing queue (input delay)."""
        return self._inputs.trimmed

    @property
    def baselines_snapped(self) -> int:
        """Seat-snapshots sent against an older baseline than the seat's ack (or as a
        keyframe) because the acks named more baselines than a tick encodes."""
        return self._baselines.snapped

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
        row = self._free_rows.pop()
        seat = Seat(player_id=player_id, name=name, entity=entity,
                    secret=secrets.token_bytes(TOKEN_SECRET_BYTES), row=row, room=self)
        self._entity[row] = entity
        self._rtt_ms[row] = 0.0
        self._inputs.reset(row)
        self._baselines.reset(row)
        if self.interest is not None:
            self.interest.join(row)
        self.seats[player_id] = seat
        if self.recorder is not None:
            self.recorder.on_join(self, player_id, entity)
        self._pending[player_id] = [self._welcome(seat)]
        self._changed_members()
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
        """Reattach a seat to a new socket: same entity, a keyframe next, queue cleared, and
        a fresh resume token (the one just used stops working; the Welcome carries the new
        one), so two holders of a token cannot take the seat back and forth.

        The caller closes any stale socket still attached to the seat. Raises JoinRefused
        when the seat's grace period is over (even if no tick has reaped it yet).
        """
        if not seat.connected and now - seat.disconnected_at >= self.params.resume_grace_s:
            raise JoinRefused("resume token expired")
        self._flush_inputs()  # what the old socket sent is judged (and counted) as before
        seat.connected = True
        self._disconnected.pop(seat.player_id, None)
        seat.acked_tick = 0
        seat.secret = secrets.token_bytes(TOKEN_SECRET_BYTES)
        self._baselines.reset(seat.row)
        if self.interest is not None:
            self.interest.reset(seat.row)
        # The client restarts its sequence numbers on a new socket.
        self._inputs.reset(seat.row)
        self._pending[seat.player_id] = [self._welcome(seat)]
        self._changed_members()

    def disconnect(self, player_id: int, now: float) -> None:
        """The socket went away: keep the seat for the resume grace period."""
        seat = self.seats.get(player_id)
        if seat is None or not seat.connected:
            return
        if self.params.resume_grace_s <= 0:
            self.leave(player_id)
            return
        self._flush_inputs()
        seat.connected = False
        seat.disconnected_at = now
        self._disconnected[player_id] = seat
        self._inputs.clear_queue(seat.row)
        self._changed_members()

    def leave(self, player_id: int) -> None:
        """Free the seat and its entity now."""
        seat = self.seats.get(player_id)
        if seat is None:
            return
        self._flush_inputs()  # before the row is reused
        del self.seats[player_id]
        self._disconnected.pop(player_id, None)
        self.world.remove_player(seat.entity)
        if self.recorder is not None:
            self.recorder.on_leave(self, player_id, seat.entity)
        self._pending.pop(player_id, None)
        self._inputs.reset(seat.row)
        if self.interest is not None:
            self.interest.leave(seat.row)
        self._free_rows.append(seat.row)
        self._changed_members()

    def _changed_members(self) -> None:
        self._roster_dirty = True
        self._members_dirty = True

    def _refresh_members(self) -> None:
        """The per-tick views of the seats, rebuilt only when membership changed."""
        self._connected = [s for s in self.seats.values() if s.connected]
        self._connected_ids = [s.player_id for s in self._connected]
        self._connected_rows = np.array([s.row for s in self._connected], dtype=np.int64)
        rows = self._connected_rows  # the same rows as a slice when they are one run
        run = len(rows) > 0 and bool((np.diff(rows) == 1).all())
        self._connected_run = slice(int(rows[0]), int(rows[-1]) + 1) if run else rows
        self._members_dirty = False

    # -- inputs -------------------------------------------------------------------------

    def submit(self, player_id: int, msg: pb.Input) -> list[str]:
        """Take one Input frame: record its ack and buffer its commands for the next tick.

        Returns the reasons (metric labels) of what was rejected now, [] when nothing was;
        each is also counted in `inputs_rejected`. With `defer_input_checks` the commands
        themselves are judged at the next tick (see ``TickResult.input_rejections``). The
        gateway decides when a client has been rejected often enough to be closed.
        """
        seat = self.seats.get(player_id)
        if seat is None:
            return ["no_seat"]
        rejected: list[str] = []
        ack = msg.ack_tick
        if ack > seat.acked_tick:
            if ack > self.world.tick:
                rejected.append("bad_ack")
            else:
                seat.acked_tick = ack
        elif ack == 0 and seat.acked_tick:
            # 0 is a client saying it lost its baseline: the next snapshot is a keyframe.
            seat.acked_tick = 0
            self._baselines.reset(seat.row)
        inputs = self._inputs
        cmds = msg.cmds
        if len(cmds) > MAX_CMDS_PER_FRAME:
            rejected.append("too_many_cmds")
            cmds = cmds[-MAX_CMDS_PER_FRAME:]
        if rejected:
            for reason in rejected:
                inputs.rejected[reason] += 1
        now_rejected = inputs.receive(seat.row, cmds)
        if now_rejected:
            rejected += now_rejected
        if len(inputs.buffer) >= _FLUSH_AT_BYTES:  # bounds the buffer's memory
            self._flush_inputs()
        return rejected

    def set_rtt(self, player_id: int, rtt_ms: float) -> None:
        seat = self.seats.get(player_id)
        if seat is not None:
            self._rtt_ms[seat.row] = rtt_ms

    def queued_commands(self, player_id: int) -> list[tuple[int, float, float, float, bool]]:
        """(seq, move_x, move_y, aim, fire) queued for a seat, oldest first (received
        commands are validated and queued first)."""
        self._flush_inputs()
        return self._inputs.queued(self.seats[player_id].row)

    def _flush_inputs(self) -> None:
        found = self._inputs.flush(self.params.input_queue)
        if found:
            player_of_row = {s.row: s.player_id for s in self.seats.values()}
            self._rejections.extend((player_of_row[row], reason, count)
                                    for row, reason, count in found)

    # -- live parameters ------------------------------------------------------------------

    def set_params(self, params: Params, now: float, *, version: int | None = None
                   ) -> list[str]:
        """Apply ``params`` at the start of the next tick; returns the restart-only keys
        that differ (they keep their running values). ``version`` is the new
        ``params_version`` (default: the current one + 1). A second call before that tick
        replaces the first. Raises ``ParamsError`` if the live part cannot apply."""
        del now  # the change is tied to the next tick, not to a time
        effective, restart = merge_live_params(self.params, params)
        if codec.pos_scale_for(effective.world_width, effective.world_height) < self.pos_scale:
            raise ParamsError(
                f"world {effective.world_width:g} x {effective.world_height:g} does not fit "
                f"this room's snapshot position scale ({self.pos_scale} per unit, up to "
                f"{65535 // self.pos_scale} units): it needs a restart")
        self._pending_params = (effective, version)
        return restart

    def _apply_pending_params(self) -> None:
        if self._pending_params is None:
            return
        params, version = self._pending_params
        self._pending_params = None
        self.world.set_params(params)
        self.params = params
        if self.interest is not None:
            self.interest.set_params(params)
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
        self._flush_inputs()  # under the parameters the commands arrived with
        self._apply_pending_params()
        expired = self._expire_seats(now)
        if self._members_dirty:
            self._refresh_members()
        self._apply_inputs()
        inputs = self._step_inputs
        if self.recorder is not None:
            self.recorder.on_inputs(self, np.flatnonzero(inputs.active), inputs)
        events = step(self.world, inputs)
        self.last_events = events
        if self.recorder is not None:
            self.recorder.on_stepped(self)
        tick = self.world.tick
        if events.shots:
            self._shots_out(events, tick)
        self.last_state = self._quantize()
        self.history.push(tick, self.last_state)
        roster = self._roster_frame() if self._roster_dirty else None
        self._roster_dirty = False
        rejections, self._rejections = self._rejections, []
        deliveries = (self._deliveries(tick, now, roster) if self.interest is None
                      else self._interest_deliveries(tick, now, roster, events))
        return TickResult(tick=tick, deliveries=deliveries, expired=expired,
                          input_rejections=rejections)

    def _expire_seats(self, now: float) -> list[int]:
        if not self._disconnected:
            return []
        grace = self.params.resume_grace_s
        gone = [s.player_id for s in self._disconnected.values()
                if now - s.disconnected_at >= grace]
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
        inputs = self._step_inputs
        inputs.active[:] = False
        if self._views_set:  # only a tick with a shot sets them and `fire`
            inputs.fire[:] = False
            inputs.clear_views()
            self._views_set = False
        taken = self._inputs.take(self.params.inputs_per_tick, self.params.tick_rate)
        for rows, move, aim in taken.early:
            slots = self._entity[rows]
            pre = self._pre_inputs
            pre.move[slots] = move
            pre.aim[slots] = aim
            pre_move(self.world, slots, pre)
            if self.recorder is not None:
                self.recorder.on_pre_move(self, slots, pre)
        slots = self._entity[taken.rows]
        inputs.move[slots] = taken.move
        inputs.aim[slots] = taken.aim
        inputs.active[slots] = True
        fired = taken.fire
        if fired.any():
            # The shot's seq and claimed view, limited to what the seat's RTT allows (the
            # sim clamps deeper claims and says so).
            shooters = slots[fired]
            inputs.fire[shooters] = True
            self._views_set = True
            shot = taken.shot[fired]  # seq, view tick, next view tick, blend, aim
            self._fire_seq[shooters] = shot[:, 0]
            inputs.view_a[shooters] = shot[:, 1]
            inputs.view_b[shooters] = shot[:, 2]
            inputs.view_blend[shooters] = shot[:, 3]
            # The shot goes where the command that fired it aimed (the player faces that
            # way this tick; a later command of the bunch turns it next tick).
            inputs.aim[shooters] = shot[:, 4]
            # A command that waited in the queue saw an older world by as many ticks:
            # the queue's length before this take is that wait, in ticks.
            rate = self.params.tick_rate
            rows = taken.rows[fired]
            inputs.rewind_limit[shooters] = (
                (self._rtt_ms[rows] + INTERP_ALLOWANCE_MS) * (rate / 1000.0)
                + REWIND_SLACK_TICKS + taken.waited[fired])

    def _shots_out(self, events: StepEvents, tick: int) -> None:
        """Queue this tick's Shots frames: every hitscan shot to every seat, and each
        seat's own projectile shots to it alone; count the rewinds."""
        shots: list[pb.Shot] = []
        h = events.hitscan
        if h is not None:
            p = self.params
            cap = p.max_rewind_ms * p.tick_rate / 1000.0
            rewind_ms = h.depth_ticks * (1000.0 / p.tick_rate)
            by_estimate = h.clamped & (self._step_inputs.rewind_limit[h.shooter] < cap)
            self.shot_stats.add(rewind_ms, h.clamped, by_estimate, h.target >= 0)
            for i in range(h.shooter.size):  # one protobuf message per shot: the frame
                shooter = int(h.shooter[i])
                shots.append(pb.Shot(
                    shooter=shooter, seq=int(self._fire_seq[shooter]),
                    x0=float(h.start[i, 0]), y0=float(h.start[i, 1]),
                    x1=float(h.end[i, 0]), y1=float(h.end[i, 1]),
                    target=int(h.target[i]), rewind_ms=float(rewind_ms[i]),
                    clamped=bool(h.clamped[i])))
        everyone = (pb.ServerFrame(shots=pb.Shots(tick=tick, shots=shots)).SerializeToString()
                    if shots else None)
        own: dict[int, list[pb.Shot]] = {}
        if events.fired_shooter.size:
            gen = self.world.gen
            for shooter, proj in zip(events.fired_shooter.tolist(),
                                     events.fired_projectile.tolist(), strict=True):
                own.setdefault(shooter, []).append(pb.Shot(
                    shooter=shooter, seq=int(self._fire_seq[shooter]), projectile=proj + 1,
                    projectile_gen=int(gen[proj]), target=-1))
        for seat in self.seats.values():
            if not seat.connected:
                continue
            mine = own.get(seat.entity)
            if mine:
                frame = pb.ServerFrame(shots=pb.Shots(tick=tick, shots=shots + mine))
                self._pending.setdefault(seat.player_id, []).append(frame.SerializeToString())
            elif everyone is not None:
                self._pending.setdefault(seat.player_id, []).append(everyone)

    def _quantize(self) -> np.ndarray:
        w = self.world
        return codec.quantize(pos=w.pos, vel=w.vel, hp=w.hp, score=w.score, kind=w.kind,
                              gen=w.gen, aim=w.aim, flags=w.flags, alive=w.alive,
                              pos_scale=self.pos_scale)

    def _deliveries(self, tick: int, now: float, roster: bytes | None) -> list[Delivery]:
        ids = self._connected_ids
        if not ids:
            return []
        rows = self._connected_rows
        acks = np.fromiter(map(_ACKED_TICK, self._connected), np.int64, len(ids))
        baselines = self._baselines.pick(tick, rows, acks)
        # One shared frame per distinct baseline (a handful), then a lookup per seat.
        if len(ids) == 1 or baselines.min() == baselines.max():  # the usual: one baseline
            distinct, which = baselines[:1], [0] * len(ids)
        else:
            distinct, inverse = np.unique(baselines, return_inverse=True)
            which = inverse.tolist()
        shared_frames, keyframes = [], []
        for baseline in distinct.tolist():
            payload, used = self.history.payload_for(tick, baseline)
            # By hand, protobuf's bytes: protobuf's own code costs ~54 µs after the tick
            # loop's sleep, this ~10-20 (proto/snapframe.py).
            shared_frames.append(snapshot_frame(tick, used, self.params_version, payload, now))
            keyframes.append(used == 0)
        if len(shared_frames) == 1:
            shared, keyframe = shared_frames * len(ids), keyframes * len(ids)
        else:
            shared = list(map(shared_frames.__getitem__, which))
            keyframe = list(map(keyframes.__getitem__, which))

        # The tags are filled in once, at construction; a slice of rows is a view.
        sel = self._connected_run
        personal = self._personal[sel]
        personal["seq"] = self._inputs.last_applied[sel]
        personal["rtt"] = self._rtt_ms[sel]
        personals = personal.view(_PERSONAL_BYTES).tolist()  # one bytes object per seat

        pending = self._pending
        if pending or roster is not None:
            frames = [pending.pop(pid, []) for pid in ids]
            if roster is not None:
                for queued in frames:
                    queued.append(roster)
        else:
            frames = [[] for _ in ids]
        return list(map(Delivery, ids, frames, shared, personals, keyframe))

    def _interest_deliveries(self, tick: int, now: float, roster: bytes | None,
                             events: StepEvents) -> list[Delivery]:
        """Chunked snapshots (``server.interestroom``): a per-tick header shared by all,
        the chunk fragments shared by identity, and each seat's personal part."""
        ids = self._connected_ids
        if not ids:
            return []
        interest = self.interest
        assert interest is not None
        seats = self._connected
        rows = [s.row for s in seats]
        w = self.world
        parts = interest.deliveries(
            tick, self.last_state, w.pos, w.alive, rows, [s.entity for s in seats],
            [s.acked_tick for s in seats], (events.hits_shooter, events.hits_target))
        header = pb.ServerFrame(snapshot=pb.Snapshot(
            tick=tick, params_version=self.params_version, server_time=now,
            world_entities=int(np.count_nonzero(w.alive)))).SerializeToString()
        personals = personal_frames(self._inputs.last_applied[self._connected_rows],
                                    self._rtt_ms[self._connected_rows],
                                    [part.personal for part in parts])
        pending = self._pending
        out = []
        for seat, part, personal in zip(seats, parts, personals, strict=True):
            frames = pending.pop(seat.player_id, []) if pending else []
            if roster is not None:
                frames.append(roster)
            out.append(Delivery(seat.player_id, frames, header, personal, part.reset,
                                part.chunks,
                                lambda row=seat.row: interest.skipped(row, tick)))
        return out

    # -- frames -------------------------------------------------------------------------

    def move_params(self) -> pb.MoveParams:
        p = self.params
        return pb.MoveParams(
            world_width=p.world_width, world_height=p.world_height,
            player_accel=p.player_accel, player_max_speed=p.player_max_speed,
            player_friction=p.player_friction, player_radius=p.player_radius,
            projectile_speed=p.projectile_speed,
            fire_cooldown_s=(p.weapon_cooldown_s if p.weapon_kind == "hitscan"
                             else p.fire_cooldown_s),
            respawn_delay_s=p.respawn_delay_s,
            weapon_kind=1 if p.weapon_kind == "hitscan" else 0, weapon_range=p.weapon_range)

    def _welcome(self, seat: Seat) -> bytes:
        return pb.ServerFrame(welcome=pb.Welcome(
            player_id=seat.player_id, room=self.room_id, tick_rate=self.params.tick_rate,
            tick=self.world.tick, entity=seat.entity, params=self.move_params(),
            params_version=self.params_version, resume_token=seat.resume_token,
            protocol_version=PROTOCOL_VERSION,
            # Both absent in the default arena: its Welcome bytes stay as they were.
            pos_scale=self.pos_scale if self.pos_scale != codec.POS_SCALE else 0,
            interest=self.interest.info() if self.interest is not None else None,
        )).SerializeToString()

    def _roster_frame(self) -> bytes:
        return pb.ServerFrame(roster=pb.Roster(players=[
            pb.PlayerInfo(player_id=s.player_id, entity=s.entity, name=s.name,
                          connected=s.connected)
            for s in self.seats.values()
        ])).SerializeToString()
