"""What a restarted operator reads of the journal (issue 12, session 8).

A namespace holds an hour of ended Checkouts waiting for their TTL delete, and a
restarted operator looks at every one of them: it used to read each one's journal row
(15,000 queries for 15,000 ended). The journal's endings are read once at start; an
ended checkout whose ending is journaled and announced costs no query, and one that is
not still gets it done.

Real apiserver, Postgres, NATS, User and Product services.
"""

from __future__ import annotations

import datetime as dt
import itertools
from typing import Any

import pytest

from checkout_operator import actions
from checkout_operator.readmodel import Record
from checkout_operator.saga import Phase
from tests.helpers.waiting import eventually
from tests.integration.saga_fixtures import Operator, SagaEnv
from tests.integration.test_nothing_lost import journal, journal_reaches
from tests.integration.test_saga_operator import product


async def cancelled(saga: SagaEnv, p: str) -> str:
    """A checkout cancelled by its buyer, its ending journaled and announced."""
    name = await saga.create(items=[(p, 10_000, 1)], paymentTTLSeconds=600)
    await saga.wait_phase(name, "AwaitingPayment")
    cancel = ("--type=merge", "-p", '{"spec": {"cancelRequested": true}}')
    saga.platform.kubectl("patch", "checkout", name, *cancel, namespace=saga.namespace)
    await saga.wait_phase(name, "Cancelled")
    await journal_reaches(saga, name, lambda r: r.final_event_published)
    return name


def journal_reads(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The checkouts whose journal row the saga's steps read one by one from now on
    (other loops, e.g. the payment returns' watch of a cancelled one, are not counted)."""
    reads: list[str] = []
    own_record = actions._own_record

    async def counting(deps: actions.Deps, body: dict[str, Any]) -> Record | None:
        reads.append(body["metadata"]["name"])
        return await own_record(deps, body)

    monkeypatch.setattr(actions, "_own_record", counting)
    return reads


async def looked_at(operator: Operator, name: str) -> None:
    """Once the operator has looked at the ended checkout: it waits for its TTL delete."""
    key = (operator.deps.settings.namespace, name)
    await eventually(lambda: operator.reconciler.waits(key), within=30, interval=0.05)


async def test_a_restart_reads_no_journal_row_of_an_ending_done(
    saga: SagaEnv, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Red before: the done one's row was read (``ensure_final_event``'s own query)."""
    operator = await saga.start_operator(ttl_after_finished=dt.timedelta(hours=1))
    p = await product(saga, stock=4)
    done, unannounced = await cancelled(saga, p), await cancelled(saga, p)
    await operator.shutdown()
    async with journal(saga) as readmodel:  # a crash between the ending and its event
        await readmodel.pool.execute(
            "UPDATE checkouts SET final_event_published = false,"
            " final_event_check_at = now() + interval '1 hour', reservation_closed_at = NULL"
            " WHERE order_id = $1",
            unannounced,
        )
    reads = journal_reads(monkeypatch)
    # The relay (final_events.py) waits an hour: only the restart's look announces it.
    restarted = await saga.start_operator(
        ttl_after_finished=dt.timedelta(hours=1), final_event_grace=dt.timedelta(hours=1)
    )
    await journal_reaches(saga, unannounced, lambda r: r.final_event_published)
    await looked_at(restarted, done)
    assert unannounced in reads
    assert done not in reads


@pytest.mark.parametrize("phase", [Phase.SETTLED, Phase.CANCELLED])
async def test_the_start_read_agrees_with_each_row(saga: SagaEnv, phase: Phase) -> None:
    """``read_endings`` answers as the row itself does (``Record.ending_done``), for every
    combination of what the journal may hold of an ending."""
    operator = await saga.start_operator()
    name = await cancelled(saga, await product(saga, stock=2))
    await operator.shutdown()
    async with journal(saga) as readmodel:
        for reserved, published, paid in itertools.product([False, True], repeat=3):
            await readmodel.pool.execute(
                "UPDATE checkouts SET reserve_attempted = $2, final_event_published = $3,"
                " paid_order_id = CASE WHEN $4 THEN order_id END WHERE order_id = $1",
                name,
                reserved,
                published,
                paid,
            )
            record = await readmodel.get(name)
            assert record is not None
            await readmodel.read_endings(saga.namespace)
            known = readmodel.ending_known_done(record.uid, phase)
            assert known == record.ending_done(phase), (reserved, published, paid)
            assert not readmodel.ending_known_done(record.uid, phase)  # asked once
