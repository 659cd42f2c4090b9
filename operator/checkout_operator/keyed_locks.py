"""One lock per key, kept only while someone holds it or waits for it.

The reconciler runs one step at a time per checkout. A lock per checkout kept until the
resource's deletion held one ``asyncio.Lock`` for every ended checkout waiting an hour
for its TTL delete; here a key's lock is dropped when its last user leaves.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Hashable
from typing import Generic, TypeVar

K = TypeVar("K", bound=Hashable)


class _Entry:
    __slots__ = ("lock", "users")

    def __init__(self) -> None:
        self.lock = asyncio.Lock()
        self.users = 0


class KeyedLocks(Generic[K]):
    def __init__(self) -> None:
        self._held: dict[K, _Entry] = {}

    def __len__(self) -> int:
        return len(self._held)

    @contextlib.asynccontextmanager
    async def __call__(self, key: K) -> AsyncIterator[None]:
        """``async with locks(key):`` runs alone among the holders of ``key``."""
        entry = self._held.get(key)
        if entry is None:
            entry = self._held[key] = _Entry()
        entry.users += 1
        try:
            async with entry.lock:
                yield
        finally:  # also when cancelled while waiting: no longer a user
            entry.users -= 1
            if not entry.users:
                del self._held[key]
