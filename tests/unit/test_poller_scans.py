"""What the poller's look for work costs: the whole cache is read about twice per minimum
age, not on every tick, and a checkout that ended in between is not polled."""

from __future__ import annotations

from typing import Any

import pytest

from checkout_operator import poller as poller_module
from checkout_operator.poller import PaymentPoller
from checkout_operator.reconciler import awaiting_payment

Key = tuple[str, str]


def body(phase: str) -> dict[str, Any]:
    return {"status": {"phase": phase, "payment": {"snapToken": "t"}}}


class Settings:
    poll_interval, poll_min_age, poll_rate = 60.0, 10.0, 1_000.0


class Reconciler:
    def __init__(self, cache: dict[Key, dict[str, Any]]) -> None:
        self.cache = cache

        class Deps:
            settings = Settings()

        self.deps = Deps()

    @property
    def awaiting(self) -> set[Key]:  # the real one keeps this index as the cache changes
        return {key for key, body in self.cache.items() if awaiting_payment(body)}


class FakeTime:
    """The poller's clock (``time.monotonic``), moved by the test."""

    def __init__(self, now: list[float]) -> None:
        self._now = now

    def monotonic(self) -> float:
        return self._now[0]


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    now = [1_000.0]
    monkeypatch.setattr(poller_module, "time", FakeTime(now))
    return now


async def test_the_cache_is_read_twice_per_minimum_age_not_every_tick(clock: list[float]) -> None:
    # Thousands of ended checkouts stay cached until their TTL delete: each scan reads them.
    cache = {("ns", f"ended-{n}"): body("Settled") for n in range(1_000)}
    poller = PaymentPoller(Reconciler(cache))  # type: ignore[arg-type]
    scans = 0
    candidates = poller._candidates

    def counted() -> list[Key]:
        nonlocal scans
        scans += 1
        return candidates()

    poller._candidates = counted  # type: ignore[method-assign]
    for _ in range(50):  # ten seconds of the production tick (0.2 s)
        await poller.poll_due()
        clock[0] += 0.2
    assert scans <= 2  # minimum age 10 s: a look every 5 s (it was every second: 10)


async def test_a_checkout_that_ended_since_the_last_scan_is_not_polled(clock: list[float]) -> None:
    key = ("ns", "order-1")
    cache = {key: body("AwaitingPayment")}
    poller = PaymentPoller(Reconciler(cache))  # type: ignore[arg-type]
    polled: list[Key] = []

    async def poll(k: Key) -> None:
        polled.append(k)

    setattr(poller, "_poll", poll)  # noqa: B010 (Midtrans is not asked here)
    await poller.poll_due()  # the scan finds it; its first poll is due later
    clock[0] = poller._due[key]
    await poller.poll_due()
    await poller.drain()
    assert polled == [key]  # live: polled
    clock[0] = poller._due[key] - 0.5
    await poller.poll_due()  # a scan: still live, its next poll due in half a second
    cache[key] = body("Settled")  # the watch brings its ending before the next scan
    clock[0] += 0.5
    await poller.poll_due()
    await poller.drain()
    assert polled == [key]  # not polled again
    assert key not in poller._due
