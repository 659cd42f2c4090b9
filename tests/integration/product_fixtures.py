"""Fixtures for Product service tests: a migrated schema, a real gRPC server, a stub."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import pytest

from checkout.product.v1 import product_pb2, product_pb2_grpc
from product_service import store
from product_service.app import open_database, start_grpc_server
from saga_kit.grpc_auth import authenticated_channel
from saga_kit.settings import Secret
from tests.conftest import Platform


@dataclass
class ProductEnv:
    pool: Any
    stub: product_pb2_grpc.ProductServiceAsyncStub
    target: str
    token: Secret

    async def product(self, price: int = 10_000, stock: int = 10, owner: str = "owner-1") -> str:
        slug = f"p-{uuid.uuid4().hex[:10]}"
        created = await store.create_product(self.pool, owner, slug, slug, "", price, stock)
        return created.id

    async def stock_of(self, product_id: str) -> tuple[int, int]:
        row = await self.pool.fetchrow(
            "SELECT stock, reserved FROM products WHERE id = $1", product_id
        )
        return int(row["stock"]), int(row["reserved"])

    async def reserve(
        self, transaction_id: str, *items: tuple[str, int, int], user_id: str = "u-1"
    ) -> product_pb2.ReserveResponse:
        return await self.stub.Reserve(
            product_pb2.ReserveRequest(
                transaction_id=transaction_id,
                user_id=user_id,
                items=[
                    product_pb2.ReserveItem(product_id=p, unit_price=price, quantity=q)
                    for p, price, q in items
                ],
            ),
            timeout=30,
        )


@pytest.fixture
async def product_env(
    platform: Platform, db_schema: str, service_token: Secret
) -> AsyncIterator[ProductEnv]:
    pool = await open_database(platform.postgres_dsn, db_schema, max_size=20)
    server, port = await start_grpc_server(pool, (service_token,), "127.0.0.1:0")
    target = f"127.0.0.1:{port}"
    channel = authenticated_channel(target, service_token)
    yield ProductEnv(pool, product_pb2_grpc.ProductServiceStub(channel), target, service_token)
    await channel.close()
    await server.stop(grace=None)
    await pool.close()
