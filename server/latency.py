"""Round-trip time from WebSocket ping/pong control frames.

Theory of operation
-------------------
The server sends WebSocket PING control frames itself (aiohttp ``autoping=False`` so
the PONGs reach us) and a browser answers each with a PONG carrying the same payload.
:class:`PingTracker` is the sans-I/O half: ``poll(now)`` says when to send a ping and
with which payload, ``on_pong(payload, now)`` turns the echo into an RTT sample,
``timed_out(now)`` says the peer has stopped answering. It never sends, sleeps or
reads the clock.

Policy: **at most one ping outstanding**. A new ping is due ``interval_s`` after the
previous one was *sent*, but only once its pong has arrived. Reasons:

* RFC 6455 §5.5.3 lets a peer answer only the most recent of several pings, so with
  many in flight some pongs legitimately never come back; with one in flight every
  ping gets its pong or the peer is stalled.
* The payload is ``struct.pack('!Qd', ping_id, sent_at)`` - self-describing, but the
  tracker also keeps the one outstanding ``(id, sent_at)`` pair (two scalars, no
  lookup table) and accepts a pong only if it matches it *bit for bit*. A client can
  therefore not forge an earlier send time to inflate its measured RTT (which would
  matter as soon as lag compensation uses it); the most it can do is answer late.

Bad pongs (wrong length, unknown or stale id, wrong or future send time, or a pong
with no ping outstanding) are counted in ``bad_pongs`` and otherwise ignored: RFC 6455
allows unsolicited pongs as a heartbeat, so they are not by themselves a reason to
close the connection.

:class:`RttEstimator` smooths samples as TCP does (RFC 6298 §2) and keeps a small
window of raw samples for percentiles.
"""

from __future__ import annotations

import math
import struct
from collections import deque

__all__ = ["PING_PAYLOAD", "PingTracker", "RttEstimator"]

#: Ping payload layout: 8-byte big-endian ping id, 8-byte float64 send time (seconds).
PING_PAYLOAD = struct.Struct("!Qd")


class RttEstimator:
    """Smoothed RTT and variance (RFC 6298) plus percentiles over recent samples.

    Args:
        window: how many of the most recent samples the percentiles cover (≥ 1).
        alpha: gain of the smoothed RTT (RFC 6298: 1/8).
        beta: gain of the RTT variance (RFC 6298: 1/4).
        granularity_s: clock granularity G in seconds used in the RTO formula.
        min_rto_s: lower clamp for ``rto_s``. Default 0.0 = no clamp: we use the RTO as
            a "this peer is slower than usual" threshold, not to retransmit. RFC 6298
            asks for 1 s and Linux uses 0.2 s; pass one of those to mimic TCP.

    Before the first sample ``srtt_s``/``rttvar_s``/``last_s`` are 0.0, ``samples`` is 0
    and ``rto_s`` is the RFC 6298 initial 1.0 s.
    """

    K = 4  # RFC 6298 variance multiplier

    def __init__(
        self,
        window: int = 64,
        alpha: float = 1 / 8,
        beta: float = 1 / 4,
        granularity_s: float = 0.001,
        min_rto_s: float = 0.0,
    ) -> None:
        if window < 1:
            raise ValueError(f"window must be >= 1 sample, got {window}")
        if not (0 < alpha <= 1 and 0 < beta <= 1):
            raise ValueError(f"alpha and beta must be in (0, 1], got {alpha}, {beta}")
        self.alpha = alpha
        self.beta = beta
        self.granularity_s = granularity_s
        self.min_rto_s = min_rto_s
        self._srtt = 0.0
        self._rttvar = 0.0
        self._last = 0.0
        self._samples = 0
        self._window: deque[float] = deque(maxlen=window)

    def add_sample(self, rtt_s: float) -> None:
        """Feed one RTT measurement in seconds (finite, ≥ 0; else ``ValueError``)."""
        if not math.isfinite(rtt_s) or rtt_s < 0:
            raise ValueError(f"RTT sample must be a finite number of seconds >= 0, got {rtt_s!r}")
        if self._samples == 0:
            self._srtt = rtt_s
            self._rttvar = rtt_s / 2
        else:
            # RFC 6298 §2.3: update RTTVAR with the *old* SRTT, then SRTT.
            self._rttvar = (1 - self.beta) * self._rttvar + self.beta * abs(self._srtt - rtt_s)
            self._srtt = (1 - self.alpha) * self._srtt + self.alpha * rtt_s
        self._last = rtt_s
        self._samples += 1
        self._window.append(rtt_s)

    @property
    def srtt_s(self) -> float:
        """Smoothed RTT in seconds (0.0 before the first sample)."""
        return self._srtt

    @property
    def rttvar_s(self) -> float:
        """RTT variation (mean deviation) in seconds (0.0 before the first sample)."""
        return self._rttvar

    @property
    def rto_s(self) -> float:
        """SRTT + max(G, 4·RTTVAR) in seconds, clamped to ≥ ``min_rto_s``; 1.0 before data."""
        if self._samples == 0:
            return max(1.0, self.min_rto_s)
        return max(self.min_rto_s, self._srtt + max(self.granularity_s, self.K * self._rttvar))

    @property
    def samples(self) -> int:
        """Number of samples fed since creation (not capped by the window)."""
        return self._samples

    @property
    def last_s(self) -> float:
        """Most recent sample in seconds (0.0 before the first sample)."""
        return self._last

    def percentile(self, p: float) -> float | None:
        """Nearest-rank ``p``-th percentile (p in percent, 0..100) of the window, seconds.

        Returns an observed sample (no interpolation), or None with no samples yet.
        """
        if not 0 <= p <= 100:
            raise ValueError(f"percentile must be in [0, 100], got {p!r}")
        if not self._window:
            return None
        ordered = sorted(self._window)
        rank = max(1, math.ceil(p / 100 * len(ordered)))
        return ordered[rank - 1]


