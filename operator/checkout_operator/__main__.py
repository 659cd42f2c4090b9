"""``python -m checkout_operator``: the Checkout saga operator."""

from __future__ import annotations

import asyncio
import contextlib
import importlib.util
import logging
import sys
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from midtrans import MidtransConfig
from saga_kit import event_loop
from saga_kit.kube import kube_api_client
from saga_kit.logs import setup_logging
from saga_kit.serving import stop_on_signals
from saga_kit.supervise import Readiness, every, supervised

from .actions import Deps
from .app import build_deps
from .final_events import FinalEvents
from .handlers import KopfWatcher
from .inbox import PaymentInbox
from .leader import LeaderElector
from .poller import PaymentPoller
from .probes import serve_probes
from .reconciler import Reconciler
from .returns import PaymentReturns
from .settings import OperatorSettings

log = logging.getLogger("checkout_operator")

# httpcore (the Midtrans client's HTTP) runs `import sniffio` on every request; sniffio
# is optional and not installed, and a failed import searches sys.path each time: 4 %
# of the operator's CPU in a py-spy profile of paid checkouts. A None entry makes the
# import fail at once, and httpcore takes asyncio, as it would anyway.
if importlib.util.find_spec("sniffio") is None:
    sys.modules["sniffio"] = None  # type: ignore[assignment]


async def sweep_deleted(
    reconciler: Reconciler, settings: OperatorSettings, stop: asyncio.Event
) -> None:
    """Periodically release checkouts deleted while nobody watched (e.g. during a restart)."""
    # Let the first watch listing fill the cache.
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(stop.wait(), min(5.0, settings.sweep_every))

    async def sweep() -> None:
        released = await reconciler.sweep(settings.namespace, settings.sweep_min_age)
        if released:
            log.info("%d checkouts deleted while unobserved: released or archived", released)

    await every(settings.sweep_every, sweep, stop, "sweep")


async def watch_the_watcher(watcher: KopfWatcher, stop: asyncio.Event) -> None:
    """End the operator if the kopf thread dies (the Pod restarts it)."""
    while not stop.is_set() and watcher.alive:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), 1)
    if not stop.is_set():
        log.error("the kopf watcher died: %r", watcher.error)


async def _supervised(
    name: str, loop: Callable[[], Awaitable[None]], stop: asyncio.Event, readiness: Readiness
) -> None:
    heartbeat = readiness.heartbeat(name)

    async def run() -> None:
        heartbeat.beat()
        await loop()

    await supervised(name, run, stop=stop, heartbeat=heartbeat)


@dataclass
class Prepared:
    """Everything an operator sets up (passively) before it leads."""

    deps: Deps
    reconciler: Reconciler
    inbox: PaymentInbox
    elector: LeaderElector


async def prepare(
    settings: OperatorSettings,
    stack: contextlib.AsyncExitStack,
    midtrans_config: MidtransConfig | None = None,
) -> Prepared:
    """Connect and set up, without acting: leading starts with acting at once."""
    deps = await build_deps(settings, stack, midtrans_config=midtrans_config)
    reconciler = Reconciler(deps, workers=settings.workers)
    inbox = PaymentInbox(
        reconciler,
        deps.announcer.js,
        deps.announcer.topology,
        look_after=settings.inbox_look_after,
    )
    await inbox.ensure()
    # Its own connection (acquire, release; renewals make one in their own thread).
    lease_api = await kube_api_client()
    stack.push_async_callback(lease_api.close)
    elector = LeaderElector(
        lease_api,
        settings.lease_namespace,
        settings.lease_name,
        duration=settings.lease_duration,
        renew_every=settings.lease_renew_every,
    )
    return Prepared(deps, reconciler, inbox, elector)


def quiet_http_requests() -> None:
    """httpx logs every request at INFO: a line per Midtrans call, ten a second from the
    poller alone, each formatted as JSON. Shown at LOG_LEVEL=DEBUG only."""
    if logging.getLogger().getEffectiveLevel() > logging.DEBUG:
        logging.getLogger("httpx").setLevel(logging.WARNING)


