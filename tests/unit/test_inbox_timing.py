"""The payment inbox looks at a notification once it is a moment old, each in a wait of
its own, and acknowledges the notifications that follow a sale it announced from memory
(issue 12, session 11: per paid checkout the inbox read the journal ~3.6 times and had
JetStream redeliver a notification about once)."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import time
from dataclasses import dataclass, field

import pytest

from checkout_operator.inbox import FETCH, PaymentInbox
from checkout_operator.readmodel import REMEMBERED_UP_TO, ReadModel, Record


class CountingJournal(ReadModel):
    """The read model's memory, and a journal that holds nothing (and counts reads)."""

    def __init__(self) -> None:
        super().__init__(None)
        self.reads: list[str] = []

    async def get(self, order_id: str) -> Record | None:
        self.reads.append(order_id)
        return None  # unknown order: acknowledged


@dataclass
class Metadata:
    timestamp: dt.datetime
    num_delivered: int = 1


@dataclass
class Message:
    order_id: str
    recorded: dt.datetime
    outcome: list[tuple[str, float]] = field(default_factory=list)

    @property
    def data(self) -> bytes:
        return json.dumps(
            {"order_id": self.order_id, "transaction_status": "settlement", "status_code": "200"}
        ).encode()

    @property
    def metadata(self) -> Metadata:
        return Metadata(self.recorded)

    async def ack(self) -> None:
        self.outcome.append(("ack", time.monotonic()))

    async def nak(self, delay: float = 0.0) -> None:
        self.outcome.append(("nak", time.monotonic()))

    async def term(self) -> None:
        self.outcome.append(("term", time.monotonic()))


class Subscription:
    def __init__(self, messages: list[Message]) -> None:
        self.waiting = list(messages)

    async def fetch(self, batch: int, timeout: float) -> list[Message]:  # noqa: ASYNC109 (nats-py's signature)
        if not self.waiting:
            await asyncio.sleep(timeout)
            raise TimeoutError
        taken, self.waiting = self.waiting[:batch], self.waiting[batch:]
        return taken


class Reconciler:
    def __init__(self, journal: ReadModel) -> None:
        self.deps = type("Deps", (), {"readmodel": journal})()


def inbox_for(journal: ReadModel, messages: list[Message], look_after: float) -> PaymentInbox:
    inbox = PaymentInbox(Reconciler(journal), js=None, topology=None, look_after=look_after)  # type: ignore[arg-type]
    inbox._sub = Subscription(messages)  # type: ignore[assignment]
    return inbox


async def run_until_done(inbox: PaymentInbox, messages: list[Message], within: float) -> None:
    stop = asyncio.Event()
    task = asyncio.create_task(inbox.run(stop))
    try:
        async with asyncio.timeout(within):
            while not all(m.outcome for m in messages):  # noqa: ASYNC110 (plain state)
                await asyncio.sleep(0.01)
    finally:
        stop.set()
        await task


async def test_a_notification_for_an_announced_sale_is_acknowledged_without_a_read() -> None:
    journal = CountingJournal()
    journal.remember_sold("co-1", "co-1~2")  # sold by its second payment page
    now = dt.datetime.now(dt.UTC)
    same, other_page, other_order = (
        Message("co-1~2", now),
        Message("co-1", now),
        Message("co-2", now),
    )
    inbox = inbox_for(journal, [same, other_page, other_order], look_after=0.0)
    for message in (same, other_page, other_order):
        await inbox.process(message)  # type: ignore[arg-type]
    assert [m.outcome[0][0] for m in (same, other_page, other_order)] == ["ack"] * 3
    # Only the sale's own order is known; another page of it may be money to return.
    assert journal.reads == ["co-1", "co-2"]


async def test_notifications_are_looked_at_once_they_are_a_moment_old_each_in_its_own_wait() -> (
    None
):
    look_after = 0.4
    journal = CountingJournal()
    recorded = dt.datetime.now(dt.UTC)
    fresh = [Message(f"co-{n}", recorded) for n in range(100)]
    old = Message("co-old", recorded - dt.timedelta(seconds=30))  # redelivered, say
    began = time.monotonic()
    messages = [old, *fresh]
    await run_until_done(inbox_for(journal, messages, look_after), messages, within=5)
    assert old.outcome[0][1] - began < look_after / 2  # old enough: looked at at once
    done = [m.outcome[0][1] - began for m in fresh]
    assert min(done) >= look_after - 0.05  # none before it was look_after old
    # 100 notifications in ~one wait, not one wait per batch of 32 (4 waits, 1.6 s).
    assert max(done) < 2 * look_after
    assert all(m.outcome[0][0] == "ack" for m in messages)  # unknown orders: acknowledged


async def test_the_sales_remembered_are_the_latest_few_thousand() -> None:
    journal = CountingJournal()
    for n in range(REMEMBERED_UP_TO + 10):
        journal.remember_sold(f"co-{n}", f"co-{n}")
    assert journal.sold_by("co-9") is None and journal.sold_by("co-10") == "co-10"
    assert journal.sold_by(f"co-{REMEMBERED_UP_TO + 9}") == f"co-{REMEMBERED_UP_TO + 9}"


class SlowJournal(CountingJournal):
    """A journal read that takes a while; records how many run at once."""

    def __init__(self) -> None:
        super().__init__()
        self.running = 0
        self.most = 0

    async def get(self, order_id: str) -> Record | None:
        self.running += 1
        self.most = max(self.most, self.running)
        await asyncio.sleep(0.02)
        self.running -= 1
        return await super().get(order_id)


async def test_a_backlog_is_processed_a_batch_at_a_time() -> None:
    """After an outage every notification is old enough at once: the journal's pool
    (shared with the reconciler) sees at most FETCH of them together."""
    journal = SlowJournal()
    recorded = dt.datetime.now(dt.UTC) - dt.timedelta(minutes=5)
    messages = [Message(f"co-{n}", recorded) for n in range(200)]
    await run_until_done(inbox_for(journal, messages, look_after=1.0), messages, within=10)
    assert len(journal.reads) == 200 and journal.most <= FETCH


async def test_an_inbox_that_stops_leading_acts_on_nothing_it_holds() -> None:
    """Lease lost: what is in hand is neither processed nor acknowledged (JetStream
    redelivers it to whoever leads next)."""
    journal = CountingJournal()
    messages = [Message(f"co-{n}", dt.datetime.now(dt.UTC)) for n in range(50)]
    inbox = inbox_for(journal, messages, look_after=3.0)
    task = asyncio.create_task(inbox.run(asyncio.Event()))
    sub: Subscription = inbox._sub  # type: ignore[assignment]
    while sub.waiting:  # noqa: ASYNC110 (plain state)
        await asyncio.sleep(0.01)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    await asyncio.sleep(0)
    assert journal.reads == [] and not any(m.outcome for m in messages)
