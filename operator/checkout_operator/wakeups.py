"""Wake-ups at deadlines for many keys, on one timer.

Every ended checkout waits up to an hour for its TTL delete, and every open one for its
payment deadline. One ``loop.call_later`` each held a ``TimerHandle`` (plus uvloop's
timer and a copy of the caller's logging context) per checkout: 15,000 of them after a
restart with 15,000 ended Checkouts. Here each key costs a dict entry and a heap entry.
"""

from __future__ import annotations

import asyncio
import heapq
from collections.abc import Callable, Hashable
from typing import Generic, TypeVar

K = TypeVar("K", bound=Hashable)

# Moved and cancelled deadlines leave their old heap entries behind (dropped when they
# reach the top); past this many per live deadline the heap is rebuilt.
STALE_PER_LIVE = 2
STALE_FLOOR = 256


class Wakeups(Generic[K]):
    """Calls ``wake(key)`` once the loop's clock reaches the key's deadline.

    A key has at most one deadline: setting it again moves it, ``cancel`` drops it.
    Not thread-safe: used from the loop that runs it.
    """

    def __init__(self, wake: Callable[[K], None]) -> None:
        self._wake = wake
        self._due: dict[K, float] = {}
        self._heap: list[tuple[float, int, K]] = []
        self._seq = 0  # ties: keys need not be comparable
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at = 0.0

    def __contains__(self, key: object) -> bool:
        return key in self._due

    def __len__(self) -> int:
        return len(self._due)

    def after(self, key: K, delay: float) -> None:
        """Wake ``key`` in ``delay`` seconds (instead of any earlier deadline of it)."""
        loop = asyncio.get_running_loop()
        when = loop.time() + max(delay, 0.0)
        self._due[key] = when
        self._seq += 1
        heapq.heappush(self._heap, (when, self._seq, key))
        if len(self._heap) > STALE_FLOOR + STALE_PER_LIVE * len(self._due):
            self._rebuild()
        self._arm(loop)

    def cancel(self, key: K) -> None:
        """Drop ``key``'s deadline, if it has one (its heap entry goes stale)."""
        self._due.pop(key, None)

    def close(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._due.clear()
        self._heap.clear()

    def _live(self, entry: tuple[float, int, K]) -> bool:
        return self._due.get(entry[2]) == entry[0]

    def _rebuild(self) -> None:
        self._heap = [entry for entry in self._heap if self._live(entry)]
        heapq.heapify(self._heap)

    def _arm(self, loop: asyncio.AbstractEventLoop) -> None:
        heap = self._heap
        while heap and not self._live(heap[0]):
            heapq.heappop(heap)
        if not heap:
            if self._timer is not None:
                self._timer.cancel()
                self._timer = None
            return
        head = heap[0][0]
        if self._timer is not None:
            if self._timer_at <= head:
                return  # fires first anyway, and re-arms for what is left
            self._timer.cancel()
        self._timer = loop.call_at(head, self._fire, loop)
        self._timer_at = head

    def _fire(self, loop: asyncio.AbstractEventLoop) -> None:
        self._timer = None
        now = loop.time()
        heap = self._heap
        try:
            while heap and heap[0][0] <= now:
                when, _, key = heapq.heappop(heap)
                if self._due.get(key) == when:
                    del self._due[key]
                    self._wake(key)
        finally:  # a wake-up that raised (the loop logs it) leaves the rest armed
            self._arm(loop)
