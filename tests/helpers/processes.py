"""Run a ``python -m module`` server for a test and wait until its health URL answers.

Tests that need a real process (not an in-process app) use :func:`python_module`: it starts
the module with this interpreter, sends its output to a log file (a pipe nobody reads could
fill up and block the server), waits for the health URL to answer 2xx, and on exit stops the
process it started (SIGTERM, then SIGKILL), never anything else. When the server dies or does
not become healthy, the error shows the end of its log.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import httpx

from saga_devenv.process import free_port
from tests.helpers.waiting import budget, deadline

__all__ = ["ModuleProcess", "free_port", "python_module", "wait_healthy"]


@dataclass
class ModuleProcess:
    """A running ``python -m`` server started by :func:`python_module`."""

    module: str
    process: subprocess.Popen[bytes]
    port: int
    base_url: str
    log_path: Path

    def log(self, lines: int = 40) -> str:
        text = self.log_path.read_text(errors="replace") if self.log_path.exists() else ""
        return "\n".join(text.splitlines()[-lines:]) or "(empty log)"

    def stop(self, timeout: float = 10.0) -> int:
        """Stop the process (SIGTERM, then SIGKILL after ``timeout``); return its exit code."""
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout)
        return int(self.process.returncode)


def wait_healthy(proc: ModuleProcess, health_url: str, timeout: float) -> None:
    until = deadline(timeout)  # the suite's budget: scaled like every other wait
    while True:
        if proc.process.poll() is not None:
            raise RuntimeError(
                f"{proc.module} exited with {proc.process.returncode} before it was healthy:\n"
                f"{proc.log()}"
            )
        try:
            if httpx.get(health_url, timeout=1.0).is_success:
                return
        except httpx.TransportError:
            pass
        if until.passed:
            raise RuntimeError(
                f"{proc.module} not healthy after {budget(timeout):.0f}s:\n{proc.log()}"
            )
        time.sleep(0.05)


@contextlib.contextmanager
def python_module(
    module: str,
    *,
    port: int,
    health_path: str,
    env: Mapping[str, str] | None = None,
    args: Sequence[str] = (),
    host: str = "127.0.0.1",
    timeout: float = 20.0,
    log_dir: Path | None = None,
) -> Iterator[ModuleProcess]:
    """Run ``python -m module *args`` (told its ``port`` by the caller, via env or args).

    ``env`` is added to this process's environment. Yields once ``http://host:port`` +
    ``health_path`` answers 2xx; stops the process when the block ends.
    """
    folder = log_dir or Path(tempfile.mkdtemp(prefix=f"{module}-"))
    log_path = folder / f"{module}.log"
    with log_path.open("ab") as log:
        popen = subprocess.Popen(
            [sys.executable, "-m", module, *args],
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env={**os.environ, **(env or {})},
        )
    proc = ModuleProcess(module, popen, port, f"http://{host}:{port}", log_path)
    try:
        wait_healthy(proc, proc.base_url + health_path, timeout)
        yield proc
    finally:
        proc.stop()
