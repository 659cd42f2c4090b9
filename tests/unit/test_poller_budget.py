"""The poller's global budget: however many checkouts, at most `rate` calls per second."""

from __future__ import annotations

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
