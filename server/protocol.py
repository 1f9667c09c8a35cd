"""One client connection as a sans-I/O protocol object (in the manner of h11 and
python-websockets' ServerProtocol).

Theory of operation
-------------------
The gateway upgrades the HTTP request, then hands every read from the socket to
`ConnectionProtocol.receive_data(data, now)`. The object parses the bytes into wire
frames (`server.framing`), charges each one to the connection's budget, and decides what
it means: join, resume, submit an input, answer a ping, leave, or refuse. It never
touches a socket or a clock: bytes to write pile up in `outbox` (the shell writes and
clears it), and what the shell must act on comes back as events (`Joined`, `Closing`,
`Closed`). `close()` is the one way to start a close; `state`, `close_code`,
`close_reason` and `close_label` are readable at any time. Rooms and the lobby are
sans-I/O too, so the protocol calls them directly: every rule is a unit test.

States and transitions (everything not listed is refused with a close, or ignored where
the last column says so):

=============  ==============================  =============  =========================
state          input                           next state     what happens
=============  ==============================  =============  =========================
AWAITING_JOIN  Join (version, name ok, seat)   JOINED         Joined event; Welcome
AWAITING_JOIN  Resume (token ok, in grace)     JOINED         Joined(resumed); Welcome
AWAITING_JOIN  Join/Resume while draining      CLOSING        1001 draining
AWAITING_JOIN  Input, Ping, Leave              CLOSING        1008 before_join
AWAITING_JOIN  join deadline (`poll`)          CLOSING        1008 join_timeout
JOINED         Input                           JOINED         room.submit; rejections
                                                              charged to the abuse budget
JOINED         Ping                            JOINED         Pong
JOINED         Leave                           CLOSING        seat freed; 1000 left
JOINED         Join, Resume                    CLOSING        1008 already_joined
open           WS PING / PONG                  same           PONG answered / RTT sample
open           bad frame, over a limit         CLOSING        the ProtocolError's code
open           peer Close frame                CLOSED         close echoed; Closed event
open           `close(code, reason, label)`    CLOSING        Kick (policy closes) + Close
CLOSING        peer Close frame                CLOSED         Closed event
CLOSING        any other frame                 CLOSING        ignored (the peer may not
                                                              have seen our Close yet)
CLOSING        64 KiB read since our Close     CLOSED         Closed event (stop waiting)
any            `connection_lost()`             CLOSED         -
=============  ==============================  =============  =========================

Every wire frame (data, fragment, continuation, control) is charged to the inbound
budget before anything else is done with it; over budget it is dropped and counted, and
too many drops close the connection (1008 flood). Counts go to plain integers in
`Counts`, flushed to Prometheus every 0.25 s and before each /metrics render.

Policy closes (1008, 1001) send a `Kick` first carrying the label and whether
reconnecting can help; `KICKS` is the one table that says which.
"""

from __future__ import annotations

import enum
import logging
import math
import struct
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from google.protobuf.message import DecodeError

from proto import tickwire_pb2 as pb
from server.errors import (
    CLOSE_GOING_AWAY,
    CLOSE_INTERNAL_ERROR,
    CLOSE_NORMAL,
    CLOSE_POLICY,
    CLOSE_PROTOCOL_ERROR,
    CLOSE_UNSUPPORTED,
    ProtocolError,
)
from server.framing import (
    OP_BINARY,
    OP_CLOSE,
    OP_FRAGMENT,
    OP_PING,
    OP_PONG,
    FrameParser,
    close_frame,
    ws_frame,
)
from server.handshake import SeatClaim
from server.lobby import Lobby, LobbyFullError
from server.metrics import Counts
from server.room import JoinRefused, Room, RoomFullError, check_name
from server.session import Session, check_version, parse_client_frame

__all__ = [
    "KICKS",
    "Closed",
    "Closing",
    "ConnectionProtocol",
    "Joined",
    "Seating",
    "State",
]

log = logging.getLogger("tickwire.protocol")


class State(enum.Enum):
    AWAITING_JOIN = "awaiting_join"
    JOINED = "joined"
    CLOSING = "closing"
    CLOSED = "closed"


