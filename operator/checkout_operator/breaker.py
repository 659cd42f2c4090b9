"""A circuit breaker for calls to Midtrans.

After ``threshold`` consecutive transient failures the circuit opens: calls fail
fast with :class:`CircuitOpen` for ``cooldown`` seconds instead of piling up on
a gateway that is down; then one trial call is let through (half-open), and its
result closes or reopens the circuit. Permanent errors (4xx) say nothing about
the gateway's health and don't count.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

T = TypeVar("T")


class CircuitOpen(Exception):
    """The breaker is open: the call was not made."""


class CircuitBreaker:
    def __init__(
        self,
        threshold: int = 5,
        cooldown: float = 30.0,
        transient: tuple[type[BaseException], ...] = (Exception,),
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.threshold = threshold
        self.cooldown = cooldown
        self._transient = transient
        self._clock = clock
        self._failures = 0
        self._opened_at: float | None = None
        self._trial_running = False

    @property
    def state(self) -> str:
        if self._opened_at is None:
            return "closed"
        if self._clock() - self._opened_at >= self.cooldown:
            return "half-open"
        return "open"

    async def call(self, fn: Callable[[], Awaitable[T]]) -> T:
        state = self.state
        if state == "open" or (state == "half-open" and self._trial_running):
            raise CircuitOpen("Midtrans circuit is open: failing fast")
        trial = state == "half-open"
        self._trial_running = trial
        try:
            result = await fn()
        except self._transient:
            self._failures += 1
            if trial or self._failures >= self.threshold:
                self._opened_at = self._clock()
            raise
        finally:
            if trial:
                self._trial_running = False
        self._failures = 0
        self._opened_at = None
        return result
