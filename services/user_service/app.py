"""Wiring of the User service: open the pool and Redis, migrate, build both servers.

Everything here is a plain function on a :class:`UserServiceConfig`, so tests run
the service in-process exactly as ``python -m user_service`` does, on their own
schema and ports, and share one set of resources between REST and gRPC.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from typing import Any

import grpc
import redis.asyncio as aioredis
from fastapi import FastAPI
from grpc_health.v1 import health

from saga_kit.db import create_pool, migrate

from .config import UserServiceConfig
from .domain import DEFAULT_SCRYPT, Accounts, ScryptParams, TokenCodec
from .grpc_api import build_grpc_server, mark_serving
from .rest_api import build_rest_app
from .revocations import RedisRevocations
from .store import PgUserStore

log = logging.getLogger(__name__)

READINESS_TIMEOUT = 2.0  # seconds; a probe must answer well within the kubelet's timeout


@dataclass
class UserServiceRuntime:
    """The open resources of one service instance and the use cases on them."""

    config: UserServiceConfig
    pool: Any  # asyncpg.Pool (asyncpg ships no type information)
    redis: aioredis.Redis
    store: PgUserStore
    revocations: RedisRevocations
    accounts: Accounts

    async def readiness(self) -> dict[str, bool]:
        async def probe(check: Any) -> bool:
            try:
                await asyncio.wait_for(check(), READINESS_TIMEOUT)
            except Exception as exc:  # any failure means "not ready", never a crash
                log.warning("readiness probe failed: %r", exc)
                return False
            return True

        postgres, redis_ok = await asyncio.gather(
            probe(self.store.ping), probe(self.revocations.ping)
        )
        return {"postgres": postgres, "redis": redis_ok}

    async def close(self) -> None:
        await self.redis.aclose()
        await self.pool.close()


async def open_runtime(
    config: UserServiceConfig, *, scrypt: ScryptParams = DEFAULT_SCRYPT
) -> UserServiceRuntime:
    """Connect, apply pending migrations and build the use cases."""
    pool = await create_pool(config.database_url.value, config.db_schema)
    try:
        applied = await migrate(pool, "user_service", config.db_schema)
        if applied:
            log.info("applied migrations %s to schema %s", applied, config.db_schema)
        redis = aioredis.Redis.from_url(config.redis_url.value)
    except BaseException:
        await pool.close()
        raise
    store = PgUserStore(pool)
    revocations = RedisRevocations(redis)
    accounts = Accounts(
        store,
        revocations,
        TokenCodec(config.load_keys(), config.token_ttl_seconds),
        scrypt=scrypt,
    )
    return UserServiceRuntime(
        config=config,
        pool=pool,
        redis=redis,
        store=store,
        revocations=revocations,
        accounts=accounts,
    )


def create_rest_app(runtime: UserServiceRuntime) -> FastAPI:
    return build_rest_app(runtime.accounts, runtime.readiness)


@dataclass
class RunningGrpcServer:
    server: grpc.aio.Server
    health: health.aio.HealthServicer
    port: int
    stopped: bool = False

    async def stop(self, grace: float) -> None:
        """NOT_SERVING first, so balancers stop sending; then finish calls in flight.

        Idempotent, so a shutdown path and a clean-up path may both call it."""
        if self.stopped:
            return
        self.stopped = True
        await self.health.enter_graceful_shutdown()
        await self.server.stop(grace)


async def start_grpc_server(
    runtime: UserServiceRuntime, host: str | None = None, port: int | None = None
) -> RunningGrpcServer:
    """Bind (port 0 picks a free one), start, and mark the service SERVING."""
    host = runtime.config.grpc_host if host is None else host
    port = runtime.config.grpc_port if port is None else port
    server, health_servicer = build_grpc_server(runtime.accounts, runtime.config.service_tokens)
    bound = server.add_insecure_port(f"{host}:{port}")
    if bound == 0:  # older grpc versions report a failed bind this way
        raise RuntimeError(f"cannot bind the gRPC server to {host}:{port}")
    await server.start()
    await mark_serving(health_servicer)
    return RunningGrpcServer(server=server, health=health_servicer, port=bound)
