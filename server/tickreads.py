"""Reading a joined client's socket once per tick, with the kernel's arrival time.

Why: a joined client sends one input per tick, at its own moment. Read as they arrive,
every input is a wake-up of the server (epoll, a context switch, the receive path run with
cold caches): about 37 per tick at 50 clients. A room's inputs are only used at its next
tick, so nothing is lost by reading them just before it, all in one pass: the server wakes
once per tick. Measured on the arena (E=100, same sitting, alternating): 24% less server
CPU at 50 clients, 29% less at 200 (bench/results/issue12-tick-reads.md).

What reading late would cost, and how it is kept exact: every read carries the time its
newest bytes reached the kernel (`SO_TIMESTAMPNS`), and the connection handles the read at
that time, so round-trip times, idle and flood accounting see arrivals, not the tick. How
long the bytes waited is handed on too (`held`), so a `Pong` can tell the client how long
its `Ping` sat in the server (the client subtracts it, as NTP does).

A read takes at most `READ_BYTES`: a client that sends more waits for the next tick, and
TCP's own flow control pushes back on it, instead of the server reading a flood as fast as
it comes.

The socket is a duplicate of the transport's descriptor, owned here: `close()` closes only
the duplicate. It must be closed before the transport closes or aborts, or the duplicate
would hold the TCP connection open (`Connection` does so on every path).

`SeatPoller` says which of a room's seats have bytes waiting, in one `epoll_wait` with no
timeout, so a room's loop reads only those. That lets it read twice per tick for about the
cost of once: most seats a few milliseconds before the deadline, off the tick's critical
path, and at the deadline only the few whose input came in since (`server.roomloops`).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import select
import socket
import struct
import sys
from typing import Generic, TypeVar

__all__ = ["READ_BYTES", "SeatPoller", "TickReads", "supported"]

Reader = TypeVar("Reader")

READ_BYTES = 65536
# Linux's value; the socket module names it only from Python 3.14 on.
SO_TIMESTAMPNS = getattr(socket, "SO_TIMESTAMPNS", 35)
_ANCILLARY_BYTES = socket.CMSG_SPACE(16)
_unpack_timespec = struct.Struct("@qq").unpack_from  # struct timespec: seconds, nanoseconds


def supported(transport: asyncio.BaseTransport) -> bool:
    """Whether this transport's socket can be read at the tick: a plain TCP socket on
    Linux (under TLS the socket holds ciphertext only the transport can read)."""
    return (sys.platform == "linux"
            and transport.get_extra_info("sslcontext") is None
            and transport.get_extra_info("socket") is not None
            and not transport.is_closing())


class SeatPoller(Generic[Reader]):
    """The sockets of one room's seats read at the tick, and which of them have bytes
    waiting (level-triggered: a socket left with unread bytes, or at end of stream or in
    error, stays ready until it is read). Each socket is registered with the reader that
    reads it (the seat's connection); `TickReads.close` removes its own."""

    __slots__ = ("_epoll", "_readers")

    def __init__(self) -> None:
        self._epoll = select.epoll()
        self._readers: dict[int, Reader] = {}

    def __len__(self) -> int:
        return len(self._readers)

    def add(self, fd: int, reader: Reader) -> None:
        self._epoll.register(fd, select.EPOLLIN)
        self._readers[fd] = reader

    def discard(self, fd: int) -> None:
        """Forget `fd`; call before closing it: epoll keys a registration by the open file
        the descriptor points to, which the transport's own descriptor keeps open, so a
        duplicate closed while registered would go on being reported."""
        if self._readers.pop(fd, None) is not None and not self._epoll.closed:
            with contextlib.suppress(OSError):  # never expected: it was registered
                self._epoll.unregister(fd)

    def ready(self) -> list[Reader]:
        """The readers whose sockets have something to read, now (never waits)."""
        readers = self._readers
        if not readers:
            return []
        get = readers.get
        return [reader for fd, _ in self._epoll.poll(0, len(readers))
                if (reader := get(fd)) is not None]

    def close(self) -> None:
        self._readers.clear()
        self._epoll.close()


class TickReads:
    """Non-blocking reads of one socket, each with its arrival on the server's clock.
    With a `poller`, the socket is registered there until `close`."""

    __slots__ = ("_poller", "_recvmsg", "_sock", "last_arrival")

    def __init__(self, fd: int, now: float, poller: SeatPoller | None = None,
                 reader: object = None) -> None:
        sock = socket.socket(fileno=os.dup(fd))
        try:
            sock.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
            sock.setblocking(False)
            if poller is not None:
                poller.add(sock.fileno(), reader)
        except (OSError, ValueError):  # ValueError: the room's poller is closed
            sock.close()
            raise
        self._sock = sock
        self._poller = poller
        self._recvmsg = sock.recvmsg
        self.last_arrival = now

    def read(self, now: float, wall_now: float) -> tuple[bytes, float] | None:
        """One read: (bytes, arrival), b"" at end of stream, or None when nothing waits.

        `now` is the server's clock and `wall_now` the wall clock (`time.time()`), read
        together: the kernel stamps with the wall clock, so the bytes' age is taken on
        the wall clock and subtracted from `now`. A wall clock stepped by NTP can only
        make an arrival later, never before this connection's previous one, nor after
        `now`. Raises OSError for a reset or failed socket."""
        try:
            data, ancillary, _, _ = self._recvmsg(READ_BYTES, _ANCILLARY_BYTES)
        except BlockingIOError:
            return None
        arrival = now
        if ancillary:  # the timestamp is the only option this socket asks for
            seconds, nanoseconds = _unpack_timespec(ancillary[0][2])
            age = wall_now - seconds - nanoseconds * 1e-9
            if age > 0.0:
                arrival = max(now - age, self.last_arrival)
        self.last_arrival = arrival
        return data, arrival

    def close(self) -> None:
        if self._poller is not None:
            self._poller.discard(self._sock.fileno())
            self._poller = None
        self._sock.close()
