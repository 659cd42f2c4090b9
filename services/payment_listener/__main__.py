"""``python -m payment_listener``."""

from __future__ import annotations

import asyncio
import contextlib

import nats

from saga_kit.events import ensure_streams
from saga_kit.logs import setup_logging
from saga_kit.serving import http_server, stop_on_signals

from .app import create_app
from .config import ListenerConfig


async def main() -> None:
    setup_logging("payment-listener")
    cfg = ListenerConfig.from_env()
    nc = await nats.connect(cfg.nats_url, name="payment-listener", max_reconnect_attempts=-1)
    js = nc.jetstream()
    await ensure_streams(js, cfg.topology)
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
