"""A memory of the latest entries: bounded, the oldest dropped first.

What the operator remembers to save a read (sales for the payment inbox, its own TTL
deletes, deleted checkouts) must not grow with throughput: each keeps the latest
``size`` and reads (or the sweep) cover what was dropped.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Generic, TypeVar

K = TypeVar("K")
V = TypeVar("V")


class Latest(Generic[K, V]):
    def __init__(self, size: int) -> None:
        self._size = size
        self._entries: OrderedDict[K, V] = OrderedDict()

    def put(self, key: K, value: V) -> None:
        self._entries[key] = value
        self._entries.move_to_end(key)
        while len(self._entries) > self._size:
            self._entries.popitem(last=False)

    def get(self, key: K) -> V | None:
        return self._entries.get(key)

    def take(self, key: K) -> bool:
        """Whether ``key`` was held; it is not any more."""
        return self._entries.pop(key, _ABSENT) is not _ABSENT

    def __contains__(self, key: object) -> bool:
        return key in self._entries

    def __len__(self) -> int:
        return len(self._entries)


_ABSENT = object()
