"""``python -m checkout_operator``: the Checkout saga operator."""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging

from prometheus_client import start_http_server

from saga_kit.logs import setup_logging
from saga_kit.serving import stop_on_signals

from . import metrics
from .app import build_deps
from .handlers import KopfWatcher
from .inbox import PaymentInbox
from .poller import PaymentPoller
from .reconciler import Reconciler
from .saga import Phase
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
            counts = reconciler.phases()
            for phase in Phase:  # a phase nobody is in any more reads 0, not its last count
                metrics.CHECKOUTS.labels(phase.value).set(counts.get(phase.value, 0))
        except Exception:
            log.exception("sweep failed")
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), 60)


async def watch_the_watcher(watcher: KopfWatcher, stop: asyncio.Event) -> None:
    """End the operator if the kopf thread dies (the Pod restarts it)."""
    while not stop.is_set() and watcher.alive:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), 1)
    if not stop.is_set():
        log.error("the kopf watcher died: %r", watcher.error)


async def main() -> None:
    setup_logging("checkout-operator")
    settings = OperatorSettings.from_env()
    if settings.metrics_port:
        start_http_server(settings.metrics_port, addr="0.0.0.0")  # noqa: S104 (scraped in-cluster)
    stop = stop_on_signals()
    async with contextlib.AsyncExitStack() as stack:
        deps = await build_deps(settings, stack)
        reconciler = Reconciler(deps, workers=settings.workers)
        inbox = PaymentInbox(reconciler, deps.announcer.js, deps.announcer.topology)
        await inbox.ensure()
        watcher = KopfWatcher(reconciler, settings.namespace)
        watcher.start()
        stack.push_async_callback(watcher.stop)
        tasks = [
            asyncio.create_task(watch_the_watcher(watcher, stop), name="kopf"),
            asyncio.create_task(reconciler.run(stop), name="reconciler"),
            asyncio.create_task(PaymentPoller(reconciler).run(stop), name="poller"),
            asyncio.create_task(inbox.run(stop), name="payment-inbox"),
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
