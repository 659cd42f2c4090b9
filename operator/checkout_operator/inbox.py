"""Applying the Midtrans notifications the webhook listener recorded.

A durable JetStream pull consumer on ``midtrans.payment_status``. A
notification is a hint, never evidence: Midtrans signs only order id, status
code and amount, and anything on the stream may have been put there by someone
else. So for each one the operator asks Midtrans' status API about that order and
applies the answer with the same code and the same compare-and-swap as the
poller (``apply_payment``), serialized with every other step for that checkout.
Duplicates and stale notifications change nothing (a final payment state is
never replaced; terminal phases never change). A notification for an order of a
checkout that ended or was deleted puts that order on the journal's watch list,
so whatever was paid goes back (``returns``). A notification for an unknown
order, or one that cannot be read, is acknowledged (terminated) and logged, not
retried forever; one that cannot be applied now (Midtrans or the apiserver
down, a lost race) is retried with growing delays.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import logging
from collections.abc import Callable
from typing import Any

from nats.aio.msg import Msg
from nats.errors import Error as NatsError
from nats.js import JetStreamContext
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy
from nats.js.errors import NotFoundError

from midtrans import TransactionStatus
from midtrans.client import validate_order_id
from saga_kit.events import Topology
from saga_kit.logs import about_order

from .actions import Retry, apply_payment, confirmed_status, watch_unsettled
from .readmodel import order_id_of
from .reconciler import Reconciler
from .saga import Phase

log = logging.getLogger(__name__)

BACKOFF = (0.5, 1.0, 2.0, 5.0, 10.0, 30.0, 60.0)
FETCH = 32  # notifications asked for at a time
MAX_IN_HAND = 256  # notifications taken, waiting or processed, not yet acknowledged
LOOK_AFTER = 1.0  # seconds a notification is on the stream before it is looked at


def _settled_in(in_hand: set[asyncio.Task[None]]) -> Callable[[asyncio.Task[None]], None]:
    def done(task: asyncio.Task[None]) -> None:
        in_hand.discard(task)
        if not task.cancelled() and (exc := task.exception()) is not None:
            # An ack lost, say: the notification is redelivered.
            log.warning("payment inbox: %r", exc)

    return done


class PaymentInbox:
    def __init__(
        self,
        reconciler: Reconciler,
        js: JetStreamContext,
        topology: Topology,
        name: str = "checkout-operator",
        look_after: float = LOOK_AFTER,
    ) -> None:
        self.reconciler = reconciler
        self.look_after = look_after
        self._processing = asyncio.Semaphore(FETCH)
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
        """Take notifications as they come; each is looked at once it is ``look_after`` old.

        Each waits in a task of its own (at most ``MAX_IN_HAND``), so a wait holds up no
        other notification: the inbox keeps up with any rate the listener records.
        """
        if self._sub is None:
            await self.ensure()
        assert self._sub is not None
        in_hand: set[asyncio.Task[None]] = set()
        try:
            while not stop.is_set():
                if len(in_hand) >= MAX_IN_HAND:
                    await asyncio.wait(in_hand, return_when=asyncio.FIRST_COMPLETED)
                    continue
                try:
                    messages = await self._sub.fetch(
                        min(FETCH, MAX_IN_HAND - len(in_hand)), timeout=1.0
                    )
                except TimeoutError:
                    continue
                except NatsError as exc:  # NATS restarting: the client reconnects
                    log.warning("payment inbox: fetch failed: %r", exc)
                    await asyncio.sleep(1.0)
                    continue
                for msg in messages:
                    task = asyncio.create_task(self._in_time(msg))
                    in_hand.add(task)
                    task.add_done_callback(_settled_in(in_hand))
        finally:
            # Stopping, or no longer leading: nothing more is acted on here. What is in
            # hand is not acknowledged: JetStream redelivers it, after its ack_wait, to
            # whoever leads next (as after a crash, which every step is made to survive).
            for task in in_hand:
                task.cancel()
            await asyncio.gather(*in_hand, return_exceptions=True)

    async def _in_time(self, msg: Msg) -> None:
        """Process ``msg`` once it has been on the stream for ``look_after`` seconds.

        The listener records a notification after it wrote the Checkout Settled itself;
        by then the reconciler has usually journaled and announced that ending, so the
        notification is acknowledged from memory (``ReadModel.sold_by``) with no journal
        read and no redelivery. At most ``FETCH`` are processed at once (a backlog after
        an outage is all old enough at once: the journal's pool is shared).
        """
        age = (dt.datetime.now(dt.UTC) - msg.metadata.timestamp).total_seconds()
        # A clock behind the server's (a negative age) waits no longer than look_after.
        await asyncio.sleep(min(self.look_after, max(0.0, self.look_after - age)))
        async with self._processing:
            await self.process(msg)

    async def process(self, msg: Msg) -> None:
        try:
            hint = TransactionStatus.from_json(json.loads(msg.data))
            validate_order_id(hint.order_id)
        except (ValueError, TypeError, AttributeError, RecursionError) as exc:
            # [] or deeply nested JSON must not stop the inbox: terminate, never retry.
            log.error("dropping unreadable payment notification: %s", str(exc)[:200])
            await msg.term()
            return
        first = msg.metadata.num_delivered <= 1
        try:
            with about_order(hint.order_id.split("~")[0]):  # name~n: a retry's page
                applied = await self._apply(hint.order_id, first)
        except Exception as exc:  # the journal unreachable, say: redelivered later
            log.warning("notification for %s not applied yet: %r", hint.order_id, exc)
            applied = False
        if applied:
            await msg.ack()
            return
        attempt = msg.metadata.num_delivered
        await msg.nak(delay=BACKOFF[min(attempt, len(BACKOFF)) - 1])

    async def _apply(self, midtrans_order: str, first: bool = False) -> bool:
        """Ask Midtrans about the order and act on the answer; False: try again later.

        ``first``: the notification's first delivery.
        """
        deps = self.reconciler.deps
        order_id = order_id_of(midtrans_order)
        if deps.readmodel.sold_by(order_id) == midtrans_order:
            # As below (sold by this very order and announced), known without a read.
            return True
        record = await deps.readmodel.get(order_id)
        if record is None:
            log.warning("notification for unknown order %s acknowledged", midtrans_order)
            return True
        if (
            first
            and record.phase == Phase.AWAITING_PAYMENT.value
            and record.midtrans_order_id == midtrans_order
        ):
            # The listener publishes a payment after writing the Checkout Settled, and
            # Midtrans' status is paid already when its 'pending' notification is read
            # (a buyer pays in seconds): acting on the live checkout now loses the status
            # write's race to the ending the watch is bringing (a refused write, a re-read,
            # a journal write). Looked at again after the first backoff, when the reconciler
            # has usually journaled the ending (then Midtrans is not asked either); if the
            # listener did not settle it, the operator settles that much later.
            return False
        if (
            record.phase == Phase.SETTLED.value
            and record.paid_order_id == midtrans_order
            and record.final_event_published
        ):
            # Sold by this very order and announced (the listener's settlement notified
            # again, say): no status of it can change anything, so Midtrans is not asked.
            return True
        try:
            status = await confirmed_status(deps, midtrans_order)
        except Retry as exc:
            log.info("notification for %s: %s", midtrans_order, exc)
            return False
        if status is None:
            return True  # Midtrans knows no payment on it: nothing to do

        async def act(body: dict[str, Any]) -> dict[str, Any] | None:
            if body["metadata"]["uid"] != record.uid:
                return None
            return await apply_payment(deps, body, status)

        key = (record.namespace, record.name)
        try:
            if await self.reconciler.exclusive(key, act, attempts=3):
                return True
            if await deps.kube.get(*key) is not None:
                return False
            # The Checkout is gone: the journal decides (money on it goes back).
            await watch_unsettled(deps, record, midtrans_order)
            return True
        except Exception as exc:
            log.warning("applying %s to %s failed: %r", status.transaction_status, key, exc)
            return False
