"""Applying the Midtrans notifications the webhook listener recorded.

A durable JetStream pull consumer on ``midtrans.payment_status``. Each
notification is applied to its Checkout with the same code and the same
compare-and-swap as the poller (``apply_payment``), serialized with every other
step for that checkout. Duplicates and stale notifications change nothing (a
final payment state is never replaced; terminal phases never change). A
notification for an unknown order is acknowledged and logged, not retried
forever; one that cannot be applied now (apiserver down, lost race) is retried
with growing delays.
"""

from __future__ import annotations

import asyncio
import json
import logging
from typing import Any

from nats.aio.msg import Msg
from nats.js import JetStreamContext
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy
from nats.js.errors import NotFoundError

from midtrans import TransactionStatus
from saga_kit.events import Topology

from .actions import apply_payment
from .readmodel import order_id_of
from .reconciler import Reconciler

log = logging.getLogger(__name__)

BACKOFF = (0.5, 1.0, 2.0, 5.0, 10.0, 30.0, 60.0)


class PaymentInbox:
    def __init__(
        self,
        reconciler: Reconciler,
        js: JetStreamContext,
        topology: Topology,
        name: str = "checkout-operator",
    ) -> None:
        self.reconciler = reconciler
        self._js = js
        self._topology = topology
        self._name = name
        self._sub: JetStreamContext.PullSubscription | None = None

    async def ensure(self) -> None:
        stream = self._topology.payment_stream
        try:
            await self._js.consumer_info(stream, self._name)
        except NotFoundError:
            await self._js.add_consumer(
                stream,
                ConsumerConfig(
                    durable_name=self._name,
                    ack_policy=AckPolicy.EXPLICIT,
                    deliver_policy=DeliverPolicy.ALL,
                    ack_wait=60,
                    max_ack_pending=1000,
                ),
            )
        self._sub = await self._js.pull_subscribe_bind(self._name, stream=stream)

    async def run(self, stop: asyncio.Event) -> None:
        if self._sub is None:
            await self.ensure()
        assert self._sub is not None
        while not stop.is_set():
            try:
                messages = await self._sub.fetch(32, timeout=1.0)
            except TimeoutError:
                continue
            await asyncio.gather(*(self.process(m) for m in messages))

    async def process(self, msg: Msg) -> None:
        try:
            status = TransactionStatus.from_json(json.loads(msg.data))
        except (ValueError, TypeError) as exc:
            log.error("dropping unreadable payment notification: %s", exc)
            await msg.term()
            return
        deps = self.reconciler.deps
        record = await deps.readmodel.get(order_id_of(status.order_id))
        if record is None:
            log.warning("notification for unknown order %s acknowledged", status.order_id)
            await msg.ack()
            return
        if record.midtrans_order_id and status.order_id != record.midtrans_order_id:
            log.warning(
                "notification for %s, but the checkout's payment page is %s: ignored",
                status.order_id,
                record.midtrans_order_id,
            )
            await msg.ack()
            return

        async def act(body: dict[str, Any]) -> dict[str, Any] | None:
            if body["metadata"]["uid"] != record.uid:
                return None
            return await apply_payment(deps, body, status)

        key = (record.namespace, record.name)
        try:
            done = await self.reconciler.exclusive(key, act, attempts=3)
        except Exception as exc:
            done = False
            log.warning("applying %s to %s failed: %r", status.transaction_status, key, exc)
        if done or await deps.kube.get(*key) is None:
            await msg.ack()
            return
        attempt = msg.metadata.num_delivered
        await msg.nak(delay=BACKOFF[min(attempt, len(BACKOFF)) - 1])
