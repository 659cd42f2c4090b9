"""The Product service's JetStream consumer on real NATS and Postgres."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator

import pytest

from product_service import store
from product_service.consumer import EventConsumer
from saga_kit.events import EventType, TransactionEvent, ensure_streams, publish
from saga_kit.nats_access import Role
from saga_kit.supervise import Readiness
from tests.conftest import Platform
from tests.helpers.leaks import own_topology
from tests.integration.product_event_fixtures import CONSUMER, EventsEnv, consuming, eventually
from tests.integration.product_fixtures import ProductEnv


@pytest.fixture
async def events_env(platform: Platform, product_env: ProductEnv) -> AsyncIterator[EventsEnv]:
    async with consuming(platform, product_env) as env:
        yield env


async def test_committed_then_settled_sells_the_stock(events_env: EventsEnv) -> None:
    tx, product = await events_env.reserved()
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
    tx, product = await events_env.reserved()
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
    tx, product = await events_env.reserved()
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
    pairs = [await events_env.reserved(stock=5, quantity=5) for _ in range(10)]
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
    tx, _ = await events_env.reserved()
    event = TransactionEvent(transaction_id=tx, type=EventType.COMMITTED)
    first = await publish(events_env.js, events_env.topology, event)
    again = await publish(events_env.js, events_env.topology, event)
    assert again.duplicate and again.seq == first.seq


async def test_unknown_transactions_are_recorded_and_acknowledged(events_env: EventsEnv) -> None:
    await events_env.send("never-reserved", EventType.CANCELLED)

    async def done() -> bool:
        return await events_env.outcomes("never-reserved") == [("cancelled", "unknown_transaction")]

    await eventually(done)


POISON = {
    "not JSON": b"{not json",
    "a list": b"[]",
    "1000 levels deep": b"[" * 1000 + b"]" * 1000,
    "not UTF-8": b'{"transaction_id": "\xff\xfe", "type": "cancelled"}',
    "another subject's type": b'{"transaction_id": "x", "type": "settled"}',
}


async def test_poison_messages_are_dead_lettered_and_terminated(
    events_env: EventsEnv, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.ERROR, logger="product_service.consumer")
    subject = events_env.topology.subject(EventType.CANCELLED)
    for body in POISON.values():
        await events_env.js.publish(subject, body)
    tx, product = await events_env.reserved()
    await events_env.send(tx, EventType.CANCELLED)

    # The good event behind the poison ones was applied.
    await eventually(lambda: _restored(events_env, product))
    await eventually(lambda: _dead_letters_are(events_env, len(POISON)))
    for seq, body in enumerate(POISON.values(), start=1):
        dlq = await events_env.js.get_msg(events_env.topology.dlq_stream, seq=seq)
        assert dlq.data == body
        assert dlq.headers is not None and "malformed event" in dlq.headers["Error"]
        assert dlq.headers["Original-Subject"] == subject
        assert dlq.headers["Original-Stream-Seq"] == str(seq)

    async def settled_for_good() -> bool:  # terminated: nothing pending, nothing redelivered
        info = await events_env.consumer_info()
        return info.num_ack_pending == 0 and info.num_pending == 0

    await eventually(settled_for_good)
    assert (await events_env.consumer_info()).num_redelivered == 0
    logged = [r.getMessage() for r in caplog.records if "dead-lettered" in r.getMessage()]
    assert len(logged) == len(POISON)
    assert await events_env.dead_letters() == len(POISON)


async def _dead_letters_are(env: EventsEnv, count: int) -> bool:
    return await env.dead_letters() == count


async def _restored(env: EventsEnv, product: str) -> bool:
    return await env.products.stock_of(product) == (10, 0)


@contextlib.asynccontextmanager
async def consumer_running(consumer: EventConsumer) -> AsyncIterator[asyncio.Task[None]]:
    """``consumer`` bound to its durable and consuming until the block ends; its task
    (done once it stopped)."""
    await consumer.ensure()
    stop = asyncio.Event()
    task = asyncio.create_task(consumer.run(stop, batch=16))
    try:
        yield task
    finally:
        stop.set()
        await asyncio.wait_for(task, 10)


async def test_restart_keeps_streams_and_does_not_reprocess(
    platform: Platform, product_env: ProductEnv
) -> None:
    """The first consumer stops; a second binds the same durable (a restart). It starts
    past what the first acknowledged (nothing old is delivered or recorded again) and
    applies what comes next."""
    admin = await platform.nats()
    topology = own_topology("r")
    await ensure_streams(admin.jetstream(), topology)
    first_nc, second_nc = await platform.nats(Role.PRODUCT_SERVICE), None
    first = EventConsumer(first_nc.jetstream(), product_env.pool, topology, name=CONSUMER)
    env = EventsEnv(
        product_env, admin.jetstream(), first_nc.jetstream(), topology, first, Readiness()
    )
    try:
        released, released_product = await env.reserved()
        sold, sold_product = await env.reserved()
        async with consumer_running(first) as first_task:
            await env.send(released, EventType.CANCELLED)
            await env.send(sold, EventType.COMMITTED)

            async def first_done() -> bool:
                info = await env.consumer_info()
                return info.ack_floor is not None and info.ack_floor.stream_seq == 2

            await eventually(first_done)
        assert first_task.done() and first_task.exception() is None
        await first_nc.close()

        # The restart: streams ensured again (their data kept), a new connection and
        # consumer on the same durable.
        await ensure_streams(env.js, topology)
        assert (await env.js.stream_info(topology.stream)).state.messages == 2
        second_nc = await platform.nats(Role.PRODUCT_SERVICE)
        second = EventConsumer(second_nc.jetstream(), product_env.pool, topology, name=CONSUMER)
        async with consumer_running(second):
            await env.send(sold, EventType.SETTLED)  # stream sequence 3

            async def second_done() -> bool:
                info = await env.consumer_info()
                return info.ack_floor is not None and info.ack_floor.stream_seq == 3

            await eventually(second_done)
            info = await env.consumer_info()
        # Three deliveries in all (the consumer sequence counts every one): the second
        # consumer was handed only the new message, and acknowledged it.
        assert info.delivered is not None and info.ack_floor is not None
        assert (info.delivered.stream_seq, info.delivered.consumer_seq) == (3, 3), info
        assert (info.ack_floor.stream_seq, info.ack_floor.consumer_seq) == (3, 3), info
        assert (info.num_pending, info.num_ack_pending, info.num_redelivered) == (0, 0, 0)
        # Old messages were recorded once (by the first); the new one by the second.
        seen = [
            (e["event_type"], e["outcome"], e["stream_seq"])
            for tx in (released, sold)
            for e in await store.events_for(product_env.pool, tx)
        ]
        assert seen == [
            ("cancelled", "applied", 1),
            ("committed", "applied", 2),
            ("settled", "applied", 3),
        ]
        assert await product_env.stock_of(released_product) == (10, 0)
        assert await product_env.stock_of(sold_product) == (6, 0)
    finally:
        for name in topology.streams:
            with contextlib.suppress(Exception):
                await admin.jetstream().delete_stream(name)
        for nc in (first_nc, second_nc, admin):
            if nc is not None and not nc.is_closed:
                await nc.close()
