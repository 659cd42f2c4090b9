"""What the webhook listener recorded on the payment-status stream, and how far the
operator's payment inbox (its durable consumer there) has acknowledged it.

The positive signals e2e tests wait on: a notification is on the stream (so the
listener took it), and the inbox acknowledged it (so the operator acted on it, or
decided there was nothing to do) before a test checks that something did or did not
change.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

from nats.js import JetStreamContext
from nats.js.errors import NotFoundError

from saga_kit.events import Topology
from tests.e2e.conftest import System
from tests.helpers.waiting import eventually

INBOX = "checkout-operator"  # the operator's durable consumer (checkout_operator.inbox)


@dataclass(frozen=True)
class Recorded:
    seq: int
    payload: dict[str, Any]


@dataclass(frozen=True)
class PaymentStream:
    js: JetStreamContext
    name: str = Topology().payment_stream

    async def last_seq(self) -> int:
        return int((await self.js.stream_info(self.name)).state.last_seq)

    async def recorded(self, order_id: str, after: int) -> list[Recorded]:
        """The notifications for ``order_id`` recorded after stream seq ``after``."""
        found = []
        for seq in range(after + 1, await self.last_seq() + 1):
            try:
                msg = await self.js.get_msg(self.name, seq)
            except NotFoundError:
                continue
            try:
                payload = json.loads(msg.data or b"")
            except ValueError:
                continue
            if isinstance(payload, dict) and payload.get("order_id") == order_id:
                found.append(Recorded(seq, payload))
        return found

    async def wait_recorded(self, order_id: str, after: int, count: int = 1) -> list[Recorded]:
        found: list[Recorded] = []

        async def enough() -> bool:
            found[:] = await self.recorded(order_id, after)
            return len(found) >= count

        await eventually(enough, within=30, interval=0.05)
        return found

    async def acked(self, seq: int) -> bool:
        """Whether the inbox has acknowledged (or given up on) every message up to ``seq``."""
        info = await self.js.consumer_info(self.name, INBOX)
        return info.ack_floor is not None and (info.ack_floor.stream_seq or 0) >= seq

    async def wait_acked(self, seq: int) -> None:
        async def done() -> bool:
            return await self.acked(seq)

        await eventually(done, within=60, interval=0.02)


@asynccontextmanager
async def payment_stream(system: System) -> AsyncIterator[PaymentStream]:
    nc = await system.platform.nats()
    try:
        yield PaymentStream(nc.jetstream())
    finally:
        await nc.close()
