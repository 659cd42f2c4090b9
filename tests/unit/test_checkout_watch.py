"""How waiting POSTs use the shared Checkout watch (no apiserver: the watch's events
are handed in as the watch would)."""

from __future__ import annotations

import asyncio
from typing import Any

from checkout_api.app import READY
from checkout_api.watch import CheckoutWatch
from saga_kit.apiserver import ApiClient, Connection

Body = dict[str, Any]


def body(phase: str | None = None, name: str = "co-1") -> Body:
    return {"metadata": {"name": name}, "status": {"phase": phase} if phase else {}}


class Reads:
    """A stand-in for Checkouts.get that answers from a script and counts its calls."""

    def __init__(self, *answers: Body | None) -> None:
        self.answers = list(answers)
        self.calls = 0

    async def __call__(self, name: str) -> Body | None:
        self.calls += 1
        return self.answers.pop(0) if len(self.answers) > 1 else self.answers[0]


def a_watch(connected: bool) -> CheckoutWatch:
    watch = CheckoutWatch(ApiClient(Connection("http://127.0.0.1:9", None)), "shop", READY)
    watch.connected = connected
    return watch


async def test_a_ready_event_wakes_the_waiter_without_a_read() -> None:
    watch, reads = a_watch(connected=True), Reads(body("Pending"))
    async with watch.waiter("co-1") as ready:
        waiting = asyncio.create_task(watch.wait(ready, body(), 5, reads))
        await asyncio.sleep(0.01)
        watch.deliver("MODIFIED", body("Authorized"))  # not ready yet: keeps waiting
        await asyncio.sleep(0.01)
        assert not waiting.done()
        watch.deliver("MODIFIED", body("AwaitingPayment", name="co-2"))  # someone else's
        watch.deliver("MODIFIED", body("AwaitingPayment"))
        got = await waiting
    assert got["status"]["phase"] == "AwaitingPayment" and reads.calls == 0
    assert not watch._waiters


async def test_a_deletion_ends_the_wait_with_the_last_body_seen() -> None:
    watch = a_watch(connected=True)
    async with watch.waiter("co-1") as ready:
        waiting = asyncio.create_task(watch.wait(ready, body("Pending"), 5, Reads(None)))
        await asyncio.sleep(0.01)
        watch.deliver("DELETED", body("Pending"))
        assert (await waiting)["status"]["phase"] == "Pending"


async def test_without_a_watch_the_waiter_reads_until_ready() -> None:
    watch = a_watch(connected=False)
    reads = Reads(body("Pending"), body("Reserved"), body("Rejected"))
    async with watch.waiter("co-1") as ready:
        got = await watch.wait(ready, body(), 5, reads)
    assert got["status"]["phase"] == "Rejected" and reads.calls == 3


async def test_a_wait_that_runs_out_looks_once_at_the_end() -> None:
    watch, reads = a_watch(connected=True), Reads(body("Reserved"))
    async with watch.waiter("co-1") as ready:
        got = await watch.wait(ready, body("Pending"), 0.05, reads)
    assert got["status"]["phase"] == "Reserved" and reads.calls == 1
