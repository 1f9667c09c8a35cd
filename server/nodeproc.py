"""A real `tickwire serve` subprocess on a free loopback port: what `tickwire fleet` starts
for each node, and what tests and benchmarks start.

    with ServerProcess(port=free_port(), log_path=tmp / "tickwire.log") as srv:
        ...  # srv.base_url, srv.ws_url, srv.pid

`start()` returns once /healthz answers (bounded by `health_timeout_s`); `stop()` signals
the process by its pid, waits a bounded time and then SIGKILLs it. By default the server
is the `tickwire` console script next to `sys.executable`; pass `command=PYTHON_M_CLI`
(or any other argv prefix) to run it another way.
"""

from __future__ import annotations

import os
import signal
import socket
import ssl
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
TICKWIRE = Path(sys.executable).with_name("tickwire")
PYTHON_M_CLI = [sys.executable, "-m", "server.cli"]


def free_port() -> int:
    """A TCP port free on 127.0.0.1 right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def healthy(base_url: str, timeout: float = 1.0, *,
            ssl_context: ssl.SSLContext | None = None) -> bool:
    """Whether `base_url`/healthz answers 200 within `timeout` seconds."""
    try:
        with urllib.request.urlopen(f"{base_url}/healthz", timeout=timeout,
                                    context=ssl_context) as resp:
            return resp.status == 200
    except (urllib.error.URLError, OSError):
        return False


@dataclass
class ServerProcess:
    """A `tickwire serve` subprocess; `restart()` stops it and starts a new one on the
    same port (what a crash-and-restart looks like to a client).

    `command` is the argv before `serve` (default: the `tickwire` script next to
    `sys.executable`). `host=None` leaves `--host` to the CLI's default; `plain_logs`
    adds `--plain-logs`. Output goes to `log_path` (appended) or, when it is None, to
    /dev/null. `scheme="https"` with an `ssl_context` that trusts the server's
    certificate is for a server started with `--tls-cert/--tls-key`.
    """

    port: int
    log_path: Path | None = None
    extra_args: list[str] = field(default_factory=list)
    cwd: Path | None = None
    env: dict[str, str] | None = None
    health_timeout_s: float = 20.0
    command: list[str] | None = None
    host: str | None = "127.0.0.1"
    plain_logs: bool = True
    scheme: str = "http"
    ssl_context: ssl.SSLContext | None = None
    proc: subprocess.Popen | None = field(default=None, repr=False)

    # -- addresses and state ------------------------------------------------------------

    @property
    def base_url(self) -> str:
        return f"{self.scheme}://127.0.0.1:{self.port}"

    @property
    def ws_url(self) -> str:
        ws = "wss" if self.scheme == "https" else "ws"
        return f"{ws}://127.0.0.1:{self.port}/ws"

    @property
    def pid(self) -> int:
        if self.proc is None:
            raise RuntimeError("the server was never started")
        return self.proc.pid

    @property
    def returncode(self) -> int | None:
        """The exit code once the process has exited (None while it runs, or if never
        started)."""
        return None if self.proc is None else self.proc.poll()

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def cmd(self) -> list[str]:
        prefix = list(self.command) if self.command is not None else [str(TICKWIRE)]
        args = [*prefix, "serve"]
        if self.host is not None:
            args += ["--host", self.host]
        args += ["--port", str(self.port)]
        if self.plain_logs:
            args.append("--plain-logs")
        return [*args, *self.extra_args]

    # -- lifecycle ----------------------------------------------------------------------

    def start(self) -> ServerProcess:
        """Start the process and wait (bounded) until /healthz answers; on failure the
        process is stopped and RuntimeError carries the log's tail."""
        if self.running:
            raise RuntimeError(f"the server is already running (pid {self.pid})")
        cwd = self.cwd if self.cwd is not None else REPO
        if self.log_path is None:
            self.proc = subprocess.Popen(self.cmd(), cwd=cwd, env=self.env,
                                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        else:
            with self.log_path.open("ab") as log:
                self.proc = subprocess.Popen(self.cmd(), cwd=cwd, env=self.env, stdout=log,
                                             stderr=subprocess.STDOUT)
        deadline = time.monotonic() + self.health_timeout_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"tickwire serve exited with {self.proc.returncode}:\n"
                                   f"{self.log_tail()}")
            if healthy(self.base_url, ssl_context=self.ssl_context):
                return self
            time.sleep(0.1)
        self.stop()
        raise RuntimeError(f"tickwire serve did not answer /healthz within "
                           f"{self.health_timeout_s} s:\n{self.log_tail()}")

    def send_signal(self, sig: int) -> None:
        """Send `sig` to the process by its pid and return at once."""
        os.kill(self.pid, sig)

    def wait(self, timeout: float) -> int:
        """Wait up to `timeout` s for the process to exit; its exit code
        (subprocess.TimeoutExpired if it is still running)."""
        if self.proc is None:
            raise RuntimeError("the server was never started")
        return self.proc.wait(timeout=timeout)

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 10.0) -> int | None:
        """Stop the process by its pid (SIGTERM: graceful drain; SIGINT also ends it
        cleanly), waiting up to `timeout` s; then SIGKILL. The exit code, or None if it
        was never started. A no-op when the process has already exited."""
        proc = self.proc
        if proc is None:
            return None
        if proc.poll() is None:
            try:
                os.kill(proc.pid, sig)
                proc.wait(timeout=timeout)
            except ProcessLookupError:
                pass
            except subprocess.TimeoutExpired:
                os.kill(proc.pid, signal.SIGKILL)
                proc.wait(timeout=5)
        return proc.poll()

    def restart(self) -> ServerProcess:
        self.stop()
        return self.start()

    def log_tail(self, n: int = 40) -> str:
        if self.log_path is None:
            return "(no log)"
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-n:])
        except OSError:
            return "(no log)"

    def __enter__(self) -> ServerProcess:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
