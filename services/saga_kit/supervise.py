"""Long-running tasks that come back when they fail, and the readiness they report.

A background loop (an event consumer, a poller) that dies quietly while the probes
still say "ready" loses work without anyone noticing. :func:`supervised` runs one
loop, logs why it ended and starts it again after a capped, growing delay, until
``stop`` is set. Each loop reports progress on a :class:`Heartbeat` taken from the
service's :class:`Readiness`; the readiness endpoint (and gRPC health) asks the
registry, which says not ready while any heartbeat is down (not started yet, or
failed and waiting for its restart) or stale (no progress for longer than its
bound: a loop stuck without raising).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

log = logging.getLogger(__name__)


async def every(
    seconds: float, work: Callable[[], Awaitable[object]], stop: asyncio.Event, what: str
) -> None:
    """Run ``work`` every ``seconds`` until ``stop``; a failed round is logged and the
    next one comes on time (a database outage must not end a background loop)."""
    while not stop.is_set():
        try:
            await work()
        except Exception:
            log.exception("%s failed", what)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), seconds)


@dataclass(frozen=True)
class Backoff:
    """Delays between restarts: ``first``, then times ``factor``, at most ``cap``."""

    first: float = 0.5
    cap: float = 30.0
    factor: float = 2.0

    def delay(self, attempt: int) -> float:
        """The delay before restart number ``attempt`` (1 for the first)."""
        try:
            return min(self.cap, self.first * self.factor ** max(0, attempt - 1))
        except OverflowError:  # a loop failing for days
            return self.cap


class Heartbeat:
    """One task's part of readiness: down until it first reports progress."""

    def __init__(self, name: str, stale_after: float | None, clock: Callable[[], float]) -> None:
        self.name = name
        self._stale_after = stale_after
        self._clock = clock
        self._last = clock()
        self._down: str | None = "not started"

    def beat(self) -> None:
        """The task works (it did a round trip, took a message, ...)."""
        self._last = self._clock()
        self._down = None

    def fail(self, reason: str) -> None:
        """The task is not running; not ready until it beats again."""
        self._down = reason

    def problem(self) -> str | None:
        """Why the task is not ready, or None."""
        if self._down is not None:
            return self._down
        silent = self._clock() - self._last
        if self._stale_after is not None and silent > self._stale_after:
            return f"no progress for {silent:.0f}s"
        return None


class Readiness:
    """The heartbeats of a process's tasks; ready when none has a problem."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._heartbeats: dict[str, Heartbeat] = {}

    def heartbeat(self, name: str, stale_after: float | None = None) -> Heartbeat:
        """Register a task; ``stale_after`` seconds without a beat make it not ready."""
        if name in self._heartbeats:
            raise ValueError(f"heartbeat {name!r} already registered")
        beat = Heartbeat(name, stale_after, self._clock)
        self._heartbeats[name] = beat
        return beat

    def problems(self) -> dict[str, str]:
        """Each not-ready task's name and why."""
        found = {name: beat.problem() for name, beat in self._heartbeats.items()}
        return {name: problem for name, problem in found.items() if problem is not None}

    @property
    def ready(self) -> bool:
        return not self.problems()


async def supervised(
    name: str,
    factory: Callable[[], Awaitable[None]],
    *,
    stop: asyncio.Event,
    backoff: Backoff = Backoff(),
    heartbeat: Heartbeat | None = None,
) -> None:
    """Run ``factory()`` until ``stop`` is set, starting it again whenever it raises
    or returns early.

    The task itself is expected to return soon after ``stop`` is set (it is not
    cancelled, so it can finish what it holds). A run that lasted longer than
    ``backoff.cap`` counts as healthy: the next failure waits ``backoff.first``
    again. ``BaseException`` (cancellation, ``SystemExit``) is not caught.
    """
    loop = asyncio.get_running_loop()
    attempt = 0
    while not stop.is_set():
        started = loop.time()
        error: Exception | None = None
        try:
            await factory()
        except Exception as exc:
            error = exc
        if stop.is_set() and error is None:
            return
        attempt = 1 if loop.time() - started > backoff.cap else attempt + 1
        delay = backoff.delay(attempt)
        why = f"failed: {error!r}" if error is not None else "returned before stop"
        if heartbeat is not None:
            heartbeat.fail(f"{why}; restart {attempt} in {delay:.1f}s")
        log.error("task %s %s; restart %d in %.1fs", name, why, attempt, delay, exc_info=error)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), delay)
