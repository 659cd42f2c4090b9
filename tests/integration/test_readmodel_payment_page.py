"""The journal on real Postgres: the payment page (compare-and-set, every Snap order listed)
and the cost of its upkeep (deletion marks, the returns gauge)."""

from __future__ import annotations

import asyncio
import datetime as dt
from collections.abc import AsyncIterator

import pytest

from checkout_operator.app import open_database
from checkout_operator.readmodel import ReadModel
from checkout_operator.returns_store import PaymentReturnsStore
from checkout_operator.saga import Line
from tests.conftest import Platform

LATER = dt.datetime(2030, 1, 1, tzinfo=dt.UTC)


@pytest.fixture
async def readmodel(platform: Platform, db_schema: str) -> AsyncIterator[ReadModel]:
    pool = await open_database(platform.postgres_dsn, db_schema)
    yield ReadModel(pool)
    await pool.close()


async def registered(readmodel: ReadModel, order_id: str) -> None:
    record = await readmodel.register(
        order_id, "shop", order_id, f"uid-{order_id}", "u1", "IDR", [Line("p1", 1_000, 1)]
    )
    assert record is not None


async def make_page(readmodel: ReadModel, order_id: str, gate: asyncio.Barrier) -> tuple[str, str]:
    """What one writer (one operator) does: journal an attempt, 'call Snap', record."""
    journaled = await readmodel.next_payment_attempt(order_id)
    assert journaled is not None
    attempt, midtrans_order = journaled
    await readmodel.journal_snap_order(order_id, midtrans_order, attempt, LATER)
    await gate.wait()  # both have their own Snap order before either records it
    page = await readmodel.record_payment_page(
        order_id, midtrans_order, f"token-{midtrans_order}", f"https://snap/{midtrans_order}"
    )
    return page.snap_token, page.midtrans_order_id


async def test_of_two_concurrent_recordings_one_wins_and_both_return_its_page(
    readmodel: ReadModel,
) -> None:
    for n in range(10):  # different interleavings
        order_id = f"order-{n}"
        await registered(readmodel, order_id)
        gate = asyncio.Barrier(2)
        a, b = await asyncio.gather(
            make_page(readmodel, order_id, gate), make_page(readmodel, order_id, gate)
        )
        assert a == b
        record = await readmodel.get(order_id)
        assert record is not None
        assert (record.snap_token, record.midtrans_order_id) == a
        pages = await readmodel.payment_pages(order_id)
        assert {p.midtrans_order_id for p in pages} == {order_id, f"{order_id}~2"}
        assert [p.midtrans_order_id for p in pages if p.shown] == [a[1]]
        assert all(p.snap_token for p in pages)  # the loser's page is listed too


async def test_no_new_attempt_once_a_page_is_recorded(readmodel: ReadModel) -> None:
    await registered(readmodel, "order-x")
    assert await readmodel.next_payment_attempt("order-x") == (1, "order-x")
    await readmodel.journal_snap_order("order-x", "order-x", 1, LATER)
    await readmodel.record_payment_page("order-x", "order-x", "tok", "https://snap/tok")
    # A late second writer neither re-points the journal nor gets an attempt of its own.
    assert await readmodel.next_payment_attempt("order-x") is None
    record = await readmodel.get("order-x")
    assert record is not None
    assert (record.midtrans_order_id, record.snap_token, record.payment_attempt) == (
        "order-x",
        "tok",
        1,
    )
    page = await readmodel.payment_page("order-x")
    assert page is not None and page.snap_token == "tok"
    # Nor does a writer asking again for an attempt it read before the page was recorded:
    # it is told so, and the page's listed Snap expiry stays as recorded.
    later = LATER + dt.timedelta(minutes=3)
    assert await readmodel.journal_snap_order("order-x", "order-x", 1, later) is False
    (listed,) = await readmodel.payment_pages("order-x")
    assert listed.snap_expires_at == LATER


