"""Wiring of the Product service: pool, migrations, gRPC server, REST app, consumer."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from checkout.product.v1 import product_pb2_grpc
from saga_kit import db
from saga_kit.grpc_auth import ServiceTokenInterceptor
from saga_kit.settings import Secret
from saga_kit.supervise import Readiness

from .grpc_api import ProductServicer

SERVICE_NAME = "checkout.product.v1.ProductService"
_SERVING = health_pb2.HealthCheckResponse.SERVING
_NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING

log = logging.getLogger(__name__)


async def open_database(dsn: str, schema: str, max_size: int = 20) -> Any:
    """A pool on the service's schema, migrated to the latest version."""
    pool = await db.create_pool(dsn, schema, max_size=max_size)
    await db.migrate(pool, "product_service", schema)
    return pool


async def start_grpc_server(
    pool: Any,
    accepted_tokens: tuple[Secret, ...],
    address: str,
    health_servicer: health.aio.HealthServicer | None = None,
) -> tuple[grpc.aio.Server, int]:
    """Start the gRPC server (service token required; health open); returns it and its port.

    Without ``health_servicer`` the health status is SERVING from the start; with
    one it is NOT_SERVING until :func:`report_health` says otherwise.
    """
    server = grpc.aio.server(interceptors=[ServiceTokenInterceptor(accepted_tokens)])
    product_pb2_grpc.add_ProductServiceServicer_to_server(ProductServicer(pool), server)
    status = _SERVING if health_servicer is None else _NOT_SERVING
    health_servicer = health_servicer or health.aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    port = server.add_insecure_port(address)
    await server.start()
    for name in (SERVICE_NAME, ""):
        await health_servicer.set(name, status)
    return server, port


async def report_health(
    health_servicer: health.aio.HealthServicer,
    readiness: Readiness,
    stop: asyncio.Event,
    interval: float = 0.5,
) -> None:
    """Keep the gRPC health status level with ``readiness`` until ``stop``."""
    reported = None
    while not stop.is_set():
        problems = readiness.problems()
        status = _NOT_SERVING if problems else _SERVING
        if status != reported:
            for name in (SERVICE_NAME, ""):
                await health_servicer.set(name, status)
            if problems:
                log.warning("not ready: %s", problems)
            elif reported is not None:
                log.info("ready again")
            reported = status
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), interval)
