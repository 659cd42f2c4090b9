"""Genuine Midtrans notifications, posted again: duplicated, late and out of order.

Every signed notification the sandbox made for a payment (its control answers list them
under ``notifications``) is kept. While the chaos runs, random ones are posted to the
webhook listener again, some several times in a row, some only after a delay, in an
order that often puts an older status after a newer one; at the end all of them are
posted once more, shuffled. The sandbox delivers each of them itself as well, so every
one posted here is a duplicate, and many are stale. A post that fails (the listener is
down) is just counted: Midtrans' own retries and the operator's poller are the paths
that must not lose a payment.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import httpx


@dataclass
class Captured:
    payload: dict[str, str]
    at: float  # time.monotonic() when seen
    rank: int  # position among the notifications of its order


@dataclass
class Notifications:
    listener: str
    http: httpx.AsyncClient
    rng: random.Random
    captured: list[Captured] = field(default_factory=list)
    posted: Counter[str] = field(default_factory=Counter)
    _latest_posted: dict[str, int] = field(default_factory=dict)
    _tasks: set[asyncio.Task[None]] = field(default_factory=set)

    def keep(self, sandbox_answer: dict[str, Any]) -> None:
        """Keep the notifications listed in a sandbox control answer (not seen before)."""
        seen = {(c.payload["order_id"], c.rank) for c in self.captured}
        for rank, notification in enumerate(sandbox_answer.get("notifications", [])):
            payload = notification["payload"]
            if (payload["order_id"], rank) not in seen:
                self.captured.append(Captured(payload, time.monotonic(), rank))

    async def post(self, item: Captured) -> None:
        order = item.payload["order_id"]
        if time.monotonic() - item.at > 5.0:
            self.posted["late (> 5 s)"] += 1
        if item.rank < self._latest_posted.get(order, -1):
            self.posted["out of order (older status after newer)"] += 1
        self._latest_posted[order] = max(item.rank, self._latest_posted.get(order, -1))
        try:
            reply = await self.http.post(self.listener, json=item.payload)
        except httpx.TransportError:
            self.posted["not delivered (listener down)"] += 1
            return
        self.posted["posted again"] += 1
        if reply.status_code != 200:
            self.posted[f"answered {reply.status_code}"] += 1

    def _later(self, item: Captured, delay: float) -> None:
        async def post_later() -> None:
            await asyncio.sleep(delay)
            await self.post(item)

        task = asyncio.get_running_loop().create_task(post_later())
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def replay(self, stop: asyncio.Event) -> None:
        """Until ``stop``: every 0.2-1 s a few captured notifications posted again."""
        while not stop.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), self.rng.uniform(0.2, 1.0))
            if not self.captured:
                continue
            picked = self.rng.sample(self.captured, min(len(self.captured), 3))
            # Newest last at the sandbox: reversed puts older statuses after newer ones.
            picked.sort(key=lambda c: c.rank, reverse=self.rng.random() < 0.5)
            for item in picked:
                if self.rng.random() < 0.3:
                    self._later(item, self.rng.uniform(2.0, 20.0))
                    continue
                for _ in range(self.rng.randint(1, 3)):
                    await self.post(item)

    async def replay_all(self) -> None:
        """After the chaos: the delayed posts land, then every notification once more."""
        await asyncio.gather(*self._tasks, return_exceptions=True)
        everything = list(self.captured)
        self.rng.shuffle(everything)
        for item in everything:
            await self.post(item)