#: label -> (retry, retry_after_s) for every close that sends a Kick. retry False: a
#: permanent refusal, reconnecting the same way will not help; True: a transient drop.
KICKS: dict[str, tuple[bool, int]] = {
    # permanent: the client (or its user) must change something first
    "bad_version": (False, 0),
    "bad_join": (False, 0),
    "bad_resume": (False, 0),
    "kicked": (True, 60),  # with the ban's own time left, see Gateway.kick
    "banned": (True, 60),
    "before_join": (False, 0),
    "already_joined": (False, 0),
    "empty_frame": (False, 0),
    "flood": (False, 0),
    "bad_pong": (False, 0),
    "token_missing": (False, 0),  # matchmake first
    "invalid_inputs": (False, 0),
    "fragments": (False, 0),
    # another connection resumed this seat: reconnecting would take it back and forth
    "replaced": (False, 0),
    # transient: the same client may come back
    "server_full": (True, 2),
    "draining": (True, 5),
    "idle": (True, 0),
    "join_timeout": (True, 0),
    "ping_timeout": (True, 0),
    "stalled_reader": (True, 0),
}
_KICK_CODES = (CLOSE_POLICY, CLOSE_GOING_AWAY)


class Seating(Protocol):
    """What a connection needs from the server to seat a player."""

    lobby: Lobby
    draining: bool


@dataclass(frozen=True, slots=True)
class Joined:
    """The connection now holds a seat (`resumed`: an existing one, retaken)."""

    room: Room
    player_id: int
    entity: int
    resumed: bool


@dataclass(frozen=True, slots=True)
class Closing:
    """The server started a close: the shell logs it, then waits for the peer's Close (at
    most its close timeout) or, with `abort`, drops the TCP connection at once."""

    code: int
    reason: str
    label: str
    abort: bool


@dataclass(frozen=True, slots=True)
class Closed:
    """The closing handshake is over: the shell closes the transport."""

    code: int  # what the server sent, or the peer's code if the peer closed first


Event = Joined | Closing | Closed
_AWAITING_JOIN, _JOINED, _CLOSING, _CLOSED = (State.AWAITING_JOIN, State.JOINED,
                                              State.CLOSING, State.CLOSED)
# After our Close, a peer that keeps sending is read only this far before we stop
# waiting for its Close (its frames are ignored anyway; parsing them costs CPU).
CLOSING_READ_LIMIT = 64 * 1024
_U16 = struct.Struct("!H")
_parse_client_frame = pb.ClientFrame.FromString  # raises DecodeError, as ParseFromString


