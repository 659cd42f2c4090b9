"""The Product service's JetStream consumer of transaction events.

A durable pull consumer with explicit acks: a message is acked only after its
event is applied (or recorded as a duplicate/refused) in Postgres, so a crash
means redelivery, and redelivery is harmless because every event is applied
under a status guard.

Two kinds of failure, two answers. A message that cannot be read (not JSON, not
a TransactionEvent, its type not matching its subject) will never get better: it
goes to the dead-letter stream with the reason and is terminated, so it never
blocks the rest. A readable event that fails to apply (Postgres down, refusing
writes, timing out) is the infrastructure's fault and would be lost if it were
dropped (a settlement or a release is final): it is redelivered for ever, with
capped exponential delays (NAK with delay), so the consumer's ``max_deliver`` is
unlimited, and a durable left by older code with a limit is updated in place.

The durable consumer is created when absent and never deleted; the streams are
the operator's (this service may not create streams, see saga_kit.nats_access),
so it waits for them. :meth:`EventConsumer.run` raises when NATS fails under it
(the consumer or its stream gone, the server unreachable); its supervisor starts
it again, and its heartbeat keeps the service not ready meanwhile.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass
from typing import Any

from nats.aio.msg import Msg
from nats.js import JetStreamContext
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy
from pydantic import ValidationError

from saga_kit.events import Topology, TransactionEvent, wait_for_streams
from saga_kit.supervise import Heartbeat

from . import store

log = logging.getLogger(__name__)

# Redelivery delays of a failing event: 1 s doubling up to a minute (then scaled).
FIRST_RETRY = 1.0
MAX_RETRY = 60.0
UNLIMITED = -1


@dataclass(frozen=True)
class Unreadable:
    """A message that is no event this consumer could apply, and why."""

    reason: str


def retry_delay(num_delivered: int, scale: float = 1.0) -> float:
    """Seconds before the redelivery of an event that failed on its n-th delivery."""
    doublings = min(max(0, num_delivered - 1), 32)  # past the cap anyway; 2.0**1024 overflows
    return min(MAX_RETRY, FIRST_RETRY * 2.0**doublings) * scale


def read_event(topology: Topology, subject: str, data: bytes) -> TransactionEvent | Unreadable:
    """The event in a message on ``subject``, or why there is none (never raises)."""
    try:
        event = TransactionEvent.model_validate_json(data)
    except ValidationError as exc:
        found = [
            f"{'.'.join(str(p) for p in e['loc']) or 'body'}: {e['msg']}" for e in exc.errors()
        ]
        return Unreadable("; ".join(found[:3]) or "not a TransactionEvent")
    if subject != topology.subject(event.type):
        return Unreadable(f"type {event.type.value!r} does not match its subject")
    return event


class EventConsumer:
    def __init__(
        self,
        js: JetStreamContext,
        pool: Any,
        topology: Topology,
        name: str = "product-service",
        backoff_scale: float = 1.0,
        ack_wait: float = 30.0,
        apply_timeout: float = 20.0,
        idle_check: float = 5.0,
        heartbeat: Heartbeat | None = None,
    ) -> None:
        self._js = js
        self._pool = pool
        self._topology = topology
        self._name = name
        self._backoff_scale = backoff_scale
        self._ack_wait = ack_wait
        self._apply_timeout = apply_timeout
        self._idle_check = idle_check
        self._heartbeat = heartbeat
        self._sub: JetStreamContext.PullSubscription | None = None

    def consumer_config(self) -> ConsumerConfig:
        return ConsumerConfig(
            durable_name=self._name,
            filter_subject=self._topology.all_subjects,
            ack_policy=AckPolicy.EXPLICIT,
            deliver_policy=DeliverPolicy.ALL,
            max_deliver=UNLIMITED,
            ack_wait=self._ack_wait,
            max_ack_pending=1000,
        )

    async def ensure(self) -> None:
        """Wait for the streams; create the durable consumer, or update the existing
        one in place to this configuration (same name: its position is kept)."""
        stream = self._topology.stream
        await wait_for_streams(self._js, [stream, self._topology.dlq_stream])
        await self._js.add_consumer(stream, self.consumer_config())
        # Read back rather than trust the answer: for a durable recovered at the
        # server's start, nats-server answers the update with its state at recovery.
        info = await self._js.consumer_info(stream, self._name)
        if info.config.max_deliver != UNLIMITED:
            raise RuntimeError(
                f"consumer {self._name} kept max_deliver {info.config.max_deliver} after the update"
            )
        log.info(
            "consumer %s on %s: max_deliver %s, %d pending",
            self._name,
            stream,
            info.config.max_deliver,
            info.num_pending or 0,
        )
        self._sub = await self._js.pull_subscribe_bind(self._name, stream=stream)
        self._alive()

    async def run(self, stop: asyncio.Event, batch: int = 64) -> None:
        """Consume until ``stop`` is set. Raises when NATS fails under it; a new
        call binds again (recreating the durable consumer if it vanished)."""
        if self._sub is None:
            await self.ensure()
        assert self._sub is not None
        loop = asyncio.get_running_loop()
        confirmed = loop.time()
        try:
            while not stop.is_set():
                try:
                    messages = await self._sub.fetch(batch, timeout=1.0)
                except TimeoutError:
                    messages = []
                if messages:
                    self._alive()
                elif loop.time() - confirmed >= self._idle_check:
                    # An empty fetch cannot tell "nothing to do" from "cut off";
                    # a round trip to the consumer can (and raises if it is gone).
                    await self._js.consumer_info(self._topology.stream, self._name)
                    confirmed = loop.time()
                    self._alive()
                await self.process_batch(messages)
        finally:
            sub, self._sub = self._sub, None
            with contextlib.suppress(Exception):
                await sub.unsubscribe()

    def _alive(self) -> None:
        if self._heartbeat is not None:
            self._heartbeat.beat()

    async def process_batch(self, messages: list[Msg]) -> None:
        """Apply a batch: different transactions in parallel, each one's events in
        stream order (so the broker's order decides a race, as it would serially)."""
        groups: dict[object, list[tuple[Msg, TransactionEvent | Unreadable]]] = {}
        for msg in messages:
            parsed = read_event(self._topology, msg.subject, msg.data)
            key = parsed.transaction_id if isinstance(parsed, TransactionEvent) else id(msg)
            groups.setdefault(key, []).append((msg, parsed))
        waiting = {id(msg): msg for msg in messages}

        async def run_group(group: list[tuple[Msg, TransactionEvent | Unreadable]]) -> None:
            for msg, parsed in group:
                await self.process(msg, parsed)
                del waiting[id(msg)]

        keep_alive = asyncio.create_task(self._keep_alive(waiting))
        try:
            await asyncio.gather(*(run_group(g) for g in groups.values()))
        finally:
            keep_alive.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await keep_alive

    async def _keep_alive(self, waiting: dict[int, Msg]) -> None:
        """Tell the server that messages queued behind a slow apply are still being
        worked on, so their ack wait does not run out and send them again."""
        while True:
            await asyncio.sleep(self._ack_wait / 3)
            for msg in list(waiting.values()):
                await msg.in_progress()

    async def process(self, msg: Msg, parsed: TransactionEvent | Unreadable) -> None:
        """Apply one message, or dead-letter it if it cannot be read."""
        if isinstance(parsed, Unreadable):
            await self._dead_letter(msg, f"malformed event: {parsed.reason}")
            return
        event = parsed
        meta = msg.metadata
        try:
            decision = await asyncio.wait_for(
                store.apply_event(
                    self._pool, event.transaction_id, event.type, meta.sequence.stream
                ),
                self._apply_timeout,
            )
        except Exception as exc:  # whatever the store raised: retried, never dropped
            await self._retry_later(msg, f"event {event.type} of {event.transaction_id}", exc)
            return
        log.info("event %s of %s: %s", event.type, event.transaction_id, decision.outcome.value)
        await msg.ack()

    async def _retry_later(self, msg: Msg, what: str, exc: Exception) -> None:
        attempt = msg.metadata.num_delivered
        delay = retry_delay(attempt, self._backoff_scale)
        log.warning("%s failed (delivery %d), again in %.2fs: %r", what, attempt, delay, exc)
        await msg.nak(delay=delay)

    async def _dead_letter(self, msg: Msg, error: str) -> None:
        seq = msg.metadata.sequence.stream
        kind = msg.subject.rsplit(".", 1)[-1] or "unknown"
        try:
            await self._js.publish(
                f"{self._topology.dlq_subject_prefix}.{kind}",
                msg.data,
                headers={
                    "Original-Subject": msg.subject,
                    "Original-Stream-Seq": str(seq),
                    "Error": error[:1000],
                    # The same poison message is dead-lettered once even if we crash
                    # between publishing here and terminating it below.
                    "Nats-Msg-Id": f"dlq:{seq}",
                },
            )
        except Exception as exc:  # the dead-letter stream is out of reach: keep it
            await self._retry_later(msg, f"dead-lettering message {seq}", exc)
            return
        log.error("dead-lettered message %s on %s: %s", seq, msg.subject, error)
        await msg.term()
