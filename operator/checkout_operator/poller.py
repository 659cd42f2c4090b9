"""Polling Midtrans for payments, within one global request budget.

Notifications can be late or lost, so the operator also asks Midtrans' status
API. Each checkout with a payment page is asked about every ``interval``
seconds (with jitter, so checkouts created together don't poll together), but
all of them share a budget of ``rate`` calls per second: with 10,000 live
checkouts the interval stretches instead of the call rate growing. Orders of
checkouts that ended without payment are watched from the journal instead, until
their Snap page can no longer be paid (``returns``, sharing this budget).
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Awaitable, Callable
from typing import Any

from midtrans import MidtransError
from saga_kit.logs import about_order
from saga_kit.supervise import every

from . import metrics
from .actions import apply_payment
from .breaker import CircuitOpen
from .reconciler import Key, Reconciler, awaiting_payment

log = logging.getLogger(__name__)

# Seconds between looks at which checkouts need polling (the reconciler's index of those
# awaiting payment): about twice per minimum age, not on every tick. A checkout's first
# poll is due that age after it is found anyway; one that ends meanwhile is dropped when
# it comes due.
SCAN_INTERVAL = 1.0  # at least
LIVE_SHARE = 0.7  # of CHECKOUT_POLL_RATE for live checkouts; the rest for late-payment watching
# Status calls in flight at once. One at a time, a call's round trip caps the rate
# (300 ms to Midtrans: 3 calls/s, whatever CHECKOUT_POLL_RATE says); the bucket, not
# this bound, keeps the rate.
POLL_CONCURRENCY = 16


class TokenBucket:
    """``rate`` tokens per second, at most ``burst`` saved up.

    The clock and the sleep are injectable, so the budget is tested without waiting.
    """

    def __init__(
        self,
        rate: float,
        burst: float = 1.0,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self.rate = rate
        self.burst = burst
        self._clock = clock
        self._sleep = sleep
        self._tokens = burst
        self._at = clock()

    async def take(self) -> None:
        while True:
            now = self._clock()
            self._tokens = min(self.burst, self._tokens + (now - self._at) * self.rate)
            self._at = now
            if self._tokens >= 1 - 1e-9:  # tolerate float rounding of elapsed * rate
                self._tokens = max(0.0, self._tokens - 1)
                return
            await self._sleep((1 - self._tokens) / self.rate)


class PaymentPoller:
    def __init__(self, reconciler: Reconciler) -> None:
        self.reconciler = reconciler
        settings = reconciler.deps.settings
        self.interval = settings.poll_interval
        self.min_age = settings.poll_min_age
        # Live checkouts come first: the budget for pages of ended checkouts (watched
        # for late payments, see returns.py) is a separate, smaller share, so thousands
        # of those can never starve the polls of buyers paying now.
        live = settings.poll_rate * LIVE_SHARE
        late = settings.poll_rate - live
        self.bucket = TokenBucket(live, burst=max(1.0, live))
        self.late_bucket = TokenBucket(late, burst=max(1.0, late))
        self._due: dict[Key, float] = {}
        self._next_scan = 0.0
        self._scan_every = max(SCAN_INTERVAL, min(self.min_age, self.interval) / 2)
        self._slots = asyncio.Semaphore(POLL_CONCURRENCY)
        self._in_flight: set[Key] = set()
        self._polls: set[asyncio.Task[None]] = set()

    def _candidates(self) -> list[Key]:
        return list(self.reconciler.awaiting)

    async def run(self, stop: asyncio.Event, tick: float = 0.2) -> None:
        try:
            await every(tick, self.poll_due, stop, "polling Midtrans")
        except asyncio.CancelledError:
            # Cancelled (the lease was lost): no poll in flight may write either.
            for poll in self._polls:
                poll.cancel()
            raise
        await self.drain()

    async def drain(self) -> None:
        """Wait for the polls in flight (each is a read and at most one status write)."""
        if self._polls:
            await asyncio.gather(*self._polls, return_exceptions=True)

    async def poll_due(self) -> None:
        now = time.monotonic()
        if now >= self._next_scan:
            # Which checkouts to poll changes slowly: scanning the whole cache on
            # every tick would cost O(checkouts) many times a second.
            self._next_scan = now + self._scan_every
            live = set(self._candidates())
            for key in list(self._due):
                if key not in live:
                    del self._due[key]
            for key in live - self._due.keys():
                # First look after min_age, spread over the interval.
                self._due[key] = now + self.min_age + random.uniform(0, self.interval)  # noqa: S311
        for key in sorted((k for k, t in self._due.items() if t <= now), key=self._due.__getitem__):
            if key in self._in_flight:
                continue  # its last poll has not answered yet
            if not awaiting_payment(self.reconciler.cache.get(key)):
                del self._due[key]  # ended (or gone) since the last scan
                continue
            await self.bucket.take()
            self._due[key] = time.monotonic() + self.interval * random.uniform(0.8, 1.2)  # noqa: S311
            await self._slots.acquire()
            self._in_flight.add(key)
            poll = asyncio.create_task(self._poll_one(key), name=f"poll {key[1]}")
            self._polls.add(poll)
            poll.add_done_callback(self._polls.discard)

    async def _poll_one(self, key: Key) -> None:
        try:
            with about_order(key[1]):
                await self._poll(key)
        except Exception:
            log.exception("polling %s/%s failed", *key)  # looked at again next interval
        finally:
            self._in_flight.discard(key)
            self._slots.release()

    async def _poll(self, key: Key) -> None:
        deps = self.reconciler.deps
        record = await deps.readmodel.get(key[1])
        if record is None or not record.midtrans_order_id:
            return
        order = record.midtrans_order_id
        try:
            status = await deps.breaker.call(lambda: deps.midtrans.status(order))
        except (MidtransError, CircuitOpen) as exc:
            metrics.MIDTRANS_ERRORS.labels("status", type(exc).__name__).inc()
            log.info("status of %s: %s", order, exc)
            return
        if status is None:
            return

        async def act(body: dict[str, Any]) -> dict[str, Any] | None:
            return await apply_payment(deps, body, status)

        await self.reconciler.exclusive(key, act)
