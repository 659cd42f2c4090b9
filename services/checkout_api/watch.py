"""One watch on the namespace's Checkouts, which waiting POSTs share.

A POST waits until its saga has a payment page or an answer. Asking the apiserver
for the resource again and again (GETs with backoff) made most of its requests
under load; instead one watch per API process streams every Checkout change, and
each waiting request is woken by the event that makes its checkout ready. The
waiter is registered before the Checkout is created, so no event can slip by.

When the watch is not connected (start-up, apiserver trouble) a waiter falls back
to polling, and every wait ends with one GET if no event answered it: the watch
makes waiting cheap, never makes an answer wrong.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Collection
from typing import Any

from saga_kit.apiserver import ApiClient, ApiError
from saga_kit.checkout_store import checkouts_path
from saga_kit.supervise import Backoff

log = logging.getLogger(__name__)

Body = dict[str, Any]
WATCH_SECONDS = 240  # the apiserver ends each watch after this; it is resumed at once
GONE = 410  # the resource version is too old: list again


def _phase(body: Body) -> str | None:
    phase = (body.get("status") or {}).get("phase")
    return phase if isinstance(phase, str) else None


class CheckoutWatch:
    def __init__(self, api: ApiClient, namespace: str, ready: Collection[str]) -> None:
        self._api = api
        self.namespace = namespace
        self._ready = frozenset(ready)
        self._waiters: dict[str, list[asyncio.Future[Body | None]]] = {}
        self.connected = False
        # LISTs the watch has started from: events before a new one may have been missed.
        self.lists = 0
        self._backoff = Backoff(first=0.5, cap=10.0)

    # --- waiting ----------------------------------------------------------------------

    @contextlib.asynccontextmanager
    async def waiter(self, name: str) -> AsyncIterator[asyncio.Future[Body | None]]:
        """A future that the watch resolves with the Checkout's body once its phase is
        ready (None if it was deleted); registered before the Checkout is created."""
        future: asyncio.Future[Body | None] = asyncio.get_running_loop().create_future()
        self._waiters.setdefault(name, []).append(future)
        try:
            yield future
        finally:
            waiting = self._waiters.get(name, [])
            if future in waiting:
                waiting.remove(future)
            if not waiting:
                self._waiters.pop(name, None)

    async def wait(
        self,
        future: asyncio.Future[Body | None],
        body: Body,
        seconds: float,
        get: Callable[[str], Awaitable[Body | None]],
    ) -> Body:
        """The Checkout once ready, or as it is when ``seconds`` have passed."""
        if _phase(body) in self._ready:
            return body
        name = body["metadata"]["name"]
        loop = asyncio.get_running_loop()
        deadline = loop.time() + seconds
        delay = 0.05
        # Whether the watch has been connected all along, from one LIST, since we last
        # looked ourselves (or registered): then no event for us can have been missed.
        # The LIST counts too: a watch told 410 lists and reconnects within one step.
        watched, listed = self.connected, self.lists
        while (left := deadline - loop.time()) > 0:
            connected = self.connected
            if connected:
                step = min(left, 1.0)  # a watch that breaks meanwhile is noticed
            else:
                step = min(delay, left)
                delay = min(delay * 1.5, 0.5)
            with contextlib.suppress(TimeoutError):
                done = await asyncio.wait_for(asyncio.shield(future), step)
                return body if done is None else done
            if connected and watched and self.lists == listed:
                continue
            # No watch, or one that has just (re)connected and may have missed our
            # event meanwhile: look for ourselves.
            watched, listed = connected, self.lists
            fresh = await get(name)
            if fresh is None:
                return body
            body = fresh
            if _phase(body) in self._ready:
                return body
        # The watch may lag behind the apiserver: one look settles it.
        return await get(name) or body

    def deliver(self, kind: str, body: Body) -> None:
        name = (body.get("metadata") or {}).get("name")
        waiting = self._waiters.get(name) if isinstance(name, str) else None
        if not waiting:
            return
        if kind == "DELETED":
            result: Body | None = None
        elif _phase(body) in self._ready:
            result = body
        else:
            return
        for future in waiting:
            if not future.done():
                future.set_result(result)

    # --- watching ---------------------------------------------------------------------

    async def run(self, stop: asyncio.Event) -> None:
        """Watch until ``stop``; reconnects (and lists again when told the version is
        too old) after any failure, with a capped backoff."""
        failures = 0
        while not stop.is_set():
            try:
                await self._watch(stop)
                failures = 0
            except Exception as exc:  # the apiserver away or restarting: watch again
                self.connected = False
                failures += 1
                delay = self._backoff.delay(failures)
                log.warning("checkout watch failed (%r); again in %.1f s", exc, delay)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), delay)
        self.connected = False

    async def _watch(self, stop: asyncio.Event) -> None:
        # Start from now: a LIST of one item gives the collection's resource version.
        path = checkouts_path(self.namespace)
        listed = await self._api.request("GET", path, params={"limit": 1})
        version = listed["metadata"]["resourceVersion"]
        self.lists += 1
        # Waiters registered while disconnected may have missed their event: the wait
        # loop's own GETs cover them, so nothing needs replaying here.
        while not stop.is_set():
            events = self._api.watch(
                path,
                params={
                    "resourceVersion": version,
                    "allowWatchBookmarks": True,
                    "timeoutSeconds": WATCH_SECONDS,
                },
            )
            stopping = asyncio.create_task(stop.wait())
            try:
                self.connected = True
                async with contextlib.aclosing(events):
                    while True:
                        step = asyncio.ensure_future(events.__anext__())
                        done, _ = await asyncio.wait(
                            {step, stopping}, return_when=asyncio.FIRST_COMPLETED
                        )
                        if step not in done:
                            step.cancel()
                            # Settled before the stream is closed (a running one cannot be).
                            await asyncio.wait({step})
                            return
                        try:
                            event = step.result()
                        except StopAsyncIteration:
                            break  # the server ended this watch: resume from `version`
                        found = event["object"]
                        if event["type"] != "BOOKMARK":
                            self.deliver(event["type"], found)
                        version = (found.get("metadata") or {}).get("resourceVersion") or version
            except ApiError as exc:
                if exc.status == GONE:
                    self.connected = False
                    log.info("checkout watch: version %s is gone, listing again", version)
                    return  # run() lists again at once (no failure counted)
                raise
            finally:
                stopping.cancel()