async def test_an_order_asked_for_again_is_listed_once_with_its_later_expiry(
    readmodel: ReadModel,
) -> None:
    await registered(readmodel, "order-z")
    assert await readmodel.next_payment_attempt("order-z", LATER) == (1, "order-z")
    later = LATER + dt.timedelta(minutes=3)
    assert await readmodel.journal_snap_order("order-z", "order-z", 1, later)
    assert await readmodel.journal_snap_order("order-z", "order-z", 1, LATER)  # never earlier
    (page,) = await readmodel.payment_pages("order-z")
    assert (page.midtrans_order_id, page.attempt, page.snap_expires_at) == ("order-z", 1, later)


async def test_a_lost_answer_stays_listed_without_a_token(readmodel: ReadModel) -> None:
    await registered(readmodel, "order-y")
    for attempt in (1, 2):
        journaled = await readmodel.next_payment_attempt("order-y")
        assert journaled is not None and journaled[0] == attempt
        await readmodel.journal_snap_order("order-y", journaled[1], attempt, LATER)
    await readmodel.record_payment_page("order-y", "order-y~2", "tok2", "https://snap/tok2")
    pages = await readmodel.payment_pages("order-y")
    assert [(p.midtrans_order_id, p.snap_token, p.shown) for p in pages] == [
        ("order-y", None, False),
        ("order-y~2", "tok2", True),
    ]
    assert all(p.snap_expires_at == LATER for p in pages)


async def test_an_attempt_with_an_expiry_is_listed_with_or_without_a_cap(
    readmodel: ReadModel,
) -> None:
    """Every Snap order is listed before Midtrans is asked; leaving out the cap must not
    leave it out (it did: a default cap of 0 listed nothing)."""
    await registered(readmodel, "order-uncapped")
    assert await readmodel.next_payment_attempt("order-uncapped", LATER) == (1, "order-uncapped")
    await registered(readmodel, "order-capped")
    assert await readmodel.next_payment_attempt("order-capped", LATER, 0) == (1, "order-capped")
    listed = [p.midtrans_order_id for p in await readmodel.payment_pages("order-uncapped")]
    assert listed == ["order-uncapped"]
    assert await readmodel.payment_pages("order-capped") == []  # past a cap of 0


async def test_a_second_deletion_mark_writes_no_row_version(readmodel: ReadModel) -> None:
    """The TTL delete marks the row, then its DELETED event marks it again: the second
    must leave the row alone (no new version, no WAL, no commit flush)."""
    await registered(readmodel, "gone")
    await readmodel.mark_deleted("gone")
    first = await readmodel.get("gone")
    assert first is not None and first.deleted_at is not None
    version = await readmodel.pool.fetchval("SELECT xmin FROM checkouts WHERE order_id = 'gone'")
    await readmodel.mark_deleted("gone")
    again = await readmodel.get("gone")
    assert again is not None and again.deleted_at == first.deleted_at
    assert (
        await readmodel.pool.fetchval("SELECT xmin FROM checkouts WHERE order_id = 'gone'")
        == version
    )


async def test_counting_refused_returns_reads_only_the_refused(readmodel: ReadModel) -> None:
    """The returns' gauge is counted after every batch: it must not scan every row kept."""
    await registered(readmodel, "many")
    await readmodel.pool.execute(
        "INSERT INTO payment_returns (midtrans_order_id, order_id, state, watch_until)"
        " SELECT 'many~' || n, 'many', 'closed', now() FROM generate_series(1, 5000) AS n"
    )
    await readmodel.pool.execute(
        "UPDATE payment_returns SET state = 'refused' WHERE midtrans_order_id = 'many~7'"
    )
    await readmodel.pool.execute("ANALYZE payment_returns")
    assert await PaymentReturnsStore(readmodel.pool).count_refused() == 1
    plan = "\n".join(
        r[0]
        for r in await readmodel.pool.fetch(
            "EXPLAIN SELECT count(*) FROM payment_returns WHERE state = 'refused'"
        )
    )
    assert "payment_returns_refused" in plan and "Seq Scan" not in plan, plan
