"""The kopf side: watch Checkouts and hand every event to the reconciler.

Only ``@kopf.on.event`` is used. It keeps no progress on the resource (no
annotations, no status.kopf) and needs no finalizer, so kopf itself never
writes to a Checkout: the saga's own status writes are the only ones.

kopf runs in a thread with an event loop of its own. On shutdown kopf cancels
every task created in its loop after it started, and it takes over SIGINT and
SIGTERM in the main thread; kept in its own thread, it watches and nothing more,
while the saga's tasks live in the main loop and stop in their own order.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
from collections.abc import Iterable
from typing import Any

import kopf
from kopf._cogs.structs import bodies, ephemera  # kopf.operator(memories=...) takes these,
from kopf._core.reactor import inventory  # but kopf does not re-export them

from .clients.kube import GROUP, LIST_PAGE, PLURAL, VERSION
from .reconciler import Reconciler

log = logging.getLogger(__name__)


def register(
    registry: kopf.OperatorRegistry, reconciler: Reconciler, loop: asyncio.AbstractEventLoop
) -> None:
    """Handlers that pass watch events to ``reconciler``, which runs in ``loop``."""

    @kopf.on.login(registry=registry)
    def login(**kwargs: Any) -> kopf.ConnectionInfo | None:
        return kopf.login_with_service_account(**kwargs) or kopf.login_with_kubeconfig(**kwargs)

    @kopf.on.event(GROUP, VERSION, PLURAL, registry=registry)
    async def checkout_event(event: kopf.RawEvent, **_: Any) -> None:
        body: Any = event.get("object")
        if isinstance(body, dict) and body.get("metadata", {}).get("uid"):
            loop.call_soon_threadsafe(reconciler.observe, event.get("type"), body)


class NoDiffBase(kopf.DiffBaseStorage):
    """kopf's change detection, with nothing to detect.

    Only ``@kopf.on.event`` is registered, and it needs no diff; kopf builds one for
    every watch event anyway: a deep copy of the body, and a parse of the
    last-handled-configuration annotation. In py-spy that was 15-21 % of the operator's
    busy CPU while a restart listed 22,000 Checkouts, and the same share of every event
    after. A change handler (``on.create``/``on.update``/...) would need kopf's own
    storage back: ``tests/unit/test_kopf_listing.py`` fails when one is registered.
    """

    def build(
        self, *, body: kopf.Body, extra_fields: Iterable[Any] | None = None
    ) -> kopf.BodyEssence:
        return kopf.BodyEssence()

    def fetch(self, *, body: kopf.Body) -> kopf.BodyEssence | None:
        return None

    def store(self, *, body: kopf.Body, patch: kopf.Patch, essence: kopf.BodyEssence) -> None:
        raise AssertionError("no change handlers: nothing to store")


class RelayOnlyMemories(inventory.ResourceMemories):
    """kopf's per-object memory, kept for no object.

    kopf remembers every object it has seen until its deletion: a memo, an error
    throttler, indexing and daemon state, flags for resuming change handlers. A
    ``@kopf.on.event`` handler that only relays the event uses none of it across events,
    and ended Checkouts wait an hour for their TTL delete: after a restart with 15,000
    ended, 15,000 such records (and the heap arenas they pin) stayed for that hour.
    Each event gets a fresh record, dropped when it is processed. A daemon, timer,
    index or change handler would need kopf's own memories back:
    ``tests/unit/test_kopf_listing.py`` fails when one is registered.
    """

    async def recall(
        self,
        raw_body: bodies.RawBody,
        *,
        memobase: ephemera.AnyMemo | None = None,
        noticed_by_listing: bool = False,
        ephemeral: bool = False,
    ) -> inventory.ResourceMemory:
        return await super().recall(
            raw_body, memobase=memobase, noticed_by_listing=noticed_by_listing, ephemeral=True
        )


# kopf runs a worker task per object, which keeps the last event's whole body until it
# has idled this long (kopf's default: 5 s). A restart lists every Checkout within a few
# seconds, so with the default nearly all of them were alive at once (15,000 ended: RSS
# past 300 MiB), and the heap's arenas stayed that size (docs/performance.md, "Session 9").
WORKER_IDLE_SECONDS = 0.1


def kopf_settings() -> kopf.OperatorSettings:
    settings = kopf.OperatorSettings()
    settings.persistence.diffbase_storage = NoDiffBase()
    settings.posting.enabled = False  # the saga posts one Event per phase change
    settings.watching.server_timeout = 300
    # kopf lists every Checkout in one answer by default and parses it whole: with
    # 10,000 ended Checkouts waiting for their TTL delete, a restarted operator went
    # from 90 to 430 MiB in three seconds (186 MiB of it that one parsed answer).
    settings.watching.chunk_size = LIST_PAGE
    settings.queueing.idle_timeout = WORKER_IDLE_SECONDS
    return settings


class KopfWatcher:
    """kopf in a background thread, feeding the reconciler in the caller's loop."""

    def __init__(self, reconciler: Reconciler, namespace: str = "") -> None:
        self._reconciler = reconciler
        self._namespace = namespace
        self._stop = threading.Event()
        self._ready = threading.Event()
        self._thread: threading.Thread | None = None
        self.error: BaseException | None = None
        self.memories = RelayOnlyMemories()

    def start(self) -> None:
        # kopf logs every handled watch event at INFO; the saga logs what matters.
        logging.getLogger("kopf.objects").setLevel(logging.WARNING)
        loop = asyncio.get_running_loop()
        registry = kopf.OperatorRegistry()
        register(registry, self._reconciler, loop)
        settings = kopf_settings()
        self._reconciler.watch_started()

        def run() -> None:
            try:
                asyncio.run(
                    kopf.operator(
                        registry=registry,
                        settings=settings,
                        standalone=True,
                        clusterwide=not self._namespace,
                        namespaces=[self._namespace] if self._namespace else [],
                        stop_flag=self._stop,
                        ready_flag=self._ready,
                        memories=self.memories,
                    )
                )
            except BaseException as exc:
                self.error = exc
                log.exception("the kopf watcher stopped")
            finally:
                with contextlib.suppress(RuntimeError):  # the loop closed: nothing to tell
                    loop.call_soon_threadsafe(self._reconciler.watch_stopped)

        self._thread = threading.Thread(target=run, name="kopf", daemon=True)
        self._thread.start()

    async def stop(self, within: float = 20.0) -> None:
        self._reconciler.watch_stopped()
        self._stop.set()
        if self._thread is not None:
            await asyncio.to_thread(self._thread.join, within)

    @property
    def alive(self) -> bool:
        return self._thread is not None and self._thread.is_alive()
