"""Start, reuse, health-check and stop one long-running local server.

A server is described by a :class:`Daemon`. ``ensure()`` reuses a healthy
instance recorded in its pidfile (so repeated ``up`` calls and test runs are
cheap and idempotent), refuses to start when a foreign process holds the port,
and otherwise starts the server detached from the caller, logging to a file.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import ssl
import subprocess
import time
import urllib.request
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path


class DaemonError(RuntimeError):
    """A server could not be started or did not become healthy."""


def port_open(port: int, host: str = "127.0.0.1") -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.settimeout(0.2)
        return sock.connect_ex((host, port)) == 0


PORT_FREE_SECONDS = 15.0


def wait_for_port_free(port: int, within: float) -> bool:
    """Whether nobody listens on ``port`` any more, looking for at most ``within`` s."""
    deadline = time.monotonic() + within
    while port_open(port):
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.2)
    return True


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port nobody listens on right now (the OS picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def http_get(url: str, context: ssl.SSLContext | None = None) -> bytes | None:
    """The body of a 200 answer on loopback, or None (not up, or another status)."""
    try:
        with urllib.request.urlopen(url, timeout=1.0, context=context) as resp:  # noqa: S310
            return bytes(resp.read()) if resp.status == 200 else None
    except OSError:
        return None


def redis_command(port: int, command: str, password: str | None = None) -> bytes:
    """Send one inline Redis command on loopback, after ``AUTH`` when a password is
    given; the first bytes of the answer (a refused ``AUTH``'s error instead)."""
    with socket.create_connection(("127.0.0.1", port), timeout=0.5) as sock:
        if password is not None:
            sock.sendall(_resp("AUTH", password))
            reply = read_line(sock)
            if not reply.startswith(b"+OK"):
                return reply
        sock.sendall(f"{command}\r\n".encode())
        return sock.recv(64)


def _resp(*parts: str) -> bytes:
    """A command as a RESP array: any bytes in an argument, a password's included."""
    encoded = [part.encode() for part in parts]
    return f"*{len(encoded)}\r\n".encode() + b"".join(
        b"$%d\r\n%s\r\n" % (len(part), part) for part in encoded
    )


def read_line(sock: socket.socket) -> bytes:
    """One line of a line-based protocol (Redis, NATS), its CRLF included."""
    line = b""
    while not line.endswith(b"\r\n"):
        chunk = sock.recv(1)
        if not chunk:
            break
        line += chunk
    return line


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie (exited, not yet reaped by our own process) counts as dead.
    with contextlib.suppress(OSError):
        stat = Path(f"/proc/{pid}/stat").read_text()
        if stat.rsplit(")", 1)[1].split()[0] == "Z":
            return False
    return True


def tail(path: Path, lines: int = 30) -> str:
    if not path.exists():
        return "(no log)"
    return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])


@dataclass
class Daemon:
    """One server process: how to run it and how to tell it is ready."""

    name: str
    argv: Sequence[str]
    run_dir: Path
    port: int
    healthy: Callable[[], bool]
    env: dict[str, str] = field(default_factory=dict)
    user: str | None = None  # run as this user (postgres refuses to run as root)
    start_timeout: float = 30.0
    # What it was started with (e.g. a hash of its config file); a running instance
    # with another stamp is restarted, so nobody reuses a server with an old config.
    stamp: str = ""

    @property
    def pidfile(self) -> Path:
        return self.run_dir / f"{self.name}.pid"

    @property
    def stampfile(self) -> Path:
        return self.run_dir / f"{self.name}.stamp"

    def stale(self) -> bool:
        """Running, but started with another stamp than this one."""
        if not self.stamp:
            return False
        try:
            return self.stampfile.read_text().strip() != self.stamp
        except FileNotFoundError:
            return True

    @property
    def logfile(self) -> Path:
        return self.run_dir / "logs" / f"{self.name}.log"

    def pid(self) -> int | None:
        try:
            pid = int(self.pidfile.read_text().strip())
        except (FileNotFoundError, ValueError):
            return None
        return pid if pid_alive(pid) else None

    def is_healthy(self) -> bool:
        try:
            return self.healthy()
        except Exception:
            return False

    def ensure(self) -> bool:
        """Make sure the server runs and is healthy; return True if we started it."""
        pid = self.pid()
        if pid is not None and self.stale():
            self.stop()
            pid = None
        if pid is not None:
            if self.wait_healthy(pid, timeout=self.start_timeout):
                return False
            raise DaemonError(
                f"{self.name} (pid {pid}) is running but not healthy; "
                f"stop it with `scripts/down` and retry. Log {self.logfile}:\n{tail(self.logfile)}"
            )
        if port_open(self.port):
            if self.is_healthy():
                raise DaemonError(
                    f"port {self.port} already serves a {self.name} that this project did not "
                    f"start (no pidfile in {self.run_dir}); stop it or set another port "
                    f"(CHECKOUT_SAGA_*_PORT)"
                )
            # A process going away (one just stopped, still closing) holds it a moment.
            if not wait_for_port_free(self.port, PORT_FREE_SECONDS):
                raise DaemonError(f"port {self.port} for {self.name} is taken by another process")
        self.start()
        return True

    def start(self) -> None:
        self.logfile.parent.mkdir(parents=True, exist_ok=True)
        env = {**os.environ, **self.env}
        with self.logfile.open("ab") as log:
            proc = subprocess.Popen(  # detached: it outlives `scripts/up`
                list(self.argv),
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env=env,
                start_new_session=True,
                user=self.user,
            )
        self.pidfile.write_text(f"{proc.pid}\n")
        if self.stamp:
            self.stampfile.write_text(self.stamp + "\n")
        if not self.wait_healthy(proc.pid, timeout=self.start_timeout):
            self.stop()
            raise DaemonError(
                f"{self.name} did not become healthy within {self.start_timeout:.0f}s. "
                f"Log {self.logfile}:\n{tail(self.logfile)}"
            )

    def wait_healthy(self, pid: int, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not pid_alive(pid):
                return False
            if self.is_healthy():
                return True
            time.sleep(0.1)
        return False

    def stop(self, timeout: float = 20.0) -> bool:
        """Stop the server (SIGTERM, then SIGKILL); return True if one was running."""
        pid = self.pid()
        self.pidfile.unlink(missing_ok=True)
        if pid is None:
            return False
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and pid_alive(pid):
            with contextlib.suppress(ChildProcessError):
                os.waitpid(pid, os.WNOHANG)
            time.sleep(0.05)
        if pid_alive(pid):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        with contextlib.suppress(ChildProcessError):
            os.waitpid(pid, 0)
        return True
