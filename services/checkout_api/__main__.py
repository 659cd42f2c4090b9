"""``python -m checkout_api``."""

from __future__ import annotations

import asyncio
import contextlib

import redis.asyncio as aioredis

from checkout.product.v1 import product_pb2_grpc
from saga_kit import db, event_loop
from saga_kit.grpc_auth import authenticated_channel
from saga_kit.kube import kube_api_client
from saga_kit.logs import setup_logging
from saga_kit.serving import http_server, stop_on_signals
from saga_kit.signing_keys import PublishedKeys
from saga_kit.user_auth import LocalAuthenticator

from .admission import Admission
from .app import READY, ApiDeps, create_app
from .config import CheckoutApiConfig
from .kube import Checkouts
from .quota import Quota
from .soldout import SoldOutGate
from .watch import CheckoutWatch


async def main() -> None:
    setup_logging("checkout-api")
    cfg = CheckoutApiConfig.from_env()
    async with contextlib.AsyncExitStack() as stack:
        pool = await db.create_pool(cfg.readmodel_url.value, cfg.readmodel_schema, max_size=10)
        stack.push_async_callback(pool.close)
        api = await kube_api_client()
        stack.push_async_callback(api.close)
        users = authenticated_channel(cfg.user_service, cfg.service_token)
        stack.push_async_callback(users.close)
        products = authenticated_channel(cfg.product_service, cfg.service_token)
        stack.push_async_callback(products.close)
        redis = aioredis.Redis.from_url(
            cfg.redis_url.value, socket_timeout=2, socket_connect_timeout=2
        )
        stack.push_async_callback(redis.aclose)
        # Tokens are verified here with the User service's public keys; revocations are
        # read from Redis, which must be the User service's (it is, in the chart).
        token_keys = PublishedKeys(users)
        await token_keys.fetch_or_warn()  # if the User service is down: /readyz asks again
        # Its own connection: a watch holds one open for minutes at a time.
        watch_api = await kube_api_client()
        stack.push_async_callback(watch_api.close)
        checkout_watch = CheckoutWatch(watch_api, cfg.namespace, READY)
        product_stub = product_pb2_grpc.ProductServiceStub(products)
        admission = Admission(
            cfg.max_in_flight, target_seconds=cfg.admit_target_seconds, floor=cfg.min_in_flight
        )
        app = create_app(
            ApiDeps(
                checkouts=Checkouts(api, cfg.namespace),
                readmodel=pool,
                authenticator=LocalAuthenticator(token_keys, redis),
                products=product_stub,
                wait_seconds=cfg.wait_seconds,
                quota=Quota(cfg.limits, redis, pool),
                watch=checkout_watch,
                soldout=SoldOutGate(product_stub, admission=admission),
                admission=admission,
                token_keys=token_keys,
            )
        )
        server = http_server(app, cfg.host, cfg.port)
        stop = stop_on_signals()
        watching = asyncio.create_task(checkout_watch.run(stop))
        serving = asyncio.create_task(server.serve())
        await stop.wait()
        server.should_exit = True
        with contextlib.suppress(asyncio.CancelledError):
            await serving
        await watching


if __name__ == "__main__":
    event_loop.run(main())
