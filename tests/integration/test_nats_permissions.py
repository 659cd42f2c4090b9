"""NATS on the real local server: no anonymous clients, and each component's user may
publish and read only what saga_kit.nats_access grants it.

Each test works on streams of its own (a namespaced topology, created and removed by
the admin user); a refused publish or API request is shown twice: the server reports
a permissions violation for that subject, and the stream did not store anything.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import AsyncIterator

import pytest
from nats.aio.client import Client as NATS
from nats.errors import TimeoutError as NatsTimeout
from nats.js.api import AckPolicy, ConsumerConfig, RePublish, StreamConfig

from saga_kit.events import EventType, Topology, TransactionEvent, ensure_streams, publish
from saga_kit.nats_access import NatsCredentials, NatsRefused, Role, connect
from saga_kit.settings import Secret
from tests.conftest import Platform
from tests.helpers.leaks import own_topology
from tests.helpers.waiting import eventually

REFUSED_WITHIN = 0.5  # seconds a refused JetStream request waits for its (absent) answer


@pytest.fixture
async def admin(platform: Platform) -> AsyncIterator[NATS]:
    """The admin connection: set-up, clean-up and looking at what the streams stored."""
    nc = await platform.nats()
    yield nc
    await nc.close()


@pytest.fixture
async def topology(admin: NATS) -> AsyncIterator[Topology]:
    topology = own_topology("n")
    await ensure_streams(admin.jetstream(), topology)
    yield topology
    for name in topology.streams:
        await admin.jetstream().delete_stream(name)


@pytest.fixture
def violations(caplog: pytest.LogCaptureFixture) -> pytest.LogCaptureFixture:
    caplog.set_level(logging.WARNING, logger="saga_kit.nats_access")
    return caplog


async def refused(caplog: pytest.LogCaptureFixture, action: str, subject: str) -> None:
    """The server reported a permissions violation for ``action`` on ``subject``."""
    wanted = f'permissions violation for {action} to "{subject}"'.lower()

    async def reported() -> bool:
        return any(wanted in r.getMessage().lower() for r in caplog.records)

    await eventually(reported, within=5.0)


async def stored(admin: NATS, stream: str) -> int:
    return int((await admin.jetstream().stream_info(stream)).state.messages)


async def test_anonymous_and_wrong_password_clients_are_refused(platform: Platform) -> None:
    with pytest.raises(NatsRefused, match="anonymous"):
        await connect(platform.cfg.nats_url, None, "anonymous")
    guess = NatsCredentials(Role.PAYMENT_LISTENER.value, Secret("guessed"))
    with pytest.raises(NatsRefused, match="payment-listener") as refusal:
        await connect(platform.cfg.nats_url, guess, "guess")
    assert "guessed" not in str(refusal.value)


async def test_listener_records_payment_statuses_but_cannot_move_stock(
    platform: Platform, admin: NATS, topology: Topology, violations: pytest.LogCaptureFixture
) -> None:
    nc = await platform.nats(Role.PAYMENT_LISTENER)
    js = nc.jetstream(timeout=REFUSED_WITHIN)
    ack = await js.publish(topology.payment_subject, b"{}", stream=topology.payment_stream)
    assert ack.seq == 1
    for subject in (topology.subject(EventType.SETTLED), "transactions.settled"):
        event = TransactionEvent(
            transaction_id=f"forged-{uuid.uuid4().hex[:6]}", type=EventType.SETTLED
        )
        with pytest.raises(NatsTimeout):
            await js.publish(subject, event.model_dump_json().encode())
        await refused(violations, "publish", subject)
    assert await stored(admin, topology.stream) == 0
    await nc.close()


async def test_listener_cannot_read_the_transactions_stream(
    platform: Platform, topology: Topology, violations: pytest.LogCaptureFixture
) -> None:
    operator = await platform.nats(Role.OPERATOR)
    event = TransactionEvent(transaction_id="order-read-1", type=EventType.COMMITTED)
    await publish(operator.jetstream(), topology, event)
    await operator.close()
    nc = await platform.nats(Role.PAYMENT_LISTENER)
    js = nc.jetstream(timeout=REFUSED_WITHIN)
    with pytest.raises(NatsTimeout):
        await js.add_consumer(topology.stream, ConsumerConfig(durable_name="peek"))
    await refused(violations, "publish", f"$JS.API.CONSUMER.DURABLE.CREATE.{topology.stream}.peek")
    with pytest.raises(NatsTimeout):
        await js.get_msg(topology.stream, seq=1)
    await refused(violations, "publish", f"$JS.API.STREAM.MSG.GET.{topology.stream}")
    # Nor by listening: to the subjects, or to where the Product service's pulls arrive.
    for subject in (topology.all_subjects, f"_INBOX.{Role.PRODUCT_SERVICE.value}.>"):
        await nc.subscribe(subject)
        await refused(violations, "subscription", subject)
    await nc.close()


async def test_operator_announces_events_and_reads_payment_statuses(
    platform: Platform, admin: NATS, topology: Topology
) -> None:
    nc = await platform.nats(Role.OPERATOR)
    js = nc.jetstream()
    for kind in EventType:
        await publish(js, topology, TransactionEvent(transaction_id="order-op-1", type=kind))
    assert await stored(admin, topology.stream) == len(EventType)
    listener = await platform.nats(Role.PAYMENT_LISTENER)
    await listener.jetstream().publish(topology.payment_subject, b'{"order_id": "order-op-1"}')
    await listener.close()
    await js.add_consumer(
        topology.payment_stream,
        ConsumerConfig(durable_name="operator-inbox", ack_policy=AckPolicy.EXPLICIT),
    )
    sub = await js.pull_subscribe_bind("operator-inbox", stream=topology.payment_stream)
    [msg] = await sub.fetch(1, timeout=5)
    assert msg.data == b'{"order_id": "order-op-1"}'
    await msg.ack_sync()
    await nc.close()


async def test_product_service_consumes_but_cannot_announce_commits_or_settlements(
    platform: Platform, admin: NATS, topology: Topology, violations: pytest.LogCaptureFixture
) -> None:
    nc = await platform.nats(Role.PRODUCT_SERVICE)
    js = nc.jetstream(timeout=REFUSED_WITHIN)
    for kind in (EventType.COMMITTED, EventType.SETTLED):
        with pytest.raises(NatsTimeout):
            await publish(js, topology, TransactionEvent(transaction_id="order-pr-1", type=kind))
        await refused(violations, "publish", topology.subject(kind))
    assert await stored(admin, topology.stream) == 0
    # What it does need: its durable consumer, and the dead-letter stream.
    operator = await platform.nats(Role.OPERATOR)
    event = TransactionEvent(transaction_id="order-pr-1", type=EventType.EXPIRED)
    await publish(operator.jetstream(), topology, event)
    await operator.close()
    await js.add_consumer(
        topology.stream,
        ConsumerConfig(
            durable_name="products",
            ack_policy=AckPolicy.EXPLICIT,
            filter_subject=topology.all_subjects,
        ),
    )
    sub = await js.pull_subscribe_bind("products", stream=topology.stream)
    [msg] = await sub.fetch(1, timeout=5)
    await msg.ack_sync()
    await js.publish(f"{topology.dlq_subject_prefix}.expired", b"poison")
    assert await stored(admin, topology.dlq_stream) == 1
    await nc.close()


@pytest.mark.parametrize("role", [Role.PAYMENT_LISTENER, Role.PRODUCT_SERVICE])
async def test_only_the_operator_users_create_streams(
    platform: Platform, role: Role, violations: pytest.LogCaptureFixture
) -> None:
    """A stream can republish what it stores anywhere: creating one is publishing."""
    name = f"EVIL_{uuid.uuid4().hex[:8]}"
    nc = await platform.nats(role)
    source = f"{name.lower()}.settled"
    config = StreamConfig(
        name=name, subjects=[source], republish=RePublish(src=source, dest="transactions.settled")
    )
    with pytest.raises(NatsTimeout):
        await nc.jetstream(timeout=REFUSED_WITHIN).add_stream(config)
    await refused(violations, "publish", f"$JS.API.STREAM.CREATE.{name}")
    await nc.close()
