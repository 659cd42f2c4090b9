"""The reconciler's index of cached checkouts awaiting payment on a page (what the poller
asks Midtrans about) follows the cache: the poller reads it instead of every cached
checkout, most of which are ended ones waiting for their TTL delete (issue 12, session 7)."""

from __future__ import annotations

import asyncio
from typing import Any

from checkout_operator.readmodel import ReadModel
from checkout_operator.reconciler import Reconciler


class Journal(ReadModel):
    """The read model's memory; a journal that holds nothing (a deletion releases nothing)."""

    async def get(self, order_id: str) -> None:
        return None


class Deps:
    readmodel = Journal(None)


def checkout(name: str, version: int, phase: str, snap: str | None = "t") -> dict[str, Any]:
    payment = {"snapToken": snap} if snap else {}
    return {
        "metadata": {
            "namespace": "ns",
            "name": name,
            "uid": f"uid-{name}",
            "resourceVersion": str(version),
        },
        "spec": {"items": [{"productId": "p", "unitPrice": 1, "quantity": 1}]},
        "status": {"phase": phase, "payment": payment},
    }


async def test_the_index_holds_exactly_the_cached_checkouts_awaiting_payment_on_a_page() -> None:
    reconciler = Reconciler(Deps())  # type: ignore[arg-type]
    reconciler.enqueue = lambda key, delay=0.0: None  # type: ignore[method-assign]
    reconciler.observe("ADDED", checkout("a", 1, "Pending", snap=None))
    reconciler.observe("ADDED", checkout("b", 1, "AwaitingPayment"))
    reconciler.observe("ADDED", checkout("c", 1, "Settled"))
    assert reconciler.awaiting == {("ns", "b")}

    reconciler.observe("MODIFIED", checkout("a", 2, "AwaitingPayment"))
    assert reconciler.awaiting == {("ns", "a"), ("ns", "b")}
    reconciler.observe("MODIFIED", checkout("a", 1, "Pending", snap=None))  # an older version
    assert reconciler.awaiting == {("ns", "a"), ("ns", "b")}

    reconciler.observe("MODIFIED", checkout("b", 2, "Cancelled"))
    assert reconciler.awaiting == {("ns", "a")}
    reconciler.observe("DELETED", checkout("a", 3, "AwaitingPayment"))
    assert reconciler.awaiting == set()
    async with asyncio.timeout(5):
        await reconciler.idle()
    assert reconciler.awaiting == {
        key
        for key, body in reconciler.cache.items()
        if body["status"]["phase"] == "AwaitingPayment"
    }