class ConnectionProtocol:
    """One WebSocket connection's rules, without the socket. See the module docstring."""

    def __init__(self, session: Session, seating: Seating, counts: Counts,
                 peer_ip: str | None = None) -> None:
        self.session = session
        self.peer_ip = peer_ip  # what an admin's address ban matches
        self.seating = seating
        self.counts = counts
        self.parser = FrameParser(session.frame_limits)
        self.state = State.AWAITING_JOIN
        self.room: Room | None = None
        self.outbox: list[bytes] = []
        self.close_code: int | None = None  # the code the server sent, if it closed
        self.close_reason = ""
        self.close_label = ""
        self._held = 0.0  # how long the read being handled waited (see receive_data)
        self.peer_close_code: int | None = None  # the code in the peer's Close frame
        self._read_while_closing = 0
        self._burst_frames = session.limits.frame_burst
        # A read holding exactly one input frame takes `_receive_input`, which does what
        # the general loop does for it with fewer calls. False sends every read through
        # the general loop (a conformance test runs both on the same reads). Off when a
        # single frame is over the burst, so the backlog log line stays the general loop's.
        self.fast_path = self._burst_frames >= 1
        self.join_deadline = session.opened_at + session.limits.join_timeout_s
        self.claim: SeatClaim | None = None  # the seat token the socket came with
        # Set by the server shell: the room a Join goes to (the seat token's, or one with
        # a free seat); may raise ProtocolError, RoomFullError or LobbyFullError. None:
        # the lobby's first room with a free seat.
        self.room_for_join: Callable[[float], Room] | None = None

    # -- input ------------------------------------------------------------------------

    def receive_data(self, data: bytes, now: float, held: float = 0.0) -> list[Event]:
        """Handle one read from the socket; returns the events for the shell. `now` is
        when the bytes arrived; `held`, how long they waited to be read (reads at the
        tick): a Pong answering a Ping among them says so."""
        events: list[Event] = []
        state = self.state
        if state is _CLOSED:
            return events
        if state is _CLOSING:
            self._read_while_closing += len(data)
            if self._read_while_closing > CLOSING_READ_LIMIT:
                self.state = State.CLOSED
                events.append(Closed(self.close_code or CLOSE_POLICY))
                return events
        elif state is _JOINED and self.fast_path and self.room is not None:
            payload = self.parser.whole_binary(data)
            if payload is not None:
                # Parsed before anything is charged, so a frame that is not a valid Input
                # falls back to the general loop with nothing done twice.
                try:
                    msg = _parse_client_frame(payload)
                except DecodeError:
                    msg = None
                if msg is not None and msg.WhichOneof("kind") == "input":
                    return self._receive_input(msg.input, len(data), now)
        session = self.session
        self._held = held
        budget = session.budget
        silence = now - session.last_read_at
        session.last_read_at = now
        budget.refill(now)
        parser = self.parser
        frames = dropped = 0
        counts = self.counts
        counts.bytes_received += len(data)
        parser.feed(data)
        while True:
            try:
                frame = parser.next_frame()
                if frame is None:
                    break
                opcode, payload = frame
                if self.state is _CLOSING and opcode != OP_CLOSE:
                    continue
                frames += 1
                if not budget.spend(parser.wire_bytes):
                    dropped += 1
                    self._drop("rate_limited", "flood", "too many frames: rate limit exceeded",
                               now, events)
                    continue
                if opcode == OP_BINARY:
                    session.last_frame_at = now
                    msg = parse_client_frame(payload)
                    if self.state is _JOINED and msg.WhichOneof("kind") == "input":
                        # The hot path (`_submit` inlined): nothing rejected, no call more.
                        rejected = self.room.submit(session.player_id, msg.input) \
                            if self.room is not None else None
                        if rejected:
                            self._charge_submit(rejected, now, events)
                    else:
                        self.receive(msg, now, events)
                elif opcode == OP_FRAGMENT:
                    continue
                elif opcode == OP_PONG:
                    self._on_pong(payload, now, events)
                elif opcode == OP_PING:
                    self.outbox.append(ws_frame(OP_PONG, payload))
                elif opcode == OP_CLOSE:
                    self._on_peer_close(payload, events)
                    return events
                else:  # a whole text message
                    session.last_frame_at = now
                    raise ProtocolError(CLOSE_UNSUPPORTED, "text_frame",
                                        "binary protobuf frames only")
            except ProtocolError as err:
                self._refuse(err, events)
                break
            except Exception:
                # A bug handling this client's frame: this client goes, nobody else notices.
                log.exception("error handling a frame", extra={"player": session.player_id})
                self._refuse(ProtocolError(CLOSE_INTERNAL_ERROR, "internal_error",
                                           "internal error"), events, log_it=False)
                break
            if self.state is _CLOSED:
                break
        if frames > self._burst_frames and not dropped and self.state is _JOINED:
            # More in one read than a burst, and all of it admitted: frames the client
            # queued during a silence (its network stalled, or this server paused).
            counts.backlogs += 1
            log.info("backlog after a silence of %.1f s: %d frames", silence, frames,
                     extra={"player": session.player_id, "label": "backlog"})
        return events

    def _receive_input(self, msg: pb.Input, wire_bytes: int, now: float) -> list[Event]:
        """A read that was one whole Input frame, while joined: exactly what the general
        loop of `receive_data` does for it (charge the read and the frame, count, submit),
        without the parser's buffering and the per-frame dispatch."""
        events: list[Event] = []
        session = self.session
        session.last_read_at = now
        self.counts.bytes_received += wire_bytes
        try:
            if not session.budget.charge_read(now, wire_bytes):
                self._drop("rate_limited", "flood", "too many frames: rate limit exceeded",
                           now, events)
                return events
            session.last_frame_at = now
            assert self.room is not None  # checked by the caller
            rejected = self.room.submit(session.player_id, msg)
            if rejected:
                self._charge_submit(rejected, now, events)
        except ProtocolError as err:
            self._refuse(err, events)
        except Exception:
            log.exception("error handling a frame", extra={"player": session.player_id})
            self._refuse(ProtocolError(CLOSE_INTERNAL_ERROR, "internal_error",
                                       "internal error"), events, log_it=False)
        return events

    def receive(self, frame: pb.ClientFrame, now: float, events: list[Event]) -> None:
        """One parsed ClientFrame in the current state (see the table)."""
        kind = frame.WhichOneof("kind")
        state = self.state
        if state is State.JOINED:
            if kind == "input":
                self._submit(frame.input, now, events)
            elif kind == "ping":
                self._pong(frame.ping, now)
            elif kind == "leave":
                self._leave(events)
            else:
                raise ProtocolError(CLOSE_POLICY, "already_joined", f"{kind} after joining")
        elif state is State.AWAITING_JOIN:
            if kind in ("join", "resume") and self.seating.draining:
                raise ProtocolError(CLOSE_GOING_AWAY, "draining", "server shutting down")
            if kind == "join":
                self._join(frame.join, now, events)
            elif kind == "resume":
                self._resume(frame.resume, now, events)
            else:
                raise ProtocolError(CLOSE_POLICY, "before_join", f"{kind} before Join")

    def poll(self, now: float) -> list[Event]:
        """Deadlines that do not depend on the room's tick: the Join deadline (absolute,
        so frames that are not a Join never extend it)."""
        events: list[Event] = []
        if self.state is State.AWAITING_JOIN and now >= self.join_deadline:
            self._refuse(ProtocolError(CLOSE_POLICY, "join_timeout",
                                       f"no Join within {self.session.limits.join_timeout_s:g} s"),
                         events)
        return events

    def connection_lost(self) -> None:
        """The transport is gone (EOF, reset, abort)."""
        self.state = State.CLOSED

    # -- closing ----------------------------------------------------------------------

    def close(self, code: int, reason: str, *, label: str, abort: bool = False,
              retry_after_s: int | None = None) -> list[Event]:
        """Start closing: a Kick for policy closes, then the Close frame. Idempotent.
        `retry_after_s` (a kick's or a ban's time left) overrides the table: the client
        may come back, but not before then."""
        if self.state in (State.CLOSING, State.CLOSED):
            return []
        self.state = State.CLOSING
        self.close_code, self.close_reason, self.close_label = code, reason, label
        if code in _KICK_CODES:
            retry, after = KICKS.get(label, (True, 0))
            if retry_after_s is not None:
                retry, after = True, retry_after_s
            kick = pb.Kick(code=code, reason=reason, label=label, retry=retry,
                           retry_after_s=after)
            self.outbox.append(ws_frame(OP_BINARY,
                                        pb.ServerFrame(kick=kick).SerializeToString()))
        self.outbox.append(close_frame(code, reason))
        return [Closing(code, reason, label, abort)]

    def _refuse(self, err: ProtocolError, events: list[Event], *, log_it: bool = True
                ) -> None:
        self.counts.frame_rejected(err.label)
        if log_it:
            log.info("refused client: %s", err.reason,
                     extra={"player": self.session.player_id, "code": err.code,
                            "label": err.label})
        events.extend(self.close(err.code, err.reason, label=err.label,
                                 retry_after_s=err.retry_after_s))

    def _drop(self, count_label: str, close_label: str, reason: str, now: float,
              events: list[Event]) -> None:
        """A frame dropped (counted); too many drops in the window close the connection."""
        self.counts.frame_rejected(count_label)
        if self.session.abuse.record_drop(now) and self.state is not State.CLOSING:
            self._refuse(ProtocolError(CLOSE_POLICY, close_label, reason), events)

    def _on_peer_close(self, payload: bytes, events: list[Event]) -> None:
        code = 1005  # "no status received"
        if len(payload) >= 2:
            (code,) = _U16.unpack_from(payload)
        elif payload:
            code = CLOSE_PROTOCOL_ERROR
        self.peer_close_code = code
        if self.state is not State.CLOSING:
            # Echo the close (RFC 6455 §5.5.1); 1005 must not be sent on the wire.
            self.outbox.append(close_frame(CLOSE_NORMAL if code == 1005 else code, ""))
        self.state = State.CLOSED
        events.append(Closed(self.close_code if self.close_code is not None else code))

    # -- the rules ------------------------------------------------------------------------

    def _on_pong(self, payload: bytes, now: float, events: list[Event]) -> None:
        session = self.session
        sample = session.pings.on_pong(payload, now)
        if sample is None:
            self._drop("bad_pong", "bad_pong", "too many unsolicited or forged pongs", now,
                       events)
            return
        self.counts.rtt_samples.append(sample)
        if self.room is not None:
            self.room.set_rtt(session.player_id, session.pings.rtt.srtt_s * 1000.0)

    def _pong(self, ping: pb.Ping, now: float) -> None:
        assert self.room is not None
        pong = pb.Pong(client_time=ping.client_time, server_time=now,
                       server_tick=self.room.tick_number, held=self._held)
        self.outbox.append(ws_frame(OP_BINARY, pb.ServerFrame(pong=pong).SerializeToString()))

    def _submit(self, msg: pb.Input, now: float, events: list[Event]) -> None:
        room = self.room
        if room is None:
            return
        rejected = room.submit(self.session.player_id, msg)
        if rejected:
            self._charge_submit(rejected, now, events)

    def _charge_submit(self, rejected: list[str], now: float, events: list[Event]) -> None:
        """What `Room.submit` rejected, charged one by one until the connection closes."""
        for reason in rejected:
            events.extend(self.charge_rejections(reason, 1, now))
            if self.state is not State.JOINED:
                return

    def charge_rejections(self, reason: str, n: int, now: float) -> list[Event]:
        """`n` rejected inputs (from submit, or the room's per-tick validation): counted,
        and charged to the abuse budget that closes a client sending mostly garbage."""
        self.counts.input_rejected(reason, n)
        events: list[Event] = []
        for _ in range(n):  # at most max_drops + 1 rounds: then it has tripped
            if self.session.record_drop(now):
                if self.state is State.JOINED:
                    self._refuse(ProtocolError(CLOSE_POLICY, "invalid_inputs",
                                               f"too many invalid inputs (last: {reason})"),
                                 events)
                break
        return events

    def _join(self, join: pb.Join, now: float, events: list[Event]) -> None:
        check_version(join.protocol_version)
        lobby = self.seating.lobby
        try:
            check_name(join.name)  # before a room might be created for this player
            banned_s = lobby.bans.remaining(now, name=join.name, address=self.peer_ip)
            if banned_s > 0:
                wait_s = math.ceil(banned_s)
                raise ProtocolError(CLOSE_POLICY, "banned",
                                    f"kicked by an admin: try again in {wait_s} s", wait_s)
            room = (self.room_for_join(now) if self.room_for_join is not None
                    else lobby.room_with_free_seat(now)[0])
            seat = room.join(lobby.next_player_id(), join.name, now)
        except JoinRefused as exc:
            raise ProtocolError(CLOSE_POLICY, "bad_join", exc.reason) from None
        except (RoomFullError, LobbyFullError):
            raise ProtocolError(CLOSE_POLICY, "server_full", "server full") from None
        self._seated(room, seat.player_id, seat.entity, False, events)

    def _resume(self, resume: pb.Resume, now: float, events: list[Event]) -> None:
        check_version(resume.protocol_version)
        found = self.seating.lobby.find_by_token(bytes(resume.token))
        if found is None:
            raise ProtocolError(CLOSE_POLICY, "bad_resume", "resume token unknown or expired")
        room, seat = found
        try:
            room.resume(seat, now)
        except JoinRefused as exc:
            raise ProtocolError(CLOSE_POLICY, "bad_resume", exc.reason) from None
        self._seated(room, seat.player_id, seat.entity, True, events)

    def _seated(self, room: Room, player_id: int, entity: int, resumed: bool,
                events: list[Event]) -> None:
        self.state = State.JOINED
        self.room = room
        self.session.player_id = player_id
        self.session.room_id = room.room_id
        events.append(Joined(room, player_id, entity, resumed))

    def _leave(self, events: list[Event]) -> None:
        room, player_id = self.room, self.session.player_id
        if room is not None:
            room.leave(player_id)
        self.room = None
        log.info("player left", extra={"player": player_id, "label": "left"})
        events.extend(self.close(CLOSE_NORMAL, "left", label="left"))

    def detach(self) -> None:
        """Forget the room (the seat was given to another connection, or freed)."""
        self.room = None
