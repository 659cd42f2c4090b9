"""Refusing overload at once instead of queueing it.

Every POST waits while its saga runs. When buyers arrive faster than the saga can
serve them, the waits grow without bound (a 50/s burst once made buyers wait 16 s).
The API admits at most ``limit`` POSTs at a time per process; the next one is
answered straight away with 503 ``Overloaded`` and ``Retry-After``, so a client backs
off and an admitted buyer's wait stays short.

A fixed limit bounds the wait only at a fixed speed: by Little's law an admitted
buyer waits about ``limit / throughput``, and throughput falls when the machine is
busier (an hour of ended checkouts to watch, another tenant on the node): 32 places
meant admitted waits of 1-2 s at 50/s. So the limit adapts, as TCP's window does
(and Netflix's concurrency-limits, Envoy's adaptive concurrency): a POST slower than
``target`` seconds cuts it by a tenth, at most once per generation of POSTs (only a
POST admitted after the last cut counts, since the earlier ones were slowed by the
limit before it); each POST answered in time while the places are in use gives
``1/limit`` back, so a calm minute restores the ceiling. The ceiling is
``CHECKOUT_API_MAX_IN_FLIGHT``, the floor ``CHECKOUT_API_MIN_IN_FLIGHT``, the target
``CHECKOUT_API_ADMIT_TARGET_SECONDS`` (0: a fixed limit). docs/edges.md.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator

from .limits import Refused

RETRY_AFTER_SECONDS = 1
CUT = 0.9  # the limit after a slow POST, as a share of the one before
IN_USE = 0.5  # grows only while at least this share of the places is taken


def default_floor(ceiling: int) -> int:
    """The adaptive limit's floor when none is set: a quarter of the ceiling."""
    return max(1, ceiling // 4)


class Admission:
    def __init__(
        self,
        limit: int,
        *,
        target_seconds: float = 0.0,
        floor: int | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if limit < 1:
            raise ValueError(f"the in-flight limit must be at least 1, got {limit}")
        self.ceiling = limit
        self.floor = default_floor(limit) if floor is None else floor
        if not 1 <= self.floor <= limit:
            raise ValueError(f"the in-flight floor must be 1..{limit}, got {self.floor}")
        if target_seconds < 0:
            raise ValueError(f"the admission target must be 0 or more, got {target_seconds}")
        self.target = target_seconds
        self._clock = clock
        self._limit = float(limit)
        self._last_cut = float("-inf")
        self.inside = 0
        self.refused = 0
        self.cuts = 0

    @property
    def limit(self) -> int:
        """POSTs admitted at once now."""
        return int(self._limit)

    def free(self) -> int:
        """Places free now."""
        return max(0, self.limit - self.inside)

    @contextlib.contextmanager
    def admit(self) -> Iterator[None]:
        """Hold one place while the POST runs; :class:`Refused` (503) when none is free."""
        limit = self.limit
        if self.inside >= limit:
            self.refused += 1
            raise Refused(
                503,
                "Overloaded",
                f"{limit} checkouts are being opened right now; retry shortly",
                retry_after=RETRY_AFTER_SECONDS,
            )
        self.inside += 1
        began = self._clock()
        try:
            yield
        finally:
            self.inside -= 1
            self._adapt(began, self._clock())

    def _adapt(self, began: float, ended: float) -> None:
        if not self.target:
            return
        if ended - began > self.target:
            if began > self._last_cut:  # admitted under the current limit
                self._limit = max(float(self.floor), self._limit * CUT)
                self._last_cut = ended
                self.cuts += 1
        elif self.inside + 1 >= IN_USE * self._limit:
            self._limit = min(float(self.ceiling), self._limit + 1 / self._limit)
