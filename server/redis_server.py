"""A local `redis-server` child process: what `tickwire fleet` starts when it is given no
`--redis`, and what each test session uses (no fake Redis anywhere).

    with RedisServer.start() as redis:
        redis.url   # "redis://127.0.0.1:PORT/0"

The server keeps nothing on disk (no RDB, no AOF) and listens on 127.0.0.1 only.
`start()` returns once it answers PING (bounded by `ready_timeout_s`); `stop()` sends
SIGTERM to the process it started, by its pid, waits a bounded time, then SIGKILLs it.
`pause()`/`resume()` (SIGSTOP/SIGCONT) and `stop()` + `restart()` on the same port are
how tests make Redis unreachable for a while.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

DEBIAN_PACKAGE = "redis-server"


class RedisUnavailable(RuntimeError):
    """redis-server is not installed or did not come up; the message says what to do."""


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port free on `host` right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def redis_binary() -> str:
    """The path of redis-server on PATH, or RedisUnavailable naming the package."""
    path = shutil.which("redis-server")
    if path is None:
        raise RedisUnavailable(
            f"redis-server not found on PATH: install Debian's '{DEBIAN_PACKAGE}' package "
            f"(apt-get install {DEBIAN_PACKAGE}) or pass --redis URL")
    return path


def _ping(host: str, port: int, timeout_s: float) -> bool:
    """One inline PING over a plain socket (no client library needed to wait for start)."""
    try:
        with socket.create_connection((host, port), timeout=timeout_s) as s:
            s.sendall(b"PING\r\n")
            return s.recv(16).startswith(b"+PONG")
    except OSError:
        return False


@dataclass
class RedisServer:
    """One redis-server process on `host:port`; see the module docstring."""

    port: int
    host: str = "127.0.0.1"
    ready_timeout_s: float = 10.0
    process: subprocess.Popen | None = field(default=None, repr=False)
    _dir: tempfile.TemporaryDirectory | None = field(default=None, repr=False)

    @classmethod
    def start(cls, port: int = 0, *, host: str = "127.0.0.1",
              ready_timeout_s: float = 10.0) -> RedisServer:
        server = cls(port=port or free_port(host), host=host, ready_timeout_s=ready_timeout_s)
        server.restart()
        return server

    @property
    def url(self) -> str:
        return f"redis://{self.host}:{self.port}/0"

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process is not None else None

    def restart(self) -> None:
        """Start (again) on the same port; returns once it answers PING."""
        self.stop()
        binary = redis_binary()
        self._dir = tempfile.TemporaryDirectory(prefix="tickwire-redis-")
        argv = [binary, "--port", str(self.port), "--bind", self.host,
                "--save", "", "--appendonly", "no", "--dir", self._dir.name,
                "--protected-mode", "yes", "--loglevel", "warning", "--daemonize", "no"]
        log = open(Path(self._dir.name) / "redis.log", "wb")  # noqa: SIM115 - owned by the child
        try:
            self.process = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT,
                                            stdin=subprocess.DEVNULL)
        finally:
            log.close()
        deadline = time.monotonic() + self.ready_timeout_s
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                tail = (Path(self._dir.name) / "redis.log").read_text(errors="replace")[-400:]
                self.process = None
                raise RedisUnavailable(f"redis-server exited at start: {tail.strip()}")
            if _ping(self.host, self.port, 0.2):
                return
            time.sleep(0.05)
        self.stop()
        raise RedisUnavailable(f"redis-server did not answer PING on {self.host}:{self.port} "
                               f"within {self.ready_timeout_s:g} s")

    def pause(self) -> None:
        """SIGSTOP: the port stays open but nothing answers (a hung Redis)."""
        if self.process is not None:
            os.kill(self.process.pid, signal.SIGSTOP)

    def resume(self) -> None:
        if self.process is not None:
            os.kill(self.process.pid, signal.SIGCONT)

    def stop(self, timeout_s: float = 5.0) -> None:
        """Stop the process this object started (by its pid); bounded, then SIGKILL."""
        proc, self.process = self.process, None
        if proc is not None and proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(proc.pid, signal.SIGCONT)  # a paused server cannot act on SIGTERM
                proc.terminate()
            try:
                proc.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=timeout_s)
        if self._dir is not None:
            self._dir.cleanup()
            self._dir = None

    def __enter__(self) -> RedisServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
