"""One lock per key, kept only while someone holds it or waits for it.

The reconciler runs one step at a time per checkout. A lock per checkout kept until the
resource's deletion held one ``asyncio.Lock`` for every ended checkout waiting an hour
for its TTL delete; here a key's lock is dropped when its last user leaves.
"""

from __future__ import annotations

import asyncio
from collections.abc import Hashable
from types import TracebackType
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

    def __call__(self, key: K) -> _Hold[K]:
        """``async with locks(key):`` runs alone among the holders of ``key``."""
        return _Hold(self, key)

    def __len__(self) -> int:
        return len(self._held)

    def _enter(self, key: K) -> asyncio.Lock:
        entry = self._held.get(key)
        if entry is None:
            entry = self._held[key] = _Entry()
        entry.users += 1
        return entry.lock

    def _leave(self, key: K) -> None:
        entry = self._held[key]
        entry.users -= 1
        if not entry.users:
            del self._held[key]


class _Hold(Generic[K]):
    __slots__ = ("_key", "_lock", "_locks")

    def __init__(self, locks: KeyedLocks[K], key: K) -> None:
        self._locks = locks
        self._key = key
        self._lock: asyncio.Lock | None = None

    async def __aenter__(self) -> None:
        lock = self._locks._enter(self._key)
        try:
            await lock.acquire()
        except BaseException:  # cancelled while waiting: no longer a user
            self._locks._leave(self._key)
            raise
        self._lock = lock

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        assert self._lock is not None
        self._lock.release()
        self._locks._leave(self._key)
