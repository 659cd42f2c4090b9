"""The checkout API's shared watch after the apiserver says 410 Gone: it lists again and
goes on, and a waiter whose Checkout became ready in the gap is still woken.

The apiserver is real; only the 410 is played by a proxy in front of it
(tests.helpers.watch_gap), since the real one answers 410 only once etcd has compacted
the version, which a test cannot bring about on demand.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest

from checkout_api.app import READY
from checkout_api.watch import CheckoutWatch
from saga_kit.apiserver import MERGE_PATCH, ApiClient, load_config
from saga_kit.checkout_resource import API_VERSION, KIND
from saga_kit.checkout_store import CheckoutStatusStore, checkouts_path
from tests.conftest import Platform
from tests.helpers.waiting import budget, eventually
from tests.helpers.watch_gap import How, watch_gap

Body = dict[str, Any]


@pytest.fixture
async def api(platform: Platform) -> AsyncIterator[ApiClient]:
    client = ApiClient(load_config(platform.kubeconfig))
    yield client
    await client.close()


async def create(api: ApiClient, namespace: str, name: str) -> Body:
    spec = {"userId": "42", "items": [{"productId": "p-1", "unitPrice": 10000, "quantity": 1}]}
    body = {"apiVersion": API_VERSION, "kind": KIND, "metadata": {"name": name}, "spec": spec}
    return await api.request("POST", checkouts_path(namespace), body=body)


async def set_phase(api: ApiClient, namespace: str, name: str, phase: str) -> Body:
    return await api.request(
        "PATCH",
        checkouts_path(namespace, name, status=True),
        body={"status": {"phase": phase}},
        content_type=MERGE_PATCH,
    )


class Reads:
    """Checkouts.get as the API's wait uses it, counting the reads per name."""

    def __init__(self, api: ApiClient, namespace: str) -> None:
        self._store = CheckoutStatusStore(api, "test")
        self._namespace = namespace
        self.of: dict[str, int] = {}

    async def __call__(self, name: str) -> Body | None:
        self.of[name] = self.of.get(name, 0) + 1
        return await self._store.get(self._namespace, name)


@pytest.mark.parametrize("how", ["error event", "http 410"])
async def test_a_waiter_whose_checkout_became_ready_in_the_gap_is_woken(
    api: ApiClient, namespace: str, how: How
) -> None:
    async with watch_gap(api, checkouts_path(namespace)) as apiserver:
        client = apiserver.client()
        watch = CheckoutWatch(client, namespace, READY)
        stop = asyncio.Event()
        running = asyncio.create_task(watch.run(stop))
        reads = Reads(api, namespace)
        try:
            await eventually(lambda: watch.connected and bool(apiserver.watches))
            gap = await create(api, namespace, "co-gap")
            async with watch.waiter("co-gap") as ready:
                waiting = asyncio.create_task(watch.wait(ready, gap, 600, reads))
                apiserver.gap()
                await set_phase(api, namespace, "co-gap", "AwaitingPayment")
                await apiserver.gone(how)
                # Long before the wait's own end (600 s), which would read it anyway.
                done, _ = await asyncio.wait({waiting}, timeout=budget(10))
                assert waiting in done, "the waiter missed its event in the gap and was not woken"
                assert waiting.result()["status"]["phase"] == "AwaitingPayment"
            assert apiserver.refused or how == "error event"

            # Listed again, and watching from the new list's version: a later change wakes
            # its waiter through the watch alone, without a read.
            await eventually(lambda: watch.connected and apiserver.lists >= 2)
            after = await create(api, namespace, "co-after")
            async with watch.waiter("co-after") as ready:
                waiting = asyncio.create_task(watch.wait(ready, after, 600, reads))
                await set_phase(api, namespace, "co-after", "AwaitingPayment")
                got = await asyncio.wait_for(waiting, budget(10))
            assert got["status"]["phase"] == "AwaitingPayment"
            assert reads.of.get("co-after", 0) == 0, "woken by reads: the watch is not back"
            assert not running.done()
        finally:
            stop.set()
            await asyncio.wait_for(running, budget(10))
            await client.close()
