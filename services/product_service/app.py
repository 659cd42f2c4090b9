"""Wiring of the Product service: pool, migrations, gRPC server, REST app, consumer."""

from __future__ import annotations

from typing import Any

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from checkout.product.v1 import product_pb2_grpc
from saga_kit import db
from saga_kit.grpc_auth import ServiceTokenInterceptor
from saga_kit.settings import Secret

from .grpc_api import ProductServicer

SERVICE_NAME = "checkout.product.v1.ProductService"


async def open_database(dsn: str, schema: str, max_size: int = 20) -> Any:
    """A pool on the service's schema, migrated to the latest version."""
    pool = await db.create_pool(dsn, schema, max_size=max_size)
    await db.migrate(pool, "product_service", schema)
    return pool


async def start_grpc_server(
    pool: Any, accepted_tokens: tuple[Secret, ...], address: str
) -> tuple[grpc.aio.Server, int]:
    """Start the gRPC server (service token required; health open); returns it and its port."""
    server = grpc.aio.server(interceptors=[ServiceTokenInterceptor(accepted_tokens)])
    product_pb2_grpc.add_ProductServiceServicer_to_server(ProductServicer(pool), server)
    health_servicer = health.aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    port = server.add_insecure_port(address)
    await server.start()
    await health_servicer.set(SERVICE_NAME, health_pb2.HealthCheckResponse.SERVING)
    await health_servicer.set("", health_pb2.HealthCheckResponse.SERVING)
    return server, port
