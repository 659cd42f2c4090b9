"""Waiting in tests for something that happens in another task or process."""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import Awaitable, Callable


async def eventually(
    check: Callable[[], bool | Awaitable[bool]], within: float = 5.0, interval: float = 0.01
) -> None:
    """Wait until ``check()`` (a plain or an async predicate) is true; AssertionError
    after ``within`` seconds."""
    deadline = time.monotonic() + within

    async def holds() -> bool:
        result = check()
        if inspect.isawaitable(result):
            result = await result
        return bool(result)

    while not await holds():
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {within}s")
        await asyncio.sleep(interval)