class PingTracker:
    """Decides when to ping, validates pongs, detects a silent peer (sans-I/O).

    Args:
        interval_s: seconds between ping sends (measured send to send).
        timeout_s: a ping unanswered for longer than this means the peer is gone.
        window: RTT percentile window passed to the :class:`RttEstimator`.

    Counters: ``pings_sent``, ``pongs_received`` (valid ones), ``bad_pongs``.

    ``due_at`` is ``next_ping_at`` as a plain float (``inf`` while a ping is outstanding),
    and ``timeout_at`` is when the outstanding ping times out (``inf`` while none is), so
    a delivery loop over hundreds of seats compares numbers instead of calling
    :meth:`poll` and :meth:`timed_out` for every seat on every tick.
    """

    def __init__(self, interval_s: float = 1.0, timeout_s: float = 5.0, window: int = 64) -> None:
        if not (math.isfinite(interval_s) and interval_s > 0):
            raise ValueError(f"interval_s must be > 0 seconds, got {interval_s!r}")
        if not (math.isfinite(timeout_s) and timeout_s > 0):
            raise ValueError(f"timeout_s must be > 0 seconds, got {timeout_s!r}")
        self.interval_s = interval_s
        self.timeout_s = timeout_s
        self.rtt = RttEstimator(window=window)
        self.pings_sent = 0
        self.pongs_received = 0
        self.bad_pongs = 0
        self._next_id = 1
        self._outstanding_id: int | None = None
        self._outstanding_sent: float = 0.0
        self._last_sent: float | None = None
        self.due_at = -math.inf  # see the class docstring; kept equal to next_ping_at
        self.timeout_at = math.inf  # the outstanding ping's send time + timeout_s

    @property
    def outstanding(self) -> bool:
        """True while a ping has been sent and its pong not yet received."""
        return self._outstanding_id is not None

    @property
    def next_ping_at(self) -> float | None:
        """When the next ping is due (seconds); None while one is outstanding.

        ``-inf`` before the first ping (due immediately). Lets a driver compute its
        sleep without polling.
        """
        if self._outstanding_id is not None:
            return None
        if self._last_sent is None:
            return -math.inf
        return self._last_sent + self.interval_s

    def poll(self, now: float) -> bytes | None:
        """Return the payload of a ping to send now, or None if none is due."""
        if now < self.due_at:  # inf while one is outstanding
            return None
        ping_id = self._next_id
        self._next_id += 1
        self._outstanding_id = ping_id
        self._outstanding_sent = now
        self._last_sent = now
        self.due_at = math.inf
        self.timeout_at = now + self.timeout_s
        self.pings_sent += 1
        return PING_PAYLOAD.pack(ping_id, now)

    def on_pong(self, payload: bytes, now: float) -> float | None:
        """Handle a PONG payload received at ``now``; return the RTT in seconds or None.

        Anything but the exact payload of the outstanding ping is a bad pong: counted,
        otherwise ignored, never raises for any ``payload``.
        """
        if self._outstanding_id is None or len(payload) != PING_PAYLOAD.size:
            self.bad_pongs += 1
            return None
        ping_id, sent = PING_PAYLOAD.unpack(payload)
        # Bitwise-equal send time; NaN != NaN so a NaN time can never match either.
        rtt = now - sent
        if ping_id != self._outstanding_id or sent != self._outstanding_sent or not rtt >= 0:
            self.bad_pongs += 1
            return None
        self._outstanding_id = None
        self.due_at = self._last_sent + self.interval_s  # _last_sent is this ping's
        self.timeout_at = math.inf
        self.pongs_received += 1
        self.rtt.add_sample(rtt)
        return rtt

    def timed_out(self, now: float) -> bool:
        """True when the outstanding ping has waited longer than ``timeout_s`` at ``now``."""
        return now > self.timeout_at
