"""The listener's view of the Checkouts from its watch: a hint that saves reads, never
a reason for a wrong write."""

from __future__ import annotations

from typing import Any

import pytest

from payment_listener.known_checkouts import CachedCheckouts, KnownCheckouts
from saga_kit.checkout_store import Conflict

Body = dict[str, Any]


def checkout(name: str, phase: str, rv: str = "1", ns: str = "shop") -> Body:
    return {
        "apiVersion": "checkout.saga.dev/v1",
        "kind": "Checkout",
        "metadata": {
            "name": name,
            "namespace": ns,
            "uid": f"uid-{name}",
            "resourceVersion": rv,
            "generation": 1,
            "managedFields": [{"manager": "x", "fieldsV1": {"f:spec": {}}}],
        },
        "spec": {"currency": "IDR", "items": [{"productId": "p", "quantity": 1}]},
        "status": {"phase": phase, "amounts": {"total": 1000}, "history": []},
    }


class FakeApiserver:
    """Answers like the apiserver would and counts what was asked of it."""

    def __init__(self, *bodies: Body) -> None:
        self.bodies = {(b["metadata"]["namespace"], b["metadata"]["name"]): b for b in bodies}
        self.gets = 0
        self.finds = 0

    async def get(self, namespace: str, name: str) -> Body | None:
        self.gets += 1
        return self.bodies.get((namespace, name))

    async def find(self, name: str) -> list[Body]:
        self.finds += 1
        return [b for (_, n), b in self.bodies.items() if n == name]

    async def patch_status(self, body: Body, status: Body) -> Body:
        meta = body["metadata"]
        current = self.bodies[(meta["namespace"], meta["name"])]
        if current["metadata"]["resourceVersion"] != meta["resourceVersion"]:
            raise Conflict("changed")
        rv = str(int(current["metadata"]["resourceVersion"]) + 1)
        updated = {
            **current,
            "metadata": {**current["metadata"], "resourceVersion": rv},
            "status": {**current["status"], **status},
        }
        self.bodies[(meta["namespace"], meta["name"])] = updated
        return updated


def one_awaiting() -> tuple[FakeApiserver, CachedCheckouts]:
    """Checkout "a" awaiting payment, listed by the watch and at the apiserver."""
    known = KnownCheckouts()
    known.replace([checkout("a", "AwaitingPayment")])
    apiserver = FakeApiserver(checkout("a", "AwaitingPayment"))
    return apiserver, CachedCheckouts(known, apiserver)


async def test_a_checkout_the_watch_showed_is_read_from_the_view() -> None:
    apiserver, cached = one_awaiting()

    body = await cached.get("shop", "a")

    assert body is not None and body["status"]["phase"] == "AwaitingPayment"
    assert body["metadata"]["resourceVersion"] == "1" and body["metadata"]["generation"] == 1
    assert body["spec"] == {"currency": "IDR"}  # nothing the settlement does not read
    assert "managedFields" not in body["metadata"]
    assert [await cached.find("a")] == [[body]]
    assert (apiserver.gets, apiserver.finds, cached.reads) == (0, 0, 0)


async def test_before_the_first_list_and_for_an_unseen_checkout_the_apiserver_answers() -> None:
    known = KnownCheckouts()
    apiserver = FakeApiserver(checkout("a", "AwaitingPayment"), checkout("b", "AwaitingPayment"))
    cached = CachedCheckouts(known, apiserver)
    known.seen("ADDED", checkout("a", "AwaitingPayment"))  # a watch event, no list yet

    assert await cached.get("shop", "a") is not None
    assert apiserver.gets == 1  # not synced: the view is not trusted yet
    known.replace([checkout("a", "AwaitingPayment")])
    assert await cached.get("shop", "b") is not None
    assert (await cached.find("b"))[0]["metadata"]["name"] == "b"
    assert (apiserver.gets, apiserver.finds, cached.reads) == (2, 1, 3)


async def test_an_old_entry_makes_the_write_fail_and_is_then_read_again() -> None:
    known = KnownCheckouts()
    known.replace([checkout("a", "AwaitingPayment", rv="1")])
    # Cancelled meanwhile; the watch has not shown it yet.
    apiserver = FakeApiserver(checkout("a", "Cancelled", rv="2"))
    cached = CachedCheckouts(known, apiserver)

    stale = await cached.get("shop", "a")
    assert stale is not None and stale["status"]["phase"] == "AwaitingPayment"
    with pytest.raises(Conflict):
        await cached.patch_status(stale, {"phase": "Settled"})
    fresh = await cached.get("shop", "a")
    assert fresh is not None and fresh["status"]["phase"] == "Cancelled"
    assert apiserver.gets == 1
    assert apiserver.bodies[("shop", "a")]["status"]["phase"] == "Cancelled"


async def test_a_write_updates_the_view_and_an_ended_checkout_keeps_only_its_phase() -> None:
    apiserver, cached = one_awaiting()

    body = await cached.get("shop", "a")
    assert body is not None
    await cached.patch_status(body, {"phase": "Settled"})

    again = await cached.get("shop", "a")
    assert again == {
        "metadata": {
            "name": "a",
            "namespace": "shop",
            "uid": "uid-a",
            "resourceVersion": "2",
            "generation": 1,
        },
        "status": {"phase": "Settled"},
    }
    assert apiserver.gets == 0


async def test_deleted_lost_and_relisted() -> None:
    known = KnownCheckouts()
    known.replace([checkout("a", "AwaitingPayment"), checkout("b", "Settled")])
    known.seen("DELETED", checkout("a", "AwaitingPayment"))
    assert known.get("shop", "a") is None and len(known) == 1
    known.seen("BOOKMARK", {"metadata": {"resourceVersion": "9"}})
    assert len(known) == 1
    known.lost()
    assert not known.synced and len(known) == 0
    known.replace([checkout("c", "AwaitingPayment", ns="other")])
    assert known.synced and known.named("c")[0]["metadata"]["namespace"] == "other"