async def main() -> None:
    setup_logging("checkout-operator")
    quiet_http_requests()
    settings = OperatorSettings.from_env()
    readiness = Readiness()
    if settings.metrics_port:
        serve_probes(settings.metrics_port, readiness)
    stop = stop_on_signals()
    lost = False
    async with contextlib.AsyncExitStack() as stack:
        ready = await prepare(settings, stack)
        # Nothing acts before this instance holds the lease (see leader.py).
        if not await ready.elector.acquire(stop):
            log.info("checkout operator stopped before it became the leader")
            return
        try:
            lost = await act(ready, settings, stop, stack, readiness)
        finally:
            await ready.elector.release()  # after acting stopped: a successor may start now
    log.info("checkout operator stopped")
    if lost:
        raise SystemExit(1)  # the Pod restarts and waits to lead again


async def act(
    ready: Prepared,
    settings: OperatorSettings,
    stop: asyncio.Event,
    stack: contextlib.AsyncExitStack,
    readiness: Readiness,
) -> bool:
    """Act while leading: watch, reconcile, poll, return stray money, consume the inbox, sweep.

    Returns True if the lease was lost or a task died (everything stopped at once).
    """
    return await start_acting(ready, settings, stop, stack, readiness).finish()


@dataclass
class Acting:
    """The running parts of a leading operator."""

    watcher: KopfWatcher
    elector: LeaderElector
    stop: asyncio.Event
    tasks: list[asyncio.Task[None]]

    async def finish(self) -> bool:
        """Wait until acting ends; True if the lease was lost or a task died."""
        done, _ = await asyncio.wait(self.tasks, return_when=asyncio.FIRST_COMPLETED)
        lost = not self.elector.leading
        if not self.stop.is_set():
            # Each loop handles its own errors; one that ends anyway is a bug: stop all
            # and exit non-zero, so the Pod restarts (nothing is lost: all state is durable).
            for task in done:
                error = None if task.cancelled() else task.exception()
                log.error("task %s ended unexpectedly: %r", task.get_name(), error)
            lost = True
        self.stop.set()
        if lost:
            # Not the leader any more: stop acting now, without finishing work in flight.
            log.error("lost the lease %s: stopping at once", self.elector.where)
            for task in self.tasks:
                task.cancel()
        for task in self.tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        return lost


def start_acting(
    ready: Prepared,
    settings: OperatorSettings,
    stop: asyncio.Event,
    stack: contextlib.AsyncExitStack,
    readiness: Readiness,
) -> Acting:
    """Start every part of acting; :meth:`Acting.finish` waits for them."""
    reconciler, elector = ready.reconciler, ready.elector
    watcher = KopfWatcher(reconciler, settings.namespace)
    watcher.start()
    stack.push_async_callback(watcher.stop)
    poller = PaymentPoller(reconciler)  # its Midtrans budget is shared with the returns
    returns = PaymentReturns(reconciler, poller.late_bucket, tick=settings.returns_tick)
    final_events = FinalEvents(
        ready.deps, tick=settings.final_event_tick, grace=settings.final_event_grace
    )
    loops: dict[str, Callable[[], Awaitable[None]]] = {
        "poller": lambda: poller.run(stop, tick=settings.poll_tick),
        "payment-returns": lambda: returns.run(stop),
        "payment-inbox": lambda: ready.inbox.run(stop),
        "final-events": lambda: final_events.run(stop),
        "sweep": lambda: sweep_deleted(reconciler, settings, stop),
    }
    tasks = [
        # The lease, the watch and the reconciler end the operator if they end.
        asyncio.create_task(elector.keep_in_own_thread(stop), name="lease"),
        asyncio.create_task(watch_the_watcher(watcher, stop), name="kopf"),
        asyncio.create_task(reconciler.run(stop), name="reconciler"),
        # The others are started again if they fail; /readyz says so meanwhile.
        *(
            asyncio.create_task(_supervised(name, loop, stop, readiness), name=name)
            for name, loop in loops.items()
        ),
    ]
    log.info("checkout operator started (namespace: %s)", settings.namespace or "all")
    return Acting(watcher, elector, stop, tasks)


if __name__ == "__main__":
    event_loop.run(main())
