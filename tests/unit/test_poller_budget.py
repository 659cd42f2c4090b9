"""The poller's global budget: however many checkouts, at most `rate` calls per second."""

from __future__ import annotations

from typing import Any, ClassVar

import pytest

from checkout_operator.poller import TokenBucket


class FakeTime:
    def __init__(self) -> None:
        self.now = 0.0

    def clock(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.now += seconds


async def test_ten_thousand_due_checkouts_get_at_most_rate_calls_per_second() -> None:
    fake = FakeTime()
    bucket = TokenBucket(rate=10, burst=10, clock=fake.clock, sleep=fake.sleep)
    calls_at: list[float] = []
    for _ in range(1_000):  # 1,000 of 10,000 due checkouts, taken as fast as allowed
        await bucket.take()
        calls_at.append(fake.now)
    # After the initial burst of 10, calls are spaced 1/rate apart.
    assert calls_at[9] == 0.0
    assert abs(calls_at[-1] - (1_000 - 10) / 10) < 1e-6
    for second in range(1, int(calls_at[-1])):
        in_window = [t for t in calls_at if second <= t < second + 1]
        assert len(in_window) <= 10


async def test_an_idle_bucket_saves_up_only_its_burst() -> None:
    fake = FakeTime()
    bucket = TokenBucket(rate=2, burst=3, clock=fake.clock, sleep=fake.sleep)
    fake.now = 3600.0  # an hour without calls
    for _ in range(3):
        await bucket.take()
    assert fake.now == 3600.0
    await bucket.take()
    assert fake.now == 3600.5


async def test_late_payment_watching_never_takes_the_live_checkouts_budget() -> None:
    from checkout_operator.poller import LIVE_SHARE, PaymentPoller

    class Settings:
        poll_interval, poll_min_age, poll_rate = 60.0, 10.0, 10.0

    class Reconciler:
        class deps:
            settings = Settings()

    poller = PaymentPoller(Reconciler())  # type: ignore[arg-type]
    assert poller.bucket.rate + poller.late_bucket.rate == Settings.poll_rate
    assert poller.bucket.rate == Settings.poll_rate * LIVE_SHARE
    slept: list[float] = []

    async def sleep(seconds: float) -> None:
        slept.append(seconds)
        raise TimeoutError  # the late watchers would have to wait now

    poller.late_bucket._sleep = sleep
    poller.late_bucket._tokens = 0.0  # thousands of ended pages used the late share up
    with pytest.raises(TimeoutError):
        await poller.late_bucket.take()
    await poller.bucket.take()  # a live checkout is polled at once all the same
    assert slept


async def test_status_calls_overlap_so_the_rate_is_reachable_at_midtrans_latency() -> None:
    """One call at a time, a 300 ms round trip would cap the rate at 3 calls per second
    whatever CHECKOUT_POLL_RATE says: polls run side by side, never two for one checkout."""
    import asyncio

    from checkout_operator.poller import POLL_CONCURRENCY, PaymentPoller

    class Settings:
        poll_interval, poll_min_age, poll_rate = 60.0, 0.0, 1_000.0

    class Reconciler:
        class deps:
            settings = Settings()

        cache: ClassVar[dict[tuple[str, str], dict[str, Any]]] = {
            ("ns", f"order-{n}"): {
                "status": {"phase": "AwaitingPayment", "payment": {"snapToken": "t"}}
            }
            for n in range(3 * POLL_CONCURRENCY)
        }

    poller = PaymentPoller(Reconciler())  # type: ignore[arg-type]
    in_flight: set[str] = set()
    most = 0
    release, full = asyncio.Event(), asyncio.Event()

    async def poll(key: tuple[str, str]) -> None:
        nonlocal most
        assert key[1] not in in_flight
        in_flight.add(key[1])
        most = max(most, len(in_flight))
        if most == POLL_CONCURRENCY:
            full.set()
        await release.wait()  # Midtrans taking its time
        in_flight.discard(key[1])

    poller._poll = poll  # type: ignore[method-assign]
    poller._due = dict.fromkeys(Reconciler.cache, 0.0)
    poller._next_scan = float("inf")
    due = asyncio.create_task(poller.poll_due())
    await asyncio.wait_for(full.wait(), 10)
    await asyncio.sleep(0.05)  # room for a poll beyond the bound to start, if one could
    assert not due.done()  # the next poll waits for a free slot, it does not pile up
    assert most == POLL_CONCURRENCY
    release.set()
    await due
    await poller.drain()
    assert not in_flight
