"""The final-event relay asks the Product service once per batch of endings."""

from __future__ import annotations

import datetime as dt
from typing import Any

import grpc
import pytest

from checkout_operator.final_events import FinalEvents
from checkout_operator.readmodel import Record
from tests.helpers.journal_records import record


class Journal:
    def __init__(self, due: list[Record]) -> None:
        self.due = due
        self.closed: list[list[str]] = []
        self.rechecked: list[tuple[str, bool]] = []
        self.marked: list[str] = []

    async def final_events_due(self, grace: dt.timedelta, limit: int) -> list[Record]:
        return self.due

    async def reservations_closed(self, order_ids: list[str]) -> None:
        self.closed.append(list(order_ids))

    async def final_event_recheck(
        self, order_id: str, delay: dt.timedelta, *, republished: bool = False
    ) -> None:
        self.rechecked.append((order_id, republished))

    async def mark(self, order_id: str, **flags: Any) -> None:
        self.marked.append(order_id)


class Products:
    def __init__(self, held: set[str], error: grpc.aio.AioRpcError | None = None) -> None:
        self.held = held
        self.error = error
        self.asked: list[list[str]] = []

    async def open_reservations(self, order_ids: list[str]) -> set[str]:
        self.asked.append(list(order_ids))
        if self.error is not None:
            raise self.error
        return self.held & set(order_ids)


class Announcer:
    def __init__(self) -> None:
        self.published: list[tuple[str, str, int]] = []

    async def publish(self, order_id: str, event: str, redo: int = 0) -> None:
        self.published.append((order_id, event, redo))


class Deps:
    def __init__(self, journal: Journal, products: Products) -> None:
        self.readmodel = journal
        self.products = products
        self.announcer = Announcer()


def batch() -> list[Record]:
    return [
        record("never", reserve_attempted=False),
        record("closed-1"),
        record("open", phase="Expired"),
        record("unannounced", final_event_published=False),
        record("hand-settled", phase="Settled", paid_order_id=None),
        record("closed-2", phase="Settled", paid_order_id="closed-2", paid_amount=10_000),
    ]


async def test_one_call_for_the_batch_closes_the_closed_and_republishes_the_open() -> None:
    journal, products = Journal(batch()), Products(held={"open"})
    deps = Deps(journal, products)
    assert await FinalEvents(deps).check_due() == 6  # type: ignore[arg-type]
    assert products.asked == [["closed-1", "open", "closed-2"]]
    assert journal.closed == [["never", "closed-1", "closed-2"]]
    assert deps.announcer.published == [("unannounced", "cancelled", 0), ("open", "expired", 1)]
    assert journal.marked == ["unannounced"]
    assert sorted(journal.rechecked) == [
        ("hand-settled", False),
        ("open", True),
        ("unannounced", False),
    ]


@pytest.mark.parametrize("code", [grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.UNIMPLEMENTED])
async def test_the_product_service_unknown_leaves_every_announced_one_for_later(
    code: grpc.StatusCode,
) -> None:
    error = grpc.aio.AioRpcError(code, grpc.aio.Metadata(), grpc.aio.Metadata(), "away")
    journal, products = Journal(batch()), Products(held={"open"}, error=error)
    await FinalEvents(Deps(journal, products)).check_due()  # type: ignore[arg-type]
    assert journal.closed == [["never"]]  # only what never held stock
    assert {order for order, _ in journal.rechecked} >= {"closed-1", "open", "closed-2"}
