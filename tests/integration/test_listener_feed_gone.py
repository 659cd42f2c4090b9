"""The listener's watch-fed view of the Checkouts after the apiserver says 410 Gone: it
lists again, so the view holds what changed in the gap and drops what was deleted in
it, and the watch goes on from the new list.

The apiserver is real; only the 410 is played by a proxy in front of it
(tests.helpers.watch_gap).
"""

from __future__ import annotations

import asyncio
import contextlib

import pytest

from payment_listener.checkout_feed import follow
from payment_listener.known_checkouts import KnownCheckouts
from saga_kit.apiserver import ApiClient
from saga_kit.checkout_store import checkouts_path
from tests.helpers.waiting import eventually
from tests.helpers.watch_gap import How, watch_gap
from tests.integration.test_checkout_watch_gone import api, create, set_phase

__all__ = ["api"]


@pytest.mark.parametrize("how", ["error event", "http 410"])
async def test_after_a_410_the_view_holds_what_changed_in_the_gap(
    api: ApiClient, namespace: str, how: How
) -> None:
    for name in ("changed", "deleted", "kept"):
        await create(api, namespace, name)
        await set_phase(api, namespace, name, "AwaitingPayment")
    known = KnownCheckouts()

    def phase(name: str) -> str | None:
        body = known.get(namespace, name)
        return None if body is None else body["status"]["phase"]

    def view() -> str:
        return f"{ {n: phase(n) for n in ('changed', 'deleted', 'kept', 'added')} }"

    async with watch_gap(api, checkouts_path(namespace)) as apiserver:
        client = apiserver.client()
        feed = asyncio.create_task(follow(client, namespace, known))
        try:
            await eventually(lambda: known.synced and len(known) == 3, failure=view)
            await eventually(lambda: bool(apiserver.watches))
            apiserver.gap()
            await set_phase(api, namespace, "changed", "Settled")
            await api.request("DELETE", checkouts_path(namespace, "deleted"))
            await create(api, namespace, "added")
            await apiserver.gone(how)

            after_gap = {"changed": "Settled", "deleted": None, "kept": "AwaitingPayment"}
            await eventually(
                lambda: (
                    all(phase(n) == p for n, p in after_gap.items())
                    and known.get(namespace, "added") is not None
                ),
                within=10,
                failure=view,
            )
            assert known.synced
            assert apiserver.lists >= 2 and (apiserver.refused or how == "error event")

            # Watching again, from the new list: a later change arrives without a LIST.
            lists = apiserver.lists
            await set_phase(api, namespace, "added", "AwaitingPayment")
            await eventually(lambda: phase("added") == "AwaitingPayment", within=10, failure=view)
            assert apiserver.lists == lists
        finally:
            feed.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await feed
            await client.close()
