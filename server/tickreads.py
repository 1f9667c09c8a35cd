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
"""

from __future__ import annotations

import asyncio
import os
import socket
import struct
import sys

__all__ = ["READ_BYTES", "TickReads", "supported"]

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


class TickReads:
    """Non-blocking reads of one socket, each with its arrival on the server's clock."""

    __slots__ = ("_recvmsg", "_sock", "last_arrival")

    def __init__(self, fd: int, now: float) -> None:
        sock = socket.socket(fileno=os.dup(fd))
        try:
            sock.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
            sock.setblocking(False)
        except OSError:
            sock.close()
            raise
        self._sock = sock
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
        self._sock.close()
