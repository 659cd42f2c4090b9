"""One timer for every checkout's deadline (``checkout_operator.wakeups``)."""

from __future__ import annotations

import asyncio

from checkout_operator import wakeups as module
from checkout_operator.wakeups import Wakeups


class Woken:
    """What woke, when (the loop's clock), and an event per key to wait on."""

    def __init__(self) -> None:
        self.keys: list[str] = []
        self.at: dict[str, float] = {}
        self._events: dict[str, asyncio.Event] = {}

    def __call__(self, key: str) -> None:
        self.keys.append(key)
        self.at[key] = asyncio.get_running_loop().time()
        self.event(key).set()

    def event(self, key: str) -> asyncio.Event:
        return self._events.setdefault(key, asyncio.Event())

    async def wait(self, key: str) -> None:
        await asyncio.wait_for(self.event(key).wait(), 5)


async def test_keys_wake_in_deadline_order_once_each() -> None:
    woken = Woken()
    wakeups: Wakeups[str] = Wakeups(woken)
    wakeups.after("c", 0.06)
    wakeups.after("a", 0.02)
    wakeups.after("b", 0.04)
    assert "a" in wakeups and len(wakeups) == 3
    await woken.wait("c")
    assert woken.keys == ["a", "b", "c"]
    assert len(wakeups) == 0 and "a" not in wakeups


async def test_a_deadline_set_again_moves_and_cancel_drops_it() -> None:
    woken = Woken()
    wakeups: Wakeups[str] = Wakeups(woken)
    began = asyncio.get_running_loop().time()
    wakeups.after("later", 0.01)
    wakeups.after("later", 0.08)  # moved: not at 0.01
    wakeups.after("gone", 0.02)
    wakeups.cancel("gone")
    wakeups.after("sooner", 0.5)
    wakeups.after("sooner", 0.03)  # moved earlier than the armed timer
    wakeups.after("last", 0.1)  # wakes after all the others would have
    await woken.wait("last")
    assert woken.keys == ["sooner", "later", "last"]
    assert woken.at["sooner"] - began < 0.5
    assert woken.at["later"] - began >= 0.08


async def test_many_deadlines_share_one_loop_timer() -> None:
    loop = asyncio.get_running_loop()
    armed: list[float] = []
    call_at = loop.call_at

    def counting(when: float, *args: object) -> asyncio.TimerHandle:
        armed.append(when)
        return call_at(when, *args)  # type: ignore[arg-type]

    loop.call_at = counting  # type: ignore[method-assign,assignment]
    try:
        wakeups: Wakeups[int] = Wakeups(lambda _: None)
        for key in range(1000):
            wakeups.after(key, 3600 + key)  # an hour of TTL deletes, latest last
        assert len(armed) == 1
    finally:
        del loop.call_at
        wakeups.close()


async def test_moved_deadlines_leave_a_bounded_heap() -> None:
    wakeups: Wakeups[int] = Wakeups(lambda _: None)
    for round_ in range(50):
        for key in range(100):
            wakeups.after(key, 60 + round_)  # each moved 50 times
    assert len(wakeups) == 100
    assert len(wakeups._heap) <= module.STALE_FLOOR + (module.STALE_PER_LIVE + 1) * 100
    wakeups.close()


async def test_close_wakes_nothing() -> None:
    woken = Woken()
    wakeups: Wakeups[str] = Wakeups(woken)
    wakeups.after("a", 0.01)
    wakeups.close()
    after: Wakeups[str] = Wakeups(woken)  # a witness: wakes after "a" would have
    after.after("witness", 0.03)
    await woken.wait("witness")
    assert woken.keys == ["witness"]


async def test_a_failing_wake_up_does_not_strand_the_others() -> None:
    woken = Woken()

    def wake(key: str) -> None:
        woken(key)
        if key == "a":
            raise RuntimeError("a bug in one wake-up")

    loop = asyncio.get_running_loop()
    errors: list[BaseException | None] = []
    loop.set_exception_handler(lambda _, context: errors.append(context.get("exception")))
    try:
        wakeups: Wakeups[str] = Wakeups(wake)
        wakeups.after("a", 0.01)
        wakeups.after("b", 0.01)  # due in the same firing as "a"
        await woken.wait("b")
    finally:
        loop.set_exception_handler(None)
    assert woken.keys == ["a", "b"]
    assert [type(e) for e in errors] == [RuntimeError]
