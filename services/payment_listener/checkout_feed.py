"""Keeps :class:`KnownCheckouts` current: one paged LIST, then a watch from its
resourceVersion, resumed when the server ends it and listed again when the version is
gone or the connection fails. Until a LIST has been read the settler asks the
apiserver itself (``KnownCheckouts.synced``)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator

from saga_kit.apiserver import ApiClient, ApiError
from saga_kit.checkout_store import CheckoutStatusStore, checkouts_path
from saga_kit.supervise import Backoff

from .known_checkouts import Body, CachedCheckouts, KnownCheckouts, slim

log = logging.getLogger(__name__)

WATCH_SECONDS = 300  # the apiserver ends each watch after this; it is resumed at once
GONE = 410


FIELD_MANAGER = "payment-listener"  # who wrote the settlement, in managedFields


@contextlib.asynccontextmanager
async def watched_checkouts(api: ApiClient, namespace: str) -> AsyncIterator[CachedCheckouts]:
    """The settler's Checkouts: the watch's view, the apiserver behind it."""
    known = KnownCheckouts()
    feed = asyncio.create_task(follow(api, namespace, known))
    try:
        yield CachedCheckouts(known, CheckoutStatusStore(api, FIELD_MANAGER))
    finally:
        feed.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await feed


async def follow(api: ApiClient, namespace: str, known: KnownCheckouts) -> None:
    """Until cancelled. ``namespace`` "" follows every namespace."""
    backoff = Backoff(first=0.5, cap=10.0)
    failures = 0
    while True:
        try:
            await _list_and_watch(api, checkouts_path(namespace), known)
            failures = 0
        except ApiError as exc:
            if exc.status != GONE:
                failures = await _failed(known, backoff, failures + 1, exc)
            else:
                log.info("checkout watch: version gone, listing again")
        except Exception as exc:  # the apiserver away or restarting, a bad answer
            failures = await _failed(known, backoff, failures + 1, exc)


async def _failed(known: KnownCheckouts, backoff: Backoff, failures: int, exc: Exception) -> int:
    known.lost()  # events may be missed while away: read the apiserver until relisted
    delay = backoff.delay(failures)
    log.warning("checkout watch failed (%r); again in %.1f s", exc, delay)
    await asyncio.sleep(delay)
    return failures


async def _list_and_watch(api: ApiClient, path: str, known: KnownCheckouts) -> None:
    listed: list[Body] = []
    version = ""
    async for page in api.pages(path):
        listed.extend(slim(body) for body in page.get("items") or [])
        version = str((page.get("metadata") or {}).get("resourceVersion") or version)
    known.replace(listed)
    del listed
    while True:
        events = api.watch(
            path,
            params={
                "resourceVersion": version,
                "allowWatchBookmarks": True,
                "timeoutSeconds": WATCH_SECONDS,
            },
        )
        async with contextlib.aclosing(events):
            async for event in events:
                body = event["object"]
                known.seen(str(event.get("type")), body)
                version = str((body.get("metadata") or {}).get("resourceVersion") or version)
