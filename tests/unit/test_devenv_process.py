"""Daemon supervision on real processes: start, reuse, port conflicts, stop."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from saga_devenv.process import Daemon, DaemonError, free_port, http_get, pid_alive, port_open


def http_daemon(tmp_path: Path, port: int, name: str = "web") -> Daemon:
    return Daemon(
        name=name,
        argv=[sys.executable, "-m", "http.server", "--bind", "127.0.0.1", str(port)],
        run_dir=tmp_path,
        port=port,
        healthy=lambda: port_open(port),
        start_timeout=10,
    )


def test_start_reuse_and_stop(tmp_path: Path) -> None:
    port = free_port()
    daemon = http_daemon(tmp_path, port)
    assert daemon.ensure() is True
    pid = daemon.pid()
    assert pid is not None and pid_alive(pid)
    assert daemon.ensure() is False, "a healthy instance must be reused"
    assert daemon.pid() == pid
    assert daemon.stop() is True
    assert not pid_alive(pid)
    assert not port_open(port)
    assert daemon.stop() is False


def test_a_port_held_by_a_foreign_process_is_reported(tmp_path: Path) -> None:
    port = free_port()
    owner = http_daemon(tmp_path / "other", port)
    owner.ensure()
    try:
        with pytest.raises(DaemonError, match="did not start"):
            http_daemon(tmp_path / "mine", port).ensure()
    finally:
        owner.stop()


def test_a_server_that_never_gets_healthy_is_stopped_and_its_log_shown(tmp_path: Path) -> None:
    daemon = Daemon(
        name="broken",
        argv=[sys.executable, "-c", "import time; print('boom'); time.sleep(30)"],
        run_dir=tmp_path,
        port=free_port(),
        healthy=lambda: False,
        start_timeout=1,
    )
    with pytest.raises(DaemonError, match="did not become healthy") as err:
        daemon.ensure()
    assert "boom" in str(err.value)
    assert daemon.pid() is None


def test_a_stale_pidfile_is_ignored(tmp_path: Path) -> None:
    port = free_port()
    daemon = http_daemon(tmp_path, port)
    daemon.pidfile.write_text("999999\n")
    assert daemon.ensure() is True
    daemon.stop()


def test_a_running_server_started_with_another_config_is_restarted(tmp_path: Path) -> None:
    """A shared server (NATS) must not be reused with an old config: its stamp decides."""
    port = free_port()
    old = http_daemon(tmp_path, port)
    old.stamp = "config-1"
    assert old.ensure() is True
    first = old.pid()
    same = http_daemon(tmp_path, port)
    same.stamp = "config-1"
    assert same.ensure() is False and same.pid() == first
    changed = http_daemon(tmp_path, port)
    changed.stamp = "config-2"
    try:
        assert changed.ensure() is True
        assert first is not None and not pid_alive(first)
        assert changed.pid() not in (None, first)
        assert changed.stampfile.read_text().strip() == "config-2"
    finally:
        changed.stop()


def test_a_port_still_held_by_a_process_going_away_is_waited_for(tmp_path: Path) -> None:
    """A server just stopped may hold its port a moment longer: start once it is free."""
    import socket
    import threading

    port = free_port()
    leaving = socket.socket()
    leaving.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    leaving.bind(("127.0.0.1", port))
    leaving.listen()
    threading.Timer(1.0, leaving.close).start()
    daemon = Daemon(
        name="web",
        argv=[sys.executable, "-m", "http.server", "--bind", "127.0.0.1", str(port)],
        run_dir=tmp_path,
        port=port,
        healthy=lambda: http_get(f"http://127.0.0.1:{port}/") is not None,  # the socket: no
        start_timeout=10,
    )
    try:
        assert daemon.ensure() is True
    finally:
        daemon.stop()
