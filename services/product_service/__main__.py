"""``python -m product_service``: REST, gRPC and the event consumer in one process."""

from __future__ import annotations

import asyncio
import contextlib
import logging

from saga_kit.grpc_auth import authenticated_channel
from saga_kit.logs import setup_logging
from saga_kit.nats_access import connect as connect_nats
from saga_kit.serving import http_server, stop_on_signals
from saga_kit.user_auth import UserServiceAuthenticator

from .app import open_database, start_grpc_server
from .config import ProductServiceConfig
from .consumer import EventConsumer
from .rest_api import create_rest_app

log = logging.getLogger("product_service")


async def main() -> None:
    setup_logging("product-service")
    cfg = ProductServiceConfig.from_env()
    pool = await open_database(cfg.database_url.value, cfg.db_schema)
    grpc_server, grpc_port = await start_grpc_server(
        pool, cfg.accepted_service_tokens, f"{cfg.grpc_host}:{cfg.grpc_port}"
    )
    user_channel = authenticated_channel(cfg.user_service_target, cfg.service_token)
    nc = await connect_nats(cfg.nats_url, cfg.nats_credentials, "product-service")
    consumer = EventConsumer(
        nc.jetstream(),
        pool,
        cfg.topology,
        name=cfg.consumer_name,
        max_deliver=cfg.consumer_max_deliver,
        backoff_scale=cfg.consumer_backoff_scale,
    )
    await consumer.ensure()
    stop = stop_on_signals()
    app = create_rest_app(pool, UserServiceAuthenticator(user_channel))
    http = http_server(app, cfg.http_host, cfg.http_port)
    tasks = [
        asyncio.create_task(http.serve(), name="http"),
        asyncio.create_task(consumer.run(stop), name="consumer"),
    ]
    log.info("product service up: http %s, grpc %s", cfg.http_port, grpc_port)
    await stop.wait()
    http.should_exit = True
    await grpc_server.stop(grace=5)
    with contextlib.suppress(asyncio.CancelledError):
        await asyncio.gather(*tasks)
    await nc.close()
    await user_channel.close()
    await pool.close()
    log.info("product service stopped")


if __name__ == "__main__":
    asyncio.run(main())
