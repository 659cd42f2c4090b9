"""``python -m payment_listener``."""

from __future__ import annotations

import asyncio
import contextlib

from saga_kit.logs import setup_logging
from saga_kit.nats_access import connect as connect_nats
from saga_kit.serving import http_server, stop_on_signals

from .app import create_app
from .config import ListenerConfig


async def main() -> None:
    setup_logging("payment-listener")
    cfg = ListenerConfig.from_env()
    # The operator creates the payment stream (the listener may not); until then a
    # notification is answered 503 and Midtrans retries it.
    nc = await connect_nats(cfg.nats_url, cfg.nats_credentials, "payment-listener")
    js = nc.jetstream()
    app = create_app(cfg.server_key.value, js, cfg.topology)
    server = http_server(app, cfg.host, cfg.port)
    stop = stop_on_signals()
    serving = asyncio.create_task(server.serve())
    await stop.wait()
    server.should_exit = True
    with contextlib.suppress(asyncio.CancelledError):
        await serving
    await nc.close()


if __name__ == "__main__":
    asyncio.run(main())
