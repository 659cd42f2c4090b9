"""A lock per key only while it is held or awaited (``checkout_operator.keyed_locks``)."""

from __future__ import annotations

import asyncio
import contextlib

from checkout_operator.keyed_locks import KeyedLocks


async def test_one_holder_per_key_and_other_keys_in_parallel() -> None:
    locks: KeyedLocks[str] = KeyedLocks()
    running: dict[str, int] = {"a": 0, "b": 0}
    most: dict[str, int] = {"a": 0, "b": 0}

    async def step(key: str) -> None:
        async with locks(key):
            running[key] += 1
            most[key] = max(most[key], running[key])
            await asyncio.sleep(0.01)
            running[key] -= 1

    await asyncio.gather(*(step(k) for k in "aaabbb"))
    assert most == {"a": 1, "b": 1}


async def test_no_lock_is_kept_once_nobody_holds_or_waits() -> None:
    locks: KeyedLocks[str] = KeyedLocks()
    async with locks("a"):
        waiter = asyncio.create_task(_hold(locks, "a"))
        await asyncio.sleep(0)
        assert len(locks) == 1
    await waiter
    assert len(locks) == 0
    with contextlib.suppress(RuntimeError):
        async with locks("b"):
            raise RuntimeError("a failing step")
    assert len(locks) == 0


async def test_a_waiter_cancelled_leaves_nothing_behind() -> None:
    locks: KeyedLocks[str] = KeyedLocks()
    async with locks("a"):
        waiter = asyncio.create_task(_hold(locks, "a"))
        await asyncio.sleep(0)
        waiter.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await waiter
    assert len(locks) == 0


async def _hold(locks: KeyedLocks[str], key: str) -> None:
    async with locks(key):
        await asyncio.sleep(0)
