"""Refusing overload at once instead of queueing it.

Every POST waits while its saga runs. When buyers arrive faster than the saga can
serve them, the waits grow without bound (a 50/s burst once made buyers wait 16 s).
The API admits at most ``limit`` POSTs at a time per process; the next one is
answered straight away with 503 ``Overloaded`` and ``Retry-After``, so a client backs
off and an admitted buyer's wait stays short. The limit is a setting
(``CHECKOUT_API_MAX_IN_FLIGHT``): about the saga's throughput times the wait one
accepts (docs/performance.md).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

from .limits import Refused

RETRY_AFTER_SECONDS = 1


class Admission:
    def __init__(self, limit: int) -> None:
        if limit < 1:
            raise ValueError(f"the in-flight limit must be at least 1, got {limit}")
        self.limit = limit
        self.inside = 0
        self.refused = 0

    def free(self) -> int:
        """Places free now."""
        return self.limit - self.inside

    @contextlib.contextmanager
    def admit(self) -> Iterator[None]:
        """Hold one place while the POST runs; :class:`Refused` (503) when none is free."""
        if self.inside >= self.limit:
            self.refused += 1
            raise Refused(
                503,
                "Overloaded",
                f"{self.limit} checkouts are being opened right now; retry shortly",
                retry_after=RETRY_AFTER_SECONDS,
            )
        self.inside += 1
        try:
            yield
        finally:
            self.inside -= 1
