"""Waiting in tests for something that happens in another task or process.

This module is the one place that decides how long a test waits. Every wait names
the seconds an unloaded machine would need, with room; the suite multiplies them by
one patience factor, ``CHECKOUT_SAGA_TEST_PATIENCE`` (default 3: a 2-core machine
busy with a benchmark or a Go build beside the tests still passes). A slow machine
only makes a test slower, never red; a broken build is red after the scaled wait.

* :func:`eventually` waits for a condition (plain or async);
* :func:`deadline` gives a :class:`Deadline` to code that loops by itself;
* :func:`budget` scales seconds handed to something else (``asyncio.wait_for``).

No test asserts that something across processes happened within N seconds: waits
here only bound how long a test may hang.
"""

from __future__ import annotations

import asyncio
import inspect
import math
import os
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

PATIENCE_ENV = "CHECKOUT_SAGA_TEST_PATIENCE"
DEFAULT_PATIENCE = 3.0


def patience() -> float:
    """The suite's patience factor (read each time, so a test may set it)."""
    raw = os.environ.get(PATIENCE_ENV, "").strip()
    if not raw:
        return DEFAULT_PATIENCE
    try:
        factor = float(raw)
    except ValueError:
        factor = math.nan
    if not math.isfinite(factor) or factor <= 0:
        raise ValueError(f"{PATIENCE_ENV} must be a positive number, not {raw!r}")
    return factor


def budget(seconds: float) -> float:
    """``seconds`` of an unloaded machine, scaled by the suite's patience."""
    return seconds * patience()


@dataclass(frozen=True)
class Deadline:
    """When a wait gives up: ``seconds`` (already scaled) from its start."""

    seconds: float
    ends: float  # time.monotonic()

    def left(self) -> float:
        return max(0.0, self.ends - time.monotonic())

    @property
    def passed(self) -> bool:
        return time.monotonic() > self.ends

    def check(self, what: str) -> None:
        """AssertionError naming ``what`` once the deadline has passed."""
        if self.passed:
            raise AssertionError(f"{what} not within {self.seconds:g}s")


def deadline(seconds: float) -> Deadline:
    """A deadline ``seconds`` (scaled by the patience) from now."""
    scaled = budget(seconds)
    return Deadline(scaled, time.monotonic() + scaled)


Failure = str | Callable[[], str] | None


def _message(failure: Failure, seconds: float) -> str:
    detail = failure() if callable(failure) else failure
    return f"condition not met within {seconds:g}s" + (f": {detail}" if detail else "")


async def eventually(
    check: Callable[[], bool | Awaitable[bool]],
    within: float = 5.0,
    interval: float = 0.01,
    failure: Failure = None,
) -> None:
    """Wait until ``check()`` (a plain or an async predicate) is true; AssertionError
    (with ``failure``, or what it returns) after ``within`` seconds times the patience.
    An exception from ``check`` ends the wait at once (a process that died, say)."""
    until = deadline(within)

    async def holds() -> bool:
        result = check()
        if inspect.isawaitable(result):
            result = await result
        return bool(result)

    while not await holds():
        if until.passed:
            raise AssertionError(_message(failure, until.seconds))
        await asyncio.sleep(interval)


def eventually_sync(
    check: Callable[[], bool], within: float = 5.0, interval: float = 0.05, failure: Failure = None
) -> None:
    """:func:`eventually` for code without an event loop."""
    until = deadline(within)
    while not check():
        if until.passed:
            raise AssertionError(_message(failure, until.seconds))
        time.sleep(interval)
