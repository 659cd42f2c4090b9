"""The Product consumer under faults: no final event is lost to an outage of Postgres
or NATS, an old durable is brought up to date, and a consumer that dies comes back
while readiness says so (in process and in the real service process)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable

import asyncpg
import httpx
import pytest
from grpc_health.v1 import health_pb2
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy

from checkout.product.v1 import product_pb2_grpc
from product_service.consumer import EventConsumer
from saga_kit.events import EventType, TransactionEvent, ensure_streams, publish
from saga_kit.grpc_auth import authenticated_channel
from saga_kit.nats_access import Role
from saga_kit.settings import Secret
from tests.conftest import Platform
from tests.helpers.leaks import own_topology
from tests.helpers.processes import python_module
from tests.integration.product_event_fixtures import (
    CONSUMER,
    EventsEnv,
    consuming,
    eventually,
    listed_and_reserved,
    service_process,
)
from tests.integration.product_fixtures import ProductEnv
from tests.integration.user_fixtures import UserEnv

OLD_MAX_DELIVER = 6  # what the consumer was created with before unlimited redelivery


@pytest.fixture
async def events_env(platform: Platform, product_env: ProductEnv) -> AsyncIterator[EventsEnv]:
    async with consuming(platform, product_env, apply_timeout=0.5, idle_check=0.5) as env:
        yield env


async def deliveries(env: EventsEnv) -> int:
    """Messages the consumer has handed out so far, redeliveries included."""
    delivered = (await env.consumer_info()).delivered
    assert delivered is not None
    return int(delivered.consumer_seq)


async def delivered_at_least(env: EventsEnv, count: int) -> Callable[[], Awaitable[bool]]:
    start = await deliveries(env)

    async def enough() -> bool:
        return await deliveries(env) - start >= count

    return enough


async def test_an_event_outlives_a_database_outage_longer_than_the_old_budget(
    events_env: EventsEnv,
) -> None:
    pool = events_env.products.pool
    tx, product = await events_env.reserved()
    enough = await delivered_at_least(events_env, OLD_MAX_DELIVER + 3)
    await pool.execute("ALTER TABLE reservations RENAME TO reservations_off")
    try:
        await events_env.send(tx, EventType.SETTLED)
        await eventually(enough, within=30)
        assert await events_env.outcomes(tx) == []
        assert await events_env.dead_letters() == 0
    finally:
        await pool.execute("ALTER TABLE reservations_off RENAME TO reservations")

    async def applied() -> bool:
        return await events_env.outcomes(tx) == [("settled", "applied")]

    await eventually(applied, within=30)
    assert await events_env.products.stock_of(product) == (6, 0)
    assert await events_env.dead_letters() == 0
    info = await events_env.consumer_info()
    assert info.config.max_deliver == -1
    assert info.num_ack_pending == 0 and info.num_pending == 0


async def test_an_apply_stuck_on_a_lock_times_out_and_is_retried(
    platform: Platform, events_env: EventsEnv
) -> None:
    tx, product = await events_env.reserved()
    enough = await delivered_at_least(events_env, 3)
    locker = await asyncpg.connect(platform.postgres_dsn)
    try:
        schema = await events_env.products.pool.fetchval("SELECT current_schema()")
        locking = locker.transaction()
        await locking.start()
        await locker.execute(f'LOCK TABLE "{schema}".reservations IN ACCESS EXCLUSIVE MODE')
        await events_env.send(tx, EventType.CANCELLED)
        await eventually(enough, within=30)
        assert await events_env.products.stock_of(product) == (10, 4)
        await locking.rollback()
    finally:
        await locker.close()

    async def applied() -> bool:
        return await events_env.outcomes(tx) == [("cancelled", "applied")]

    await eventually(applied, within=30)
    assert await events_env.products.stock_of(product) == (10, 0)
    assert await events_env.dead_letters() == 0


async def test_a_slow_apply_keeps_its_message_from_a_second_replica(
    platform: Platform, product_env: ProductEnv
) -> None:
    ack_wait = 1.0
    async with consuming(platform, product_env, ack_wait=ack_wait, idle_check=0.2) as env:
        pool = env.products.pool
        replica = EventConsumer(
            env.product_js, pool, env.topology, name=CONSUMER, ack_wait=ack_wait
        )
        stop = asyncio.Event()
        second = asyncio.create_task(replica.run(stop, batch=16))
        tx, product = await env.reserved()
        schema = await pool.fetchval("SELECT current_schema()")
        locker = await asyncpg.connect(platform.postgres_dsn)
        try:
            async with locker.transaction():  # holds this reservation's row: a slow apply
                await locker.execute(
                    f'SELECT 1 FROM "{schema}".reservations WHERE transaction_id = $1 FOR UPDATE',
                    tx,
                )
                await env.send(tx, EventType.CANCELLED)
                await eventually(lambda: _ack_pending_is(env, 1))
                held_since = time.monotonic()

                async def a_replica_could_have_taken_it_long_after_the_ack_wait() -> bool:
                    info = await env.consumer_info()
                    waited = time.monotonic() - held_since
                    asked = (info.num_waiting or 0) > 0  # an idle replica is pulling
                    return waited > 3 * ack_wait and (asked or bool(info.num_redelivered))

                await eventually(a_replica_could_have_taken_it_long_after_the_ack_wait)
                info = await env.consumer_info()
                assert info.num_redelivered == 0 and info.num_ack_pending == 1
        finally:
            await locker.close()
        await eventually(lambda: _ack_pending_is(env, 0))
        stop.set()
        await asyncio.wait_for(second, 10)
        assert await env.outcomes(tx) == [("cancelled", "applied")]
        assert await env.products.stock_of(product) == (10, 0)


async def _ack_pending_is(env: EventsEnv, count: int) -> bool:
    return (await env.consumer_info()).num_ack_pending == count


async def test_a_durable_with_a_delivery_limit_is_updated_in_place(
    platform: Platform, product_env: ProductEnv
) -> None:
    admin = await platform.nats()
    js = admin.jetstream()
    topology = own_topology("t")
    await ensure_streams(js, topology)
    product_nc = await platform.nats(Role.PRODUCT_SERVICE)
    product_js = product_nc.jetstream()
    try:
        # The durable as older code created it, having consumed one event already.
        await product_js.add_consumer(
            topology.stream,
            ConsumerConfig(
                durable_name=CONSUMER,
                filter_subject=topology.all_subjects,
                ack_policy=AckPolicy.EXPLICIT,
                deliver_policy=DeliverPolicy.ALL,
                max_deliver=OLD_MAX_DELIVER,
                ack_wait=30.0,
                max_ack_pending=1000,
            ),
        )
        first = TransactionEvent(transaction_id="order-old-1", type=EventType.EXPIRED)
        await publish(js, topology, first)
        old = await product_js.pull_subscribe_bind(CONSUMER, stream=topology.stream)
        [msg] = await old.fetch(1, timeout=5)
        await msg.ack_sync()
        await old.unsubscribe()

        await EventConsumer(product_js, product_env.pool, topology, name=CONSUMER).ensure()

        info = await js.consumer_info(topology.stream, CONSUMER)
        assert info.config.max_deliver == -1
        assert info.ack_floor.stream_seq == 1  # same durable: its position is kept
    finally:
        for name in topology.streams:
            await js.delete_stream(name)
        await product_nc.close()
        await admin.close()


async def test_a_consumer_that_dies_is_restarted_and_readiness_follows(
    events_env: EventsEnv, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.ERROR, logger="saga_kit.supervise")
    await eventually(lambda: _ready(events_env))

    # The durable deleted under the running consumer: its fetch fails, it is started
    # again and recreates the durable.
    await events_env.js.delete_consumer(events_env.topology.stream, CONSUMER)
    await eventually(lambda: _restarted(caplog, 1))
    await eventually(lambda: _ready(events_env))
    tx, product = await events_env.reserved()
    await events_env.send(tx, EventType.CANCELLED)
    await eventually(lambda: _stock_is(events_env, product, (10, 0)))

    # The stream gone for a while: not ready until it is back, then working again.
    await events_env.js.delete_stream(events_env.topology.stream)
    await eventually(lambda: _not_ready(events_env))
    assert "event-consumer" in events_env.readiness.problems()
    await ensure_streams(events_env.js, events_env.topology)
    await eventually(lambda: _ready(events_env))
    tx, product = await events_env.reserved()
    await events_env.send(tx, EventType.EXPIRED)
    await eventually(lambda: _stock_is(events_env, product, (10, 0)))


async def _ready(env: EventsEnv) -> bool:
    return env.readiness.ready


async def _not_ready(env: EventsEnv) -> bool:
    return not env.readiness.ready


async def _restarted(caplog: pytest.LogCaptureFixture, times: int) -> bool:
    return sum("task consumer failed" in r.getMessage() for r in caplog.records) >= times


async def _stock_is(env: EventsEnv, product: str, expected: tuple[int, int]) -> bool:
    return await env.products.stock_of(product) == expected


async def test_the_service_process_reports_a_lost_stream_and_recovers(
    platform: Platform, db_schema: str, service_token: Secret, user_env: UserEnv
) -> None:
    service = service_process(platform, db_schema, service_token, user_env)
    topology = service.topology
    admin = await platform.nats()
    js = admin.jetstream()
    await ensure_streams(js, topology)
    channel = authenticated_channel(f"127.0.0.1:{service.grpc_port}", service_token)
    # A plain call: the typeshed stub of HealthStub declares no methods.
    health_check = channel.unary_unary(
        "/grpc.health.v1.Health/Check",
        request_serializer=health_pb2.HealthCheckRequest.SerializeToString,
        response_deserializer=health_pb2.HealthCheckResponse.FromString,
    )
    stub = product_pb2_grpc.ProductServiceStub(channel)
    _, token = await user_env.token_for(f"owner{uuid.uuid4().hex[:6]}")
    try:
        with python_module(
            "product_service",
            port=service.http_port,
            health_path="/readyz",
            env=service.env,
            timeout=30,
        ) as proc:
            async with httpx.AsyncClient(base_url=proc.base_url) as http:

                async def readiness_is(status: int, serving: int) -> bool:
                    answer = await health_check(
                        health_pb2.HealthCheckRequest(service=""), timeout=5
                    )
                    return (await http.get("/readyz")).status_code == status and (
                        answer.status == serving
                    )

                serving = health_pb2.HealthCheckResponse.SERVING
                not_serving = health_pb2.HealthCheckResponse.NOT_SERVING
                await eventually(lambda: readiness_is(200, serving))

                await js.delete_stream(topology.stream)
                await eventually(lambda: readiness_is(503, not_serving))
                problems = (await http.get("/readyz")).json()["problems"]
                assert "event-consumer" in problems

                await ensure_streams(js, topology)
                await eventually(lambda: readiness_is(200, serving), within=30)

                pid = await listed_and_reserved(http, stub, token, "order-back-1")
                await publish(
                    js,
                    topology,
                    TransactionEvent(transaction_id="order-back-1", type=EventType.EXPIRED),
                )

                async def released() -> bool:
                    product = (await http.get(f"/api/v1/products/{pid}")).json()
                    return bool(product["available"] == 3)

                await eventually(released)
            assert proc.stop() == 0
    finally:
        await channel.close()
        for name in topology.streams:
            with contextlib.suppress(Exception):
                await js.delete_stream(name)
        await admin.close()
