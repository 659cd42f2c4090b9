"""Signed HTTP notifications, delivered and retried the way Midtrans does.

Each status change of an order becomes one :class:`~midtrans_sandbox.model.Notification`.
First attempts for one order go out one at a time in order of creation (a per-order queue),
so a receiver that answers 2xx sees an order's statuses in order. A notification that is not
answered 2xx is retried on its own schedule (2, 10, 30, 90, 210 minutes between attempts,
times the time scale, plus up to 10 % jitter); how many retries depends on the last answer
(500 -> 1, 503 -> 4, 400/404 -> 2, anything else including no answer -> 5). Retries of
different statuses therefore interleave and arrive late, as with the real Midtrans: receivers
must cope with that.

Delivery records are only touched from the event loop, between awaits, so the control API
always reads a consistent picture without holding the sandbox lock during HTTP calls. Each
finished attempt and each change of a notification's state is reported to ``on_change`` (the
sandbox stores it), and :meth:`Notifier.resume` carries on, after a restart, with a delivery
a previous run had not finished: the schedule counts from the attempts already made.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections import deque
from collections.abc import Callable, Coroutine
from typing import Any

import httpx

from midtrans.transport import AiohttpTransport
from midtrans_sandbox.model import Attempt, Notification, now_utc
from midtrans_sandbox.settings import SandboxSettings

log = logging.getLogger(__name__)

RETRY_INTERVALS_MINUTES = (2, 10, 30, 90, 210)
JITTER = 0.1
USER_AGENT = "Veritrans"
INTERRUPTED = "interrupted: the sandbox stopped during the attempt"


def max_retries(http_status: int | None) -> int:
    """How many retries Midtrans makes after an answer with this status (None: no answer)."""
    if http_status == 500:
        return 1
    if http_status == 503:
        return 4
    if http_status in (400, 404):
        return 2
    return 5


def retry_delay(retry: int, time_scale: float, jitter: float) -> float:
    """Seconds to wait before retry number ``retry`` (1-based); ``jitter`` is in [0, JITTER]."""
    base = RETRY_INTERVALS_MINUTES[retry - 1] * 60.0 * time_scale
    return base * (1.0 + jitter)


class Notifier:
    """Delivers notifications to their URLs; ``transport`` is for in-process tests."""

    def __init__(
        self,
        settings: SandboxSettings,
        *,
        transport: httpx.AsyncBaseTransport | None = None,
        on_change: Callable[[Notification], None] | None = None,
    ) -> None:
        self._settings = settings
        self._on_change = on_change or (lambda _: None)
        # aiohttp carries the requests, as in the Midtrans client: httpx's own layer was
        # a third of the sandbox's CPU in a profile of paid checkouts (session 12).
        self._http = httpx.AsyncClient(
            transport=transport or AiohttpTransport(), timeout=settings.notification_timeout
        )
        # One queue per order and target URL: in order for each receiver.
        self._queues: dict[tuple[str, str], deque[Notification]] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        # Jitter only spreads load; it needs no cryptographic quality.
        self._random = random.Random()  # noqa: S311

    def submit(self, notification: Notification) -> None:
        """Queue a notification; returns at once (delivery runs in the background)."""
        if not notification.url:
            notification.state = "unsent"
            return
        key = (notification.order_id, notification.url)
        queue = self._queues.get(key)
        if queue is None:
            queue = self._queues[key] = deque()
            self._spawn(self._drain(key, queue))
        queue.append(notification)

    def resume(self, notification: Notification) -> None:
        """Carry on with a delivery a previous run left queued or retrying (others: no-op)."""
        for attempt in notification.attempts:
            if attempt.finished_at is None:  # it was in flight when that run stopped
                attempt.error = INTERRUPTED
                attempt.finished_at = attempt.at
        if notification.state == "queued":
            self.submit(notification)
        elif notification.state == "retrying":
            self._spawn(self._retry(notification))

    async def aclose(self) -> None:
        """Stop every delivery and retry and close the HTTP client (the store keeps what was
        not delivered, for the next run to resume)."""
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await self._http.aclose()

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        # Keep a reference: the loop holds tasks weakly, and aclose() must cancel them.
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _drain(self, key: tuple[str, str], queue: deque[Notification]) -> None:
        while queue:
            notification = queue.popleft()
            status = await self._attempt(notification)
            if status is None or not 200 <= status < 300:
                notification.state = "retrying"
                self._spawn(self._retry(notification))
            self._on_change(notification)
        # No await between the emptiness check and this removal: submit() cannot slip in.
        del self._queues[key]

    async def _retry(self, notification: Notification) -> None:
        while True:
            last = notification.attempts[-1]
            # Every attempt after the first is a retry: this is the next one's number. An
            # attempt a stop interrupted was never answered, so it does not count.
            retry = sum(a.error != INTERRUPTED for a in notification.attempts)
            if retry > max_retries(last.http_status):
                notification.state = "failed"
                self._on_change(notification)
                log.warning(
                    "notification %s for %s given up after %d attempts",
                    notification.id,
                    notification.order_id,
                    len(notification.attempts),
                )
                return
            jitter = self._random.uniform(0.0, JITTER)
            delay = retry_delay(retry, self._settings.time_scale, jitter)
            # Measured from the previous attempt, which a restart may have left long ago.
            waited = (now_utc() - (last.finished_at or last.at)).total_seconds()
            await asyncio.sleep(max(0.0, delay - waited))
            status = await self._attempt(notification)
            self._on_change(notification)
            if status is not None and 200 <= status < 300:
                return

    async def _attempt(self, notification: Notification) -> int | None:
        url = notification.url
        assert url is not None
        attempt = Attempt(number=len(notification.attempts) + 1, at=now_utc())
        notification.attempts.append(attempt)
        try:
            response = await self._http.post(
                url,
                json=notification.payload,
                headers={"User-Agent": USER_AGENT, "Accept": "application/json"},
            )
        except httpx.HTTPError as exc:
            attempt.error = f"{type(exc).__name__}: {exc}"
            attempt.finished_at = now_utc()
            log.info("notification %s attempt %d: %s", notification.id, attempt.number, exc)
            return None
        attempt.http_status = response.status_code
        attempt.finished_at = now_utc()
        if 200 <= response.status_code < 300:
            notification.state = "delivered"
        log.info(
            "notification %s (%s %s) attempt %d -> %d",
            notification.id,
            notification.order_id,
            notification.payload["transaction_status"],
            attempt.number,
            response.status_code,
        )
        return response.status_code
