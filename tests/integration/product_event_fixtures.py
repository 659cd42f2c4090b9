"""The Product event consumer on real NATS and Postgres, run the way the service runs it.

Each test gets its own streams (a namespaced topology, created by the admin user as
the operator would) and a consumer connected as the Product service's NATS user,
running under :func:`saga_kit.supervise.supervised` with a heartbeat in a
:class:`~saga_kit.supervise.Readiness` the test can ask; or the environment of a
whole ``python -m product_service`` process on streams of its own.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import httpx
from nats.js import JetStreamContext
from nats.js.api import ConsumerInfo

from checkout.product.v1 import product_pb2, product_pb2_grpc
from product_service import store
from product_service.consumer import EventConsumer
from saga_kit.events import EventType, Topology, TransactionEvent, ensure_streams
from saga_kit.nats_access import Role
from saga_kit.settings import Secret
from saga_kit.supervise import Backoff, Readiness, supervised
from tests.conftest import Platform
from tests.helpers.leaks import own_events_namespace, own_topology
from tests.helpers.processes import free_port
from tests.helpers.waiting import eventually as wait_until
from tests.integration.product_fixtures import ProductEnv
from tests.integration.user_fixtures import UserEnv

CONSUMER = "products"


@dataclass
class EventsEnv:
    products: ProductEnv
    js: JetStreamContext  # admin: sends anything, inspects streams
    product_js: JetStreamContext  # the Product service's own NATS user
    topology: Topology
    consumer: EventConsumer
    readiness: Readiness

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

    async def reserved(self, stock: int = 10, quantity: int = 4) -> tuple[str, str]:
        """A product and a transaction holding ``quantity`` of its ``stock``."""
        product = await self.products.product(price=100, stock=stock)
        tx = f"order-{uuid.uuid4().hex[:10]}"
        await self.products.reserve(tx, (product, 100, quantity))
        return tx, product

    async def consumer_info(self) -> ConsumerInfo:
        info: ConsumerInfo = await self.js.consumer_info(self.topology.stream, CONSUMER)
        return info

    async def dead_letters(self) -> int:
        info = await self.js.stream_info(self.topology.dlq_stream)
        return int(info.state.messages)


async def eventually(check: Callable[[], Awaitable[bool]], within: float = 15.0) -> None:
    await wait_until(check, within=within, interval=0.05)


@contextlib.asynccontextmanager
async def consuming(
    platform: Platform, products: ProductEnv, stale_after: float = 30.0, **options: Any
) -> AsyncIterator[EventsEnv]:
    """Streams of their own and a supervised consumer on them; ``options`` go to
    :class:`EventConsumer` (retries are fast: ``backoff_scale`` 0.01 unless given)."""
    nc = await platform.nats()
    js = nc.jetstream()
    topology = own_topology("t")
    await ensure_streams(js, topology)  # the operator's part
    product_nc = await platform.nats(Role.PRODUCT_SERVICE)
    product_js = product_nc.jetstream()
    readiness = Readiness()
    heartbeat = readiness.heartbeat("event-consumer", stale_after=stale_after)
    options.setdefault("backoff_scale", 0.01)
    consumer = EventConsumer(
        product_js, products.pool, topology, name=CONSUMER, heartbeat=heartbeat, **options
    )
    env = EventsEnv(products, js, product_js, topology, consumer, readiness)
    stop = asyncio.Event()
    task = asyncio.create_task(
        supervised(
            "consumer",
            lambda: consumer.run(stop, batch=16),
            stop=stop,
            backoff=Backoff(first=0.05, cap=0.5),
            heartbeat=heartbeat,
        )
    )
    try:
        yield env
    finally:
        stop.set()
        await asyncio.wait_for(task, 10)
        for name in topology.streams:
            with contextlib.suppress(Exception):
                await js.delete_stream(name)
        await product_nc.close()
        await nc.close()


@dataclass(frozen=True)
class ServiceProcess:
    """How to start ``python -m product_service`` on its own schema, ports and streams."""

    env: dict[str, str]
    http_port: int
    grpc_port: int
    topology: Topology


def service_process(
    platform: Platform, db_schema: str, service_token: Secret, user_env: UserEnv
) -> ServiceProcess:
    namespace = own_events_namespace("p")
    http_port, grpc_port = free_port(), free_port()
    env = {
        "PRODUCT_DATABASE_URL": platform.postgres_dsn,
        "PRODUCT_DB_SCHEMA": db_schema,
        "PRODUCT_NATS_URL": platform.cfg.nats_url,
        **platform.nats_credentials(Role.PRODUCT_SERVICE).as_env(),
        "PRODUCT_USER_SERVICE": user_env.grpc_target,
        "SERVICE_TOKENS": service_token.value,
        "PRODUCT_HTTP_PORT": str(http_port),
        "PRODUCT_GRPC_PORT": str(grpc_port),
        "EVENTS_NAMESPACE": namespace,
    }
    return ServiceProcess(env, http_port, grpc_port, Topology.namespaced(namespace))


async def listed_and_reserved(
    http: httpx.AsyncClient,
    stub: product_pb2_grpc.ProductServiceAsyncStub,
    owner_token: str,
    transaction_id: str,
    price: int = 9_000,
) -> str:
    """A product (stock 3) listed over REST by the token's owner, 2 of it reserved
    over gRPC by ``transaction_id``; returns the product id."""
    created = await http.post(
        "/api/v1/products",
        json={"name": "Teh Tarik", "price": price, "stock": 3},
        headers={"Authorization": f"Bearer {owner_token}"},
    )
    assert created.status_code == 201, created.text
    pid = str(created.json()["id"])
    await stub.Reserve(
        product_pb2.ReserveRequest(
            transaction_id=transaction_id,
            user_id="buyer",
            items=[product_pb2.ReserveItem(product_id=pid, unit_price=price, quantity=2)],
        )
    )
    return pid
