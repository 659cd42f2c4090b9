"""``python -m checkout_operator``: the Checkout saga operator."""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging

import kopf
from prometheus_client import start_http_server

from saga_kit.logs import setup_logging
from saga_kit.serving import stop_on_signals

from . import handlers, metrics
from .app import build_deps
from .poller import PaymentPoller
from .reconciler import Reconciler
from .settings import OperatorSettings

log = logging.getLogger("checkout_operator")


async def sweep_deleted(reconciler: Reconciler, namespace: str, stop: asyncio.Event) -> None:
    """Periodically release checkouts deleted while nobody watched (e.g. during a restart)."""
    await asyncio.sleep(5)  # let the first watch listing fill the cache
    while not stop.is_set():
        try:
            released = await reconciler.sweep(namespace, dt.timedelta(seconds=30))
            if released:
                log.info("released %d checkouts deleted while unobserved", released)
            for phase, count in reconciler.phases().items():
                metrics.CHECKOUTS.labels(phase).set(count)
        except Exception:
            log.exception("sweep failed")
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), 60)


async def main() -> None:
    setup_logging("checkout-operator")
    settings = OperatorSettings.from_env()
    if settings.metrics_port:
        start_http_server(settings.metrics_port, addr="0.0.0.0")  # noqa: S104 (scraped in-cluster)
    stop = stop_on_signals()
    async with contextlib.AsyncExitStack() as stack:
        deps = await build_deps(settings, stack)
        reconciler = Reconciler(deps, workers=settings.workers)
        registry = kopf.OperatorRegistry()
        handlers.register(registry, reconciler)
        kopf_settings = kopf.OperatorSettings()
        kopf_settings.posting.enabled = False  # our own Events, one per phase change
        kopf_settings.watching.server_timeout = 300
        tasks = [
            asyncio.create_task(
                kopf.operator(
                    registry=registry,
                    settings=kopf_settings,
                    standalone=True,
                    clusterwide=not settings.namespace,
                    namespaces=[settings.namespace] if settings.namespace else [],
                    stop_flag=stop,
                ),
                name="kopf",
            ),
            asyncio.create_task(reconciler.run(stop), name="reconciler"),
            asyncio.create_task(PaymentPoller(reconciler).run(stop), name="poller"),
            asyncio.create_task(sweep_deleted(reconciler, settings.namespace, stop), name="sweep"),
        ]
        log.info("checkout operator started (namespace: %s)", settings.namespace or "all")
        await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        stop.set()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
    log.info("checkout operator stopped")


if __name__ == "__main__":
    asyncio.run(main())
