"""Wiring: build the operator's dependencies from its settings."""

from __future__ import annotations

from contextlib import AsyncExitStack
from typing import Any

from arq import create_pool as create_arq_pool
from arq.connections import RedisSettings

from midtrans import MidtransClient, MidtransConfig
from saga_kit import db
from saga_kit.events import Topology, ensure_streams
from saga_kit.grpc_auth import authenticated_channel
from saga_kit.kube import kube_api_client
from saga_kit.nats_access import connect as connect_nats

from .actions import Deps
from .clients.announcer import Announcer
from .clients.kube import KubeCheckouts
from .clients.services import Products, Users
from .readmodel import ReadModel
from .settings import OperatorSettings


async def open_database(dsn: str, schema: str) -> Any:
    pool = await db.create_pool(dsn, schema, max_size=10)
    await db.migrate(pool, "checkout_operator", schema)
    return pool


async def build_deps(
    settings: OperatorSettings,
    stack: AsyncExitStack,
    *,
    midtrans_config: MidtransConfig | None = None,
    component: str = "checkout-operator",
) -> Deps:
    """Connect everything; ``stack`` closes it all on exit."""
    pool = await open_database(settings.database_url.value, settings.db_schema)
    stack.push_async_callback(pool.close)
    api = await kube_api_client()
    stack.push_async_callback(api.close)
    users_channel = authenticated_channel(settings.user_service, settings.service_token)
    stack.push_async_callback(users_channel.close)
    products_channel = authenticated_channel(settings.product_service, settings.service_token)
    stack.push_async_callback(products_channel.close)
    midtrans = MidtransClient(midtrans_config or MidtransConfig.from_env())
    stack.push_async_callback(midtrans.aclose)
    nc = await connect_nats(settings.nats_url, settings.nats_credentials, component)
    stack.push_async_callback(nc.close)
    js = nc.jetstream()
    topology = Topology.for_namespace(settings.events_namespace)
    await ensure_streams(js, topology)
    arq = await create_arq_pool(RedisSettings.from_dsn(settings.redis_url.value))
    stack.push_async_callback(arq.aclose)
    return Deps(
        kube=KubeCheckouts(api, component=component),
        readmodel=ReadModel(pool),
        users=Users(users_channel),
        products=Products(products_channel),
        midtrans=midtrans,
        announcer=Announcer(js, topology, arq, settings.arq_queue),
        settings=settings,
    )
