"""The Product service's JetStream consumer of transaction events.

A durable pull consumer with explicit acks: a message is acked only after its
event is applied (or recorded as a duplicate/refused) in Postgres, so a crash
means redelivery, and redelivery is harmless because every event is applied
under a status guard. A failing message is retried with growing delays (NAK
with delay) up to ``max_deliver`` times; a malformed one, or one still failing
after that, goes to the dead-letter stream with the error and is terminated, so
one poison message never blocks the rest. The durable consumer is created when
absent and never deleted; the streams are the operator's (this service may not
create streams, see saga_kit.nats_access), so it waits for them.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from nats.aio.msg import Msg
from nats.js import JetStreamContext
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy
from nats.js.errors import NotFoundError
from pydantic import ValidationError

from saga_kit.events import Topology, TransactionEvent, wait_for_streams

from . import store

log = logging.getLogger(__name__)

# Delay before the n-th redelivery of a failing message (seconds, then scaled).
BACKOFF = (1.0, 5.0, 15.0, 30.0, 60.0)


class EventConsumer:
    def __init__(
        self,
        js: JetStreamContext,
        pool: Any,
        topology: Topology,
        name: str = "product-service",
        max_deliver: int = 6,
        backoff_scale: float = 1.0,
        ack_wait: float = 30.0,
    ) -> None:
        self._js = js
        self._pool = pool
        self._topology = topology
        self._name = name
        self._max_deliver = max_deliver
        self._backoff_scale = backoff_scale
        self._ack_wait = ack_wait
        self._sub: JetStreamContext.PullSubscription | None = None

    async def ensure(self) -> None:
        """Wait for the streams; create the durable consumer if it is missing."""
        stream = self._topology.stream
        await wait_for_streams(self._js, [stream, self._topology.dlq_stream])
        try:
            await self._js.consumer_info(stream, self._name)
        except NotFoundError:
            await self._js.add_consumer(
                stream,
                ConsumerConfig(
                    durable_name=self._name,
                    filter_subject=self._topology.all_subjects,
                    ack_policy=AckPolicy.EXPLICIT,
                    deliver_policy=DeliverPolicy.ALL,
                    max_deliver=self._max_deliver,
                    ack_wait=self._ack_wait,
                    max_ack_pending=1000,
                ),
            )
        self._sub = await self._js.pull_subscribe_bind(self._name, stream=stream)

    async def run(self, stop: asyncio.Event, batch: int = 64) -> None:
        if self._sub is None:
            await self.ensure()
        assert self._sub is not None
        while not stop.is_set():
            try:
                messages = await self._sub.fetch(batch, timeout=1.0)
            except TimeoutError:
                continue
            await self.process_batch(messages)

    async def process_batch(self, messages: list[Msg]) -> None:
        """Apply a batch: different transactions in parallel, each one's events in
        stream order (so the broker's order decides a race, as it would serially)."""
        groups: dict[str, list[tuple[Msg, TransactionEvent | None]]] = {}
        for msg in messages:
            event = self._parse(msg)
            key = event.transaction_id if event else f"poison:{id(msg)}"
            groups.setdefault(key, []).append((msg, event))

        async def run_group(group: list[tuple[Msg, TransactionEvent | None]]) -> None:
            for msg, event in group:
                await self.process(msg, event)

        await asyncio.gather(*(run_group(g) for g in groups.values()))

    def _parse(self, msg: Msg) -> TransactionEvent | None:
        try:
            event = TransactionEvent.model_validate_json(msg.data)
        except ValidationError:
            return None
        return event if msg.subject == self._topology.subject(event.type) else None

    async def process(self, msg: Msg, event: TransactionEvent | None) -> None:
        """Apply one message; ``event`` is its parsed payload (None: unreadable)."""
        if event is None:
            await self._dead_letter(
                msg, "malformed event: not a TransactionEvent matching its subject"
            )
            return
        meta = msg.metadata
        try:
            decision = await store.apply_event(
                self._pool, event.transaction_id, event.type, meta.sequence.stream
            )
        except Exception as exc:
            if meta.num_delivered >= self._max_deliver:
                await self._dead_letter(msg, f"failed {meta.num_delivered} times: {exc!r}")
                return
            delay = BACKOFF[min(meta.num_delivered, len(BACKOFF)) - 1] * self._backoff_scale
            log.warning(
                "event %s of %s failed (attempt %d), retrying in %.1fs: %r",
                event.type,
                event.transaction_id,
                meta.num_delivered,
                delay,
                exc,
            )
            await msg.nak(delay=delay)
            return
        log.info("event %s of %s: %s", event.type, event.transaction_id, decision.outcome.value)
        await msg.ack()

    async def _dead_letter(self, msg: Msg, error: str) -> None:
        kind = msg.subject.rsplit(".", 1)[-1] or "unknown"
        await self._js.publish(
            f"{self._topology.dlq_subject_prefix}.{kind}",
            msg.data,
            headers={
                "Original-Subject": msg.subject,
                "Original-Stream-Seq": str(msg.metadata.sequence.stream),
                "Error": error[:1000],
                # The same poison message is dead-lettered once even if we crash
                # between publishing here and terminating it below.
                "Nats-Msg-Id": f"dlq:{msg.metadata.sequence.stream}",
            },
        )
        log.error("dead-lettered message %s: %s", msg.metadata.sequence.stream, error)
        await msg.term()
