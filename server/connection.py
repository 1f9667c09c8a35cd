"""The I/O half of one client connection: bytes from the socket into its
`ConnectionProtocol`, the protocol's outbox onto the transport, and the close timers.

aiohttp does the HTTP upgrade; then `Connection` is installed as the request handler's
payload parser (`RequestHandler.set_parser`, which hands it the bytes read with the
head), and `WebSocketReads` takes aiohttp's `RequestHandler` out of the data path
(`transport.set_protocol`): every later read goes straight from the event loop to
`feed_data`, with no Future, queue hop, message object or aiohttp layer per read. Once the
client holds a seat, the gateway may switch it to reads at the tick
(`start_tick_reads`, see `server.tickreads`): the socket is no longer watched, and the
room's loop calls `read_at_tick` just before each tick. Any close goes back to reads as
they arrive first, so a closing handshake is never held up by the tick. All decisions are
the protocol's; this class only reads at the tick, writes, closes and aborts.
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING, Any, Protocol

from server.protocol import Closed, Closing, ConnectionProtocol, Event, Joined, State
from server.tickreads import SeatPoller, TickReads, supported

if TYPE_CHECKING:
    from server.clock import Clock
    from server.room import Room
    from server.session import Session

__all__ = ["Connection", "ConnectionHooks", "WebSocketReads"]

log = logging.getLogger("tickwire.gateway")


class ConnectionHooks(Protocol):
    """What a connection tells the server about (the gateway implements it)."""

    def on_joined(self, conn: Connection, event: Joined) -> None: ...


class Connection:
    """One upgraded socket. `done` resolves when the transport is gone."""

    __slots__ = ("_close_timer", "_tick_reads", "_timing_pong", "clock", "close_timeout_s",
                 "done", "hooks", "peer", "protocol", "session", "transport", "write",
                 "writelines")

    def __init__(self, transport: asyncio.Transport, protocol: ConnectionProtocol,
                 hooks: ConnectionHooks, clock: Clock, close_timeout_s: float,
                 peer: str = "") -> None:
        self.transport = transport
        self.protocol = protocol
        self.session: Session = protocol.session
        self.hooks = hooks
        self.clock = clock
        self.close_timeout_s = close_timeout_s
        self.peer = peer
        self.write = transport.write  # bound once: the delivery loop calls them per seat
        self.writelines = transport.writelines
        self.done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._close_timer: asyncio.TimerHandle | None = None
        self._tick_reads: TickReads | None = None
        self._timing_pong = False  # read on arrival until our ping's pong is in

    @property
    def room(self) -> Room | None:
        return self.protocol.room

    @property
    def open(self) -> bool:
        """Joined and not closing: the tick may send to it."""
        return self.protocol.state is State.JOINED

    # -- aiohttp's payload-parser interface ---------------------------------------------

    def feed_data(self, data: bytes) -> tuple[bool, bytes]:
        self._receive(data, self.clock.now(), 0.0)
        if self._timing_pong:
            self._pong_timed()
        return False, b""

    def feed_eof(self) -> None:
        self._end_tick_reads()
        self.protocol.connection_lost()
        if self._close_timer is not None:
            self._close_timer.cancel()
            self._close_timer = None
        if not self.done.done():
            self.done.set_result(None)

    def _receive(self, data: bytes, now: float, held: float) -> None:
        try:
            protocol = self.protocol
            events = protocol.receive_data(data, now, held)
            if protocol.outbox:  # most reads (inputs) write nothing back
                self.flush()
            if events:
                self.apply(events)
        except Exception:
            # The protocol catches what a client can cause; this is a bug in the shell.
            # It must not reach aiohttp's data_received: this connection goes, quietly.
            log.exception("error in the connection shell", extra={"peer": self.peer})
            self._abort()

    # -- reads at the tick --------------------------------------------------------------

    @property
    def reads_at_tick(self) -> bool:
        return self._tick_reads is not None

    def start_tick_reads(self, poller: SeatPoller[Connection] | None = None) -> bool:
        """Stop watching the socket; `read_at_tick` reads it from now on, and `poller`
        (the room's) says when it has bytes waiting. False (and nothing changed) where that
        cannot work: TLS, not Linux, a closing transport, a room already closed."""
        if self._tick_reads is not None:
            return True
        if not supported(self.transport):
            return False
        try:
            reads = TickReads(self.transport.get_extra_info("socket").fileno(),
                              self.clock.now(), poller, self)
        except (OSError, ValueError) as exc:
            log.warning("reads at the tick unavailable: %s", exc, extra={"peer": self.peer})
            return False
        self._tick_reads = reads
        self.transport.pause_reading()
        return True

    def stop_tick_reads(self) -> None:
        """Back to reads as they arrive (before any close: see the module docstring)."""
        if self._tick_reads is not None:
            self._end_tick_reads()
            if not self._timing_pong and not self.transport.is_closing():
                self.transport.resume_reading()
            self._timing_pong = False

    def time_pong(self) -> None:
        """Our ping just went out: read on arrival until its pong is in. A read's kernel
        time is that of its newest bytes, so a pong read at the tick together with a
        later input would be timed late; this costs one wake-up per ping (1/s)."""
        if self._tick_reads is not None and not self._timing_pong \
                and not self.transport.is_closing():
            self._timing_pong = True
            self.transport.resume_reading()

    def _pong_timed(self) -> None:
        if not self.session.pings.outstanding:
            self._timing_pong = False
            if self._tick_reads is not None and not self.transport.is_closing():
                self.transport.pause_reading()  # the pong is in: back to the tick

    def _end_tick_reads(self) -> None:
        reads = self._tick_reads
        if reads is not None:
            self._tick_reads = None
            reads.close()  # the duplicate descriptor only: the transport's stays open

    def read_at_tick(self, now: float, wall_now: float) -> None:
        """Read what the client sent since the last tick, handled at its arrival time.
        End of stream and socket errors go back to the event loop's reads, which end the
        connection the same way as without reads at the tick."""
        reads = self._tick_reads
        if reads is None:
            return
        try:
            got = reads.read(now, wall_now)
        except OSError:
            # Reset by the peer: the error is consumed by this read, so end it here.
            self._abort()
            return
        if got is None:
            return
        data, arrival = got
        if not data:
            self.stop_tick_reads()  # the event loop sees the end of stream again
            return
        self._receive(data, arrival, now - arrival)
        if self._timing_pong:
            self._pong_timed()

    # -- acting on the protocol ---------------------------------------------------------

    def flush(self) -> None:
        outbox = self.protocol.outbox
        if outbox:
            if not self.transport.is_closing():
                self.writelines(outbox)
            outbox.clear()

    def apply(self, events: list[Event]) -> None:
        for event in events:
            if isinstance(event, Joined):
                self.hooks.on_joined(self, event)
            elif isinstance(event, Closing):
                log.info("closing connection: %s", event.reason,
                         extra={"player": self.session.player_id, "code": event.code,
                                "label": event.label, "peer": self.peer})
                if event.abort:
                    # A reader that stopped reading would never see a close frame queued
                    # behind its full buffer: the frame is written for the record and the
                    # TCP connection dropped at once.
                    self._abort()
                else:
                    self.stop_tick_reads()  # the peer's Close is read as it arrives
                    self._arm_close_timer()
            elif isinstance(event, Closed):
                self._end_tick_reads()
                self.transport.close()  # flushes what is buffered, then FIN
                self._arm_close_timer()  # ...but never waits on a peer for long

    def close(self, code: int, reason: str, *, label: str, abort: bool = False,
              retry_after_s: int | None = None) -> None:
        """Close from code that must not await (the tick, the admin API)."""
        events = self.protocol.close(code, reason, label=label, abort=abort,
                                     retry_after_s=retry_after_s)
        self.flush()
        self.apply(events)

    def poll(self) -> None:
        """Protocol deadlines (the Join deadline); called from a timer. The event loop's
        timer and the server's clock may disagree by a millisecond or so: if the deadline
        has not passed by the server's clock yet, look again when it will have."""
        now = self.clock.now()
        events = self.protocol.poll(now)
        if events:
            self.flush()
            self.apply(events)
        elif self.protocol.state is State.AWAITING_JOIN and not self.done.done():
            asyncio.get_running_loop().call_later(
                max(0.001, self.protocol.join_deadline - now), self.poll)

    def _arm_close_timer(self) -> None:
        if self._close_timer is None and not self.done.done():
            self._close_timer = asyncio.get_running_loop().call_later(
                self.close_timeout_s, self._close_timed_out)

    def _close_timed_out(self) -> None:
        # The peer did not finish the closing handshake in time. Our Close is out: end
        # TCP with a FIN so the peer sees a clean close; a peer that left our bytes unread
        # gets a RST, since a graceful close would wait on it.
        self._close_timer = None
        self._end_tick_reads()
        if self.transport.get_write_buffer_size() > 0:
            self.transport.abort()
        else:
            self.transport.close()

    def _abort(self) -> None:
        self._end_tick_reads()
        self.transport.abort()


class WebSocketReads(asyncio.Protocol):
    """The transport's protocol once a socket is upgraded: reads go straight to
    `Connection.feed_data` (``data_received`` *is* that bound method, so the event loop
    calls it with no layer between: about 0.7 µs less per read than through aiohttp's
    `RequestHandler.data_received`, measured by ``bench.io_ab``'s ``socket_recv_us``);
    everything else still goes to aiohttp's handler, which owns the request's task and
    calls `Connection.feed_eof` when the transport is lost.

    Unlike aiohttp's handler, this keeps reading while the server shuts down, so a peer's
    Close frame during the drain is seen and the closing handshake completes."""

    __slots__ = ("data_received", "handler")

    def __init__(self, conn: Connection, handler: Any) -> None:
        self.data_received = conn.feed_data  # type: ignore[assignment]
        self.handler = handler  # aiohttp's RequestHandler for this socket

    def eof_received(self) -> bool | None:
        return self.handler.eof_received()

    def connection_lost(self, exc: Exception | None) -> None:
        self.handler.connection_lost(exc)

    def pause_writing(self) -> None:
        self.handler.pause_writing()

    def resume_writing(self) -> None:
        self.handler.resume_writing()
