"""The Product service's JetStream consumer on real NATS and Postgres."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass

import pytest
from nats.js import JetStreamContext

from product_service import store
from product_service.consumer import EventConsumer
from saga_kit.events import EventType, Topology, TransactionEvent, ensure_streams, publish
from saga_kit.nats_access import Role
from tests.conftest import Platform
from tests.helpers.waiting import eventually as wait_until
from tests.integration.product_fixtures import ProductEnv


@dataclass
class EventsEnv:
    products: ProductEnv
    js: JetStreamContext  # admin: sends anything, inspects streams
    product_js: JetStreamContext  # the Product service's own NATS user
    topology: Topology
    consumer: EventConsumer

    async def send(self, tx: str, kind: EventType, msg_id: str | None = None) -> None:
        """Publish an event; a fresh message id defeats broker dedup (a redelivery)."""
        event = TransactionEvent(transaction_id=tx, type=kind)
        await self.js.publish(
            self.topology.subject(kind),
            event.model_dump_json().encode(),
            headers={"Nats-Msg-Id": msg_id or uuid.uuid4().hex},
        )

    async def outcomes(self, tx: str) -> list[tuple[str, str]]:
        return [
            (e["event_type"], e["outcome"]) for e in await store.events_for(self.products.pool, tx)
        ]


async def eventually(check: Callable[[], Awaitable[bool]]) -> None:
    await wait_until(check, within=15.0, interval=0.05)


async def start_consumer(env: EventsEnv, stop: asyncio.Event) -> asyncio.Task[None]:
    await env.consumer.ensure()
    return asyncio.create_task(env.consumer.run(stop, batch=16))


@pytest.fixture
async def events_env(platform: Platform, product_env: ProductEnv) -> AsyncIterator[EventsEnv]:
    nc = await platform.nats()
    js = nc.jetstream()
    topology = Topology.namespaced(f"t{uuid.uuid4().hex[:8]}")
    await ensure_streams(js, topology)  # the operator's part
    product_nc = await platform.nats(Role.PRODUCT_SERVICE)
    product_js = product_nc.jetstream()
    consumer = EventConsumer(
        product_js, product_env.pool, topology, name="products", max_deliver=3, backoff_scale=0.01
    )
    env = EventsEnv(product_env, js, product_js, topology, consumer)
    stop = asyncio.Event()
    task = await start_consumer(env, stop)
    yield env
    stop.set()
    await asyncio.wait_for(task, 10)
    for name in topology.streams:
        await js.delete_stream(name)
    await product_nc.close()
    await nc.close()


async def reserved(env: EventsEnv, stock: int = 10, quantity: int = 4) -> tuple[str, str]:
    product = await env.products.product(price=100, stock=stock)
    tx = f"order-{uuid.uuid4().hex[:10]}"
    await env.products.reserve(tx, (product, 100, quantity))
    return tx, product


async def test_committed_then_settled_sells_the_stock(events_env: EventsEnv) -> None:
    tx, product = await reserved(events_env)
    await events_env.send(tx, EventType.COMMITTED)
    await events_env.send(tx, EventType.SETTLED)

    async def done() -> bool:
        return len(await events_env.outcomes(tx)) == 2

    await eventually(done)
    assert await events_env.outcomes(tx) == [("committed", "applied"), ("settled", "applied")]
    assert await events_env.products.stock_of(product) == (6, 0)
    reservation = await store.get_reservation(events_env.products.pool, tx)
    assert reservation is not None and reservation.status == "settled"


@pytest.mark.parametrize("kind", [EventType.CANCELLED, EventType.EXPIRED])
async def test_duplicates_restore_stock_exactly_once(
    events_env: EventsEnv, kind: EventType
) -> None:
    tx, product = await reserved(events_env)
    await events_env.send(tx, EventType.COMMITTED)
    for _ in range(3):
        await events_env.send(tx, kind)

    async def done() -> bool:
        return len(await events_env.outcomes(tx)) == 4

    await eventually(done)
    assert await events_env.outcomes(tx) == [
        ("committed", "applied"),
        (kind.value, "applied"),
        (kind.value, "duplicate"),
        (kind.value, "duplicate"),
    ]
    assert await events_env.products.stock_of(product) == (10, 0)


async def test_out_of_order_events_are_refused_and_recorded(events_env: EventsEnv) -> None:
    tx, product = await reserved(events_env)
    await events_env.send(tx, EventType.SETTLED)
    await events_env.send(tx, EventType.CANCELLED)  # e.g. a late compensation
    await events_env.send(tx, EventType.EXPIRED)
    await events_env.send(tx, EventType.COMMITTED)  # arrived last

    async def done() -> bool:
        return len(await events_env.outcomes(tx)) == 4

    await eventually(done)
    assert await events_env.outcomes(tx) == [
        ("settled", "applied"),
        ("cancelled", "refused"),
        ("expired", "refused"),
        ("committed", "refused"),
    ]
    assert await events_env.products.stock_of(product) == (6, 0)


async def test_racing_final_events_apply_exactly_one(events_env: EventsEnv) -> None:
    pairs = [await reserved(events_env, stock=5, quantity=5) for _ in range(10)]
    for tx, _ in pairs:
        await asyncio.gather(
            events_env.send(tx, EventType.SETTLED),
            events_env.send(tx, EventType.EXPIRED),
            events_env.send(tx, EventType.CANCELLED),
        )

    async def done() -> bool:
        counts = [len(await events_env.outcomes(tx)) for tx, _ in pairs]
        return all(c == 3 for c in counts)

    await eventually(done)
    for tx, product in pairs:
        outcomes = await events_env.outcomes(tx)
        applied = [kind for kind, outcome in outcomes if outcome == "applied"]
        assert len(applied) == 1
        expected = (0, 0) if applied == ["settled"] else (5, 0)
        assert await events_env.products.stock_of(product) == expected


async def test_the_broker_drops_a_republished_event(events_env: EventsEnv) -> None:
    tx, _ = await reserved(events_env)
    event = TransactionEvent(transaction_id=tx, type=EventType.COMMITTED)
    first = await publish(events_env.js, events_env.topology, event)
    again = await publish(events_env.js, events_env.topology, event)
    assert again.duplicate and again.seq == first.seq


async def test_unknown_transactions_are_recorded_and_acknowledged(events_env: EventsEnv) -> None:
    await events_env.send("never-reserved", EventType.CANCELLED)

    async def done() -> bool:
        return await events_env.outcomes("never-reserved") == [("cancelled", "unknown_transaction")]

    await eventually(done)


async def test_poison_messages_go_to_the_dead_letter_stream(events_env: EventsEnv) -> None:
    subject = events_env.topology.subject(EventType.CANCELLED)
    await events_env.js.publish(subject, b"{not json")
    await events_env.js.publish(subject, b'{"transaction_id": "x", "type": "settled"}')
    tx, product = await reserved(events_env)
    await events_env.send(tx, EventType.CANCELLED)

    async def dead_lettered() -> bool:
        info = await events_env.js.stream_info(events_env.topology.dlq_stream)
        return info.state.messages == 2

    await eventually(dead_lettered)
    dlq = await events_env.js.get_msg(events_env.topology.dlq_stream, seq=1)
    assert dlq.headers is not None and "malformed event" in dlq.headers["Error"]
    assert dlq.headers["Original-Subject"] == subject
    # The good event behind the poison ones was applied.
    await eventually(lambda: _restored(events_env, product))


async def _restored(env: EventsEnv, product: str) -> bool:
    return await env.products.stock_of(product) == (10, 0)


async def test_failing_events_are_retried_then_dead_lettered(events_env: EventsEnv) -> None:
    pool = events_env.products.pool
    tx, product = await reserved(events_env)
    await pool.execute("ALTER TABLE reservation_events RENAME TO reservation_events_off")
    try:
        await events_env.send(tx, EventType.EXPIRED)

        async def dead_lettered() -> bool:
            info = await events_env.js.stream_info(events_env.topology.dlq_stream)
            return info.state.messages == 1

        await eventually(dead_lettered)
    finally:
        await pool.execute("ALTER TABLE reservation_events_off RENAME TO reservation_events")
    dlq = await events_env.js.get_msg(events_env.topology.dlq_stream, seq=1)
    assert dlq.headers is not None and "failed 3 times" in dlq.headers["Error"]
    # Nothing was half-applied: the status guard and the stock moved together or not at all.
    assert await events_env.products.stock_of(product) == (10, 4)


async def test_restart_keeps_streams_and_does_not_reprocess(events_env: EventsEnv) -> None:
    tx, product = await reserved(events_env)
    await events_env.send(tx, EventType.CANCELLED)

    async def applied() -> bool:
        return await events_env.outcomes(tx) == [("cancelled", "applied")]

    await eventually(applied)
    # A second instance (a restart) ensures streams again and resumes the durable consumer.
    await ensure_streams(events_env.js, events_env.topology)
    info = await events_env.js.stream_info(events_env.topology.stream)
    assert info.state.messages >= 1
    again = EventConsumer(
        events_env.product_js, events_env.products.pool, events_env.topology, name="products"
    )
    stop = asyncio.Event()
    task = asyncio.create_task(again.run(stop, batch=16))
    await asyncio.sleep(1.5)
    stop.set()
    await asyncio.wait_for(task, 10)
    assert await events_env.outcomes(tx) == [("cancelled", "applied")]
    assert await events_env.products.stock_of(product) == (10, 0)
