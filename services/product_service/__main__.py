"""``python -m product_service``: REST, gRPC and the event consumer in one process.

The HTTP server, the event consumer and the gRPC health reporter run supervised:
one that fails is logged and started again, and the consumer's heartbeat is part
of readiness (``/readyz`` and gRPC health), so a consumer that is down or stuck
takes the service out of rotation instead of losing events behind a green probe.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

from grpc_health.v1 import health

from saga_kit import event_loop
from saga_kit.grpc_auth import authenticated_channel
from saga_kit.logs import setup_logging
from saga_kit.nats_access import connect as connect_nats
from saga_kit.serving import http_server, stop_on_signals
from saga_kit.settings import env_float
from saga_kit.supervise import Readiness, supervised
from saga_kit.user_auth import RememberingAuthenticator, UserServiceAuthenticator

from .app import open_database, report_health, start_grpc_server
from .config import ProductServiceConfig
from .consumer import EventConsumer
from .rest_api import create_rest_app

log = logging.getLogger("product_service")

# Without a fetch or a confirmed round trip for this long, the consumer is not ready.
CONSUMER_STALE_AFTER = 30.0


async def serve_http(app: object, host: str, port: int, stop: asyncio.Event) -> None:
    """Serve until ``stop`` (a fresh server each call, so a supervisor can restart it)."""
    server = http_server(app, host, port)

    async def exit_on_stop() -> None:
        await stop.wait()
        server.should_exit = True

    watcher = asyncio.create_task(exit_on_stop())
    try:
        await server.serve()
    finally:
        watcher.cancel()


async def main() -> None:
    setup_logging("product-service")
    cfg = ProductServiceConfig.from_env()
    stop = stop_on_signals()
    readiness = Readiness()
    pool = await open_database(cfg.database_url.value, cfg.db_schema)
    health_servicer = health.aio.HealthServicer()
    grpc_server, grpc_port = await start_grpc_server(
        pool, cfg.accepted_service_tokens, f"{cfg.grpc_host}:{cfg.grpc_port}", health_servicer
    )
    user_channel = authenticated_channel(cfg.user_service_target, cfg.service_token)
    nc = await connect_nats(cfg.nats_url, cfg.nats_credentials, "product-service")
    consumer_beat = readiness.heartbeat("event-consumer", stale_after=CONSUMER_STALE_AFTER)
    consumer = EventConsumer(
        nc.jetstream(),
        pool,
        cfg.topology,
        name=cfg.consumer_name,
        backoff_scale=cfg.consumer_backoff_scale,
        heartbeat=consumer_beat,
    )
    authenticator = RememberingAuthenticator(
        UserServiceAuthenticator(user_channel), ttl=env_float("USER_AUTH_CACHE_SECONDS", 5.0)
    )
    app = create_rest_app(pool, authenticator, readiness)
    tasks = [
        asyncio.create_task(
            supervised(
                "http", lambda: serve_http(app, cfg.http_host, cfg.http_port, stop), stop=stop
            )
        ),
        asyncio.create_task(
            supervised("consumer", lambda: consumer.run(stop), stop=stop, heartbeat=consumer_beat)
        ),
        asyncio.create_task(
            supervised(
                "grpc-health", lambda: report_health(health_servicer, readiness, stop), stop=stop
            )
        ),
    ]
    log.info("product service up: http %s, grpc %s", cfg.http_port, grpc_port)
    await stop.wait()
    await grpc_server.stop(grace=5)
    with contextlib.suppress(asyncio.CancelledError):
        await asyncio.gather(*tasks)
    await nc.close()
    await user_channel.close()
    await pool.close()
    log.info("product service stopped")


if __name__ == "__main__":
    event_loop.run(main())
