"""A TTL delete's journal work (issue 12, session 11): at any steady rate the operator
TTL-deletes as many checkouts as it finishes, so this is part of each checkout's cost.
It read the journal row three times (the ending's check, the delete gate, the DELETED
event's release) and marked it deleted twice; now the ending's check answers the gate,
and the DELETED event of a checkout it deleted itself needs nothing.

Real apiserver, Postgres, NATS, Redis, User and Product services, Midtrans sandbox.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import traceback

from checkout_operator.readmodel import Record
from tests.helpers.waiting import eventually
from tests.integration.saga_fixtures import SagaEnv
from tests.integration.test_nothing_lost import journal_reaches
from tests.integration.test_saga_operator import product, wait_stock


async def test_a_ttl_delete_reads_the_journal_once_and_archives_it_once(saga: SagaEnv) -> None:
    operator = await saga.start_operator(ttl_after_finished=dt.timedelta(seconds=2))
    journal = operator.deps.readmodel
    late_reads: list[str] = []  # reads by the delete gate or the DELETED event's release
    marks: list[str] = []
    get, mark_deleted = journal.get, journal.mark_deleted

    async def counted_get(order_id: str) -> Record | None:
        callers = {frame.name for frame in traceback.extract_stack()}
        if callers & {"_ending_journaled", "_deleted"}:
            late_reads.append(order_id)
        return await get(order_id)

    async def counted_mark(order_id: str) -> None:
        marks.append(order_id)
        await mark_deleted(order_id)

    journal.get = counted_get  # type: ignore[method-assign]
    journal.mark_deleted = counted_mark  # type: ignore[method-assign]
    p = await product(saga, stock=2)
    name = await saga.create(items=[(p, 10_000, 1)], paymentTTLSeconds=600)
    await saga.wait_phase(name, "AwaitingPayment")
    saga.request_cancel(name)
    await saga.wait_phase(name, "Cancelled")
    await wait_stock(saga, p, (2, 0))  # its unit went back
    record = await journal_reaches(saga, name, lambda r: r.deleted_at is not None)
    assert record.phase == "Cancelled" and record.final_event_published

    async def gone_and_forgotten() -> bool:
        return (
            await saga.kube.get(saga.namespace, name) is None
            and (saga.namespace, name) not in operator.reconciler.cache
        )

    await eventually(gone_and_forgotten, within=30)

    async with asyncio.timeout(10):  # the DELETED event's background step has run
        await operator.reconciler.idle()
    assert marks == [name]
    assert late_reads == []
