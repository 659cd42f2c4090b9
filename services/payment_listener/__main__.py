"""``python -m payment_listener``."""

from __future__ import annotations

import asyncio
import contextlib

from fastapi import FastAPI

from midtrans import MidtransClient, MidtransConfig
from saga_kit import event_loop
from saga_kit.kube import kube_api_client
from saga_kit.logs import setup_logging
from saga_kit.nats_access import connect as connect_nats
from saga_kit.serving import http_server, stop_on_signals

from .app import create_app
from .checkout_feed import watched_checkouts
from .config import ListenerConfig
from .settling import Settler

# A notification waits for this answer: Midtrans retries one that times out.
MIDTRANS_TIMEOUT_SECONDS = 5.0


async def main() -> None:
    setup_logging("payment-listener")
    cfg = ListenerConfig.from_env()
    # The operator creates the payment stream (the listener may not); until then a
    # notification is answered 503 and Midtrans retries it.
    nc = await connect_nats(cfg.nats_url, cfg.nats_credentials, "payment-listener")
    js = nc.jetstream()
    async with contextlib.AsyncExitStack() as resources:
        settler = None
        if cfg.settles:
            api = await kube_api_client()
            resources.push_async_callback(api.close)
            midtrans = MidtransClient(
                MidtransConfig(
                    server_key=cfg.server_key.value,
                    core_base_url=cfg.midtrans_core_url,
                    timeout=MIDTRANS_TIMEOUT_SECONDS,
                )
            )
            resources.push_async_callback(midtrans.aclose)
            # The watch's view of the Checkouts saves a read per paid notification.
            checkouts = await resources.enter_async_context(
                watched_checkouts(api, cfg.checkout_namespace)
            )
            settler = Settler(checkouts, midtrans.status, cfg.checkout_namespace)
        await _serve(cfg, create_app(cfg.server_key.value, js, cfg.topology, settler))
    await nc.close()


async def _serve(cfg: ListenerConfig, app: FastAPI) -> None:
    server = http_server(app, cfg.host, cfg.port)
    stop = stop_on_signals()
    serving = asyncio.create_task(server.serve())
    await stop.wait()
    server.should_exit = True
    with contextlib.suppress(asyncio.CancelledError):
        await serving


if __name__ == "__main__":
    event_loop.run(main())
