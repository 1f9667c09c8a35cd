"""Each room's tick task, and the delivery of what a tick returns to the sockets.

`RoomLoops.ensure(room)` starts a room's loop (`tickloop.run_ticks` on the server's one
clock); each tick runs `Room.tick(now)`, hands the result to `deliver`, charges the
room's per-tick input rejections to their connections, and exports the schedule's tick
counters (the schedule owns them: duration, overruns, skipped ticks, tick errors) and
the plain-int `Counts` to Prometheus, every `metrics.FLUSH_EVERY_S` (/metrics flushes
before it renders, so a scrape sees every count).

The room's seats read at the tick (`server.tickreads`) are read in two passes, each over
only the seats with bytes waiting (the room's `SeatPoller`): a pre-read a few milliseconds
before the deadline (`pre_read`, a timer set after each tick), which takes most of a tick's
inputs, and at the deadline (`read_seats`), which takes those that came in since. The
server wakes twice per tick instead of once per input, and the reads' time sits before the
deadline rather than between it and the snapshots: reading everything at the deadline made
every snapshot leave ~3 ms later at 200 clients (bench/results/issue12-tick-reads.md).

Delivery never awaits a client: frames are written with `transport.write` (buffers,
never blocks). The send buffer size decides whether a client gets this tick's snapshot
(`OutboundPolicy`); a client stalled for too long is aborted. Each snapshot's shared part
and its WebSocket header are built once per baseline and shared by every seat on it.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

from server.clock import Clock
from server.connection import Connection
from server.errors import CLOSE_GOING_AWAY, CLOSE_POLICY
from server.framing import OP_BINARY, OP_PING, ws_frame, ws_header
from server.lobby import Lobby
from server.metrics import Metrics
from server.protocol import State
from server.room import Room, TickResult
from server.tickloop import TickPlan, TickSchedule, run_ticks
from server.tickreads import SeatPoller

__all__ = ["RoomLoops"]

log = logging.getLogger("tickwire.gateway")

# After the loop fell behind (GC, VM steal, SIGSTOP), replies that clients sent during
# the pause may still be unread: liveness closes (ping timeout, idle, stall) wait this long.
LIVENESS_GRACE_S = 1.0
# The pre-read starts this long before the deadline, plus twice its recent duration, so
# it ends before the tick (timers have whole-millisecond resolution), but at most a third
# of a period: inputs that arrive later are read at the deadline anyway.
PRE_READ_MARGIN_S = 0.002
PRE_READ_SMOOTHING = 0.2  # weight of the newest pre-read's duration in the running mean
_JOINED = State.JOINED  # Connection.open without the property call, per seat per tick


@dataclass(slots=True)
class _Loop:
    task: asyncio.Task
    stop: asyncio.Event
    schedule: TickSchedule
    seats: SeatPoller[Connection] | None  # the room's seats read at the tick (None: none can be)
    exported: tuple[int, int, int] = (0, 0, 0)  # skipped, overruns, errors already exported
    room_drops: tuple[int, int] = (0, 0)  # queue overflow, trimmed already exported
    players: int = -1  # the room's players gauge as last set
    pre_read: asyncio.TimerHandle | None = None  # the next pre-read, once set
    pre_read_s: float = 0.0  # running mean of a pre-read's duration

    def close(self) -> None:
        self.stop.set()
        if self.pre_read is not None:
            self.pre_read.cancel()
        if self.seats is not None:
            self.seats.close()


def _seat_poller(room_id: str) -> SeatPoller[Connection] | None:
    """The room's poller, or None (its seats are then read on arrival) when the process
    cannot open one more descriptor: a full descriptor table must not fail a join."""
    try:
        return SeatPoller()
    except OSError as exc:
        log.warning("room %s reads its seats on arrival: %s", room_id, exc,
                    extra={"room": room_id})
        return None


class RoomLoops:
    """The tick tasks of every open room. `connections` is the gateway's registry of
    joined connections by player id (read here, never changed)."""

    def __init__(self, lobby: Lobby, clock: Clock, metrics: Metrics,
                 connections: dict[int, Connection]) -> None:
        self.lobby = lobby
        self.clock = clock
        self.metrics = metrics
        self.connections = connections
        self._loops: dict[str, _Loop] = {}
        # Set by the gateway: whether seats are still reserved in a room (it stays), and
        # told of each room disposed of (the fleet retires it in the registry).
        self.busy: Callable[[str], bool] | None = None
        self.on_disposed: Callable[[str], None] | None = None
        self._liveness_from = 0.0  # no liveness closes before this time (see above)

    def ensure(self, room: Room) -> None:
        """Start the room's tick loop unless it runs."""
        if room.room_id in self._loops:
            return
        schedule = TickSchedule(room.params.tick_rate, self.clock.now())
        stop = asyncio.Event()
        entry: _Loop
        task = asyncio.get_running_loop().create_task(
            run_ticks(schedule, self.clock, lambda now: self.tick_room(room, now), stop,
                      on_plan=self._on_plan,
                      on_recorded=lambda: self._after_tick(entry, room)),
            name=f"tick-{room.room_id}")
        entry = _Loop(task, stop, schedule, _seat_poller(room.room_id))
        self._loops[room.room_id] = entry
        self.metrics.rooms.set(len(self._loops))

    def schedule_for(self, room_id: str) -> TickSchedule | None:
        entry = self._loops.get(room_id)
        return entry.schedule if entry else None

    def seat_poller(self, room_id: str) -> SeatPoller[Connection] | None:
        """Where a seat of this room registers to be read at the tick (None: no loop)."""
        entry = self._loops.get(room_id)
        return entry.seats if entry else None

    async def stop(self) -> None:
        """Stop every loop (bounded wait, then cancel)."""
        for entry in self._loops.values():
            entry.close()
        tasks = [entry.task for entry in self._loops.values()]
        self._loops.clear()
        if tasks:
            _, pending = await asyncio.wait(tasks, timeout=2.0)
            for task in pending:
                task.cancel()
            if pending:
                await asyncio.wait(pending, timeout=1.0)

    # -- one tick -----------------------------------------------------------------------

    def tick_room(self, room: Room, now: float) -> None:
        wall, cpu = time.perf_counter(), time.thread_time()
        self.read_seats(room, now)
        result = room.tick(now)
        self.deliver(result, now)
        self.metrics.counts.tick_off_cpu.append(
            max(0.0, (time.perf_counter() - wall) - (time.thread_time() - cpu)))
        self.charge_input_rejections(result, now)
        self._count_room_drops(room)
        for player_id in result.expired:
            log.info("seat expired", extra={"player": player_id, "room": room.room_id})
        if room.tick_number % (room.params.tick_rate * 10) == 0:
            self._reap(now)

    def read_seats(self, room: Room, now: float) -> None:
        """What the room's seats read at the tick sent and is not read yet (`tickreads`):
        only the sockets with bytes waiting are read."""
        entry = self._loops.get(room.room_id)
        if entry is None or not entry.seats:  # None, or no seat read at the tick
            return
        wall_now = time.time()
        for conn in entry.seats.ready():
            conn.read_at_tick(now, wall_now)  # returns at once if it stopped meanwhile

    def pre_read(self, entry: _Loop, room: Room) -> None:
        """The timer's pass, before the deadline (see the module docstring)."""
        entry.pre_read = None
        if entry.stop.is_set():
            return
        started = time.perf_counter()
        try:
            self.read_seats(room, self.clock.now())
        except Exception:  # a bug: the connection shell catches what a client can cause
            log.exception("pre-read failed", extra={"room": room.room_id})
        took = time.perf_counter() - started
        entry.pre_read_s += (took - entry.pre_read_s) * PRE_READ_SMOOTHING

    def _set_pre_read(self, entry: _Loop, room: Room) -> None:
        if not entry.seats or entry.stop.is_set():
            return
        schedule = entry.schedule
        lead = min(PRE_READ_MARGIN_S + 2.0 * entry.pre_read_s, schedule.period_s / 3.0)
        delay = schedule.next_deadline - lead - self.clock.now()
        if delay > 0.0:
            entry.pre_read = asyncio.get_running_loop().call_later(
                delay, self.pre_read, entry, room)

    def _on_plan(self, plan: TickPlan) -> None:
        if plan.run:
            self.metrics.counts.tick_jitters.append(plan.jitter_s)
        if plan.skipped:
            self._liveness_from = self.clock.now() + LIVENESS_GRACE_S

    def _after_tick(self, entry: _Loop, room: Room) -> None:
        self._export(entry, room)
        if entry.pre_read is None:  # one per deadline, also after a catch-up batch
            self._set_pre_read(entry, room)

    def _export(self, entry: _Loop, room: Room) -> None:
        """After each tick: the schedule's counters exported, and the plain-int counts
        every FLUSH_EVERY_S."""
        s = entry.schedule
        m = self.metrics
        m.counts.tick_durations.append(s.last_duration_s)
        per_room = m.for_room(room.room_id)
        per_room.tick_duration.observe(s.last_duration_s)
        if len(room.seats) != entry.players:
            entry.players = len(room.seats)
            per_room.players.set(entry.players)
        if room.interest is not None:
            per_room.interest_oldest_age.set(room.interest.oldest_age_s)
        skipped, overruns, errors = entry.exported
        if s.ticks_skipped != skipped:
            m.ticks_skipped.inc(s.ticks_skipped - skipped)
        if s.overruns != overruns:
            m.tick_overruns.inc(s.overruns - overruns)
        if s.tick_errors != errors:
            m.tick_errors.inc(s.tick_errors - errors)
        entry.exported = (s.ticks_skipped, s.overruns, s.tick_errors)
        m.flush_if_due(self.clock.now())

    def charge_input_rejections(self, result: TickResult, now: float) -> None:
        """Inputs the room rejected at its tick, (player id, reason, count): counted, and
        charged to the sender's abuse budget like rejections from `Room.submit`."""
        for player_id, reason, count in result.input_rejections:
            conn = self.connections.get(player_id)
            if conn is None:
                self.metrics.counts.input_rejected(reason, count)
                continue
            events = conn.protocol.charge_rejections(reason, count, now)
            if events:
                conn.flush()
                conn.apply(events)

    def _count_room_drops(self, room: Room) -> None:
        """Commands the room dropped (queue overflow, standing-queue trim), counted."""
        entry = self._loops.get(room.room_id)
        if entry is None:
            return
        now_counts = (room.inputs_dropped, room.inputs_trimmed)
        seen = entry.room_drops
        if now_counts != seen:
            counts = self.metrics.counts
            if now_counts[0] != seen[0]:
                counts.input_rejected("queue_overflow", now_counts[0] - seen[0])
            if now_counts[1] != seen[1]:
                counts.input_rejected("queue_trimmed", now_counts[1] - seen[1])
            entry.room_drops = now_counts
        m = self.metrics
        room.shot_stats.export(m.hitscan_rewind, m.hitscan_shots, m.hitscan_clamped,
                               m.hitscan_hits)

    def _reap(self, now: float) -> None:
        for room in self.lobby.reap(now, busy=self.busy):
            if self.on_disposed is not None:
                self.on_disposed(room.room_id)
            entry = self._loops.pop(room.room_id, None)
            if entry is not None:
                entry.close()
            self.metrics.forget_room(room.room_id)
            log.info("room disposed", extra={"room": room.room_id})
        self.metrics.rooms.set(len(self._loops))

    # -- delivery -----------------------------------------------------------------------

    def deliver(self, result: TickResult, now: float) -> None:
        """Write each seat's frames and snapshot; skip, ping, or close as policy says."""
        counts = self.metrics.counts
        get_conn = self.connections.get
        skipped = frames_bytes = 0
        # Per distinct shared snapshot part (one per baseline): [header + shared part,
        # seats sent, keyframe, frame size]. The per-client part has a fixed length, so
        # the header is the same for every client that shares it, and sizes and counts
        # are summed per group after the loop instead of per seat.
        groups: dict[int, list] = {}
        check_liveness = now >= self._liveness_from
        for d in result.deliveries:
            conn = get_conn(d.player_id)
            if conn is None or conn.protocol.state is not _JOINED:
                continue
            if d.frames:
                write = conn.write
                for frame in d.frames:
                    data = ws_frame(OP_BINARY, frame)
                    write(data)
                    frames_bytes += len(data)
            session = conn.session
            pings = session.pings
            ping = None
            if now >= pings.due_at:  # a plain float: no call for the seats not due
                payload = pings.poll(now)
                if payload is not None:
                    # Written with the snapshot: one syscall per seat per tick, ping included.
                    ping = ws_frame(OP_PING, payload)
                    conn.time_pong()
            if session.outbound.admit(conn.transport.get_write_buffer_size(), now):
                shared = d.snapshot_shared
                if d.chunks is not None:  # interest management: header, shared chunks, personal
                    # Each seat has its own set of chunks: a group of one (keyed by the
                    # delivery, alive for the whole loop, so its id is unique).
                    body = len(shared) + sum(map(len, d.chunks)) + len(d.snapshot_personal)
                    head = ws_header(OP_BINARY, body)
                    if ping is None:
                        conn.writelines((head, shared, *d.chunks, d.snapshot_personal))
                    else:
                        conn.writelines((head, shared, *d.chunks, d.snapshot_personal, ping))
                    groups[id(d)] = [head, 1, d.keyframe, len(head) + body]
                else:
                    group = groups.get(id(shared))
                    if group is None:
                        length = len(shared) + len(d.snapshot_personal)
                        prefix = ws_header(OP_BINARY, length) + shared
                        group = groups[id(shared)] = [prefix, 0, d.keyframe,
                                                      len(prefix) + len(d.snapshot_personal)]
                    if ping is None:
                        conn.writelines((group[0], d.snapshot_personal))
                    else:
                        conn.writelines((group[0], d.snapshot_personal, ping))
                    group[1] += 1
            else:
                skipped += 1
                if d.on_skip is not None:
                    d.on_skip()
                if check_liveness and session.outbound.stalled(now):
                    conn.close(CLOSE_POLICY, "send buffer stalled", label="stalled_reader",
                               abort=True)
                    continue
                if ping is not None:
                    conn.write(ping)
            if ping is not None:
                frames_bytes += len(ping)
                continue
            if not check_liveness:
                continue
            # PingTracker.timed_out and Session.idle as float compares (per seat per tick).
            if now > pings.timeout_at:
                conn.close(CLOSE_GOING_AWAY,
                           f"no pong within {session.limits.ping_timeout_s:g} s",
                           label="ping_timeout")
            elif now - session.last_frame_at > session.limits.idle_timeout_s:
                conn.close(CLOSE_POLICY, f"no input for {session.limits.idle_timeout_s:g} s",
                           label="idle")
        sent = keyframes = 0
        sizes = counts.snapshot_sizes
        for _, n, keyframe, size in groups.values():
            sizes[size] = sizes.get(size, 0) + n
            frames_bytes += size * n
            sent += n
            keyframes += n if keyframe else 0
        counts.bytes_sent += frames_bytes
        counts.snapshots_sent += sent
        counts.keyframes_sent += keyframes
        counts.snapshots_skipped += skipped
