"""What the periodic sweep reads (issue 12, session 7): a namespace holds an hour of ended
Checkouts waiting for their TTL delete, and the sweep used to read every one of their
journal rows and list every one of them each minute. It compares only the rows that may
still hold something: open ones, read one by one while few, and ended ones once their
TTL delete is overdue (their stock and money were settled by their ending; only the
archive's ``deleted_at`` waits for it).

Real apiserver, Postgres, NATS, User and Product services; the kopf watch is stopped to
make the watch gap the sweep exists for.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest

from checkout_operator import reconciler as reconciler_module
from checkout_operator.readmodel import Record
from tests.helpers.waiting import eventually
from tests.integration.saga_fixtures import Operator, SagaEnv
from tests.integration.test_nothing_lost import journal, journal_reaches
from tests.integration.test_saga_operator import product, wait_stock

TTL = dt.timedelta(hours=1)


def counted_lists(operator: Operator) -> list[str]:
    """Records each metadata LIST the operator's apiserver client makes."""
    kube = operator.deps.kube
    lists: list[str] = []
    uids = kube.uids

    async def counting(namespace: str) -> dict[tuple[str, str], str]:
        lists.append(namespace)
        return await uids(namespace)

    kube.uids = counting  # type: ignore[method-assign]
    return lists


async def one_live_one_ended(saga: SagaEnv) -> tuple[Operator, str, str, str]:
    """An operator (TTL delete after an hour), a product of 4 units, a checkout awaiting
    payment and one cancelled (journaled as ended), both holding one unit until then."""
    operator = await saga.start_operator(ttl_after_finished=TTL)
    p = await product(saga, stock=4)
    live = await saga.create(items=[(p, 10_000, 1)], paymentTTLSeconds=600)
    ended = await saga.create(items=[(p, 10_000, 1)], paymentTTLSeconds=600)
    await saga.wait_phase(live, "AwaitingPayment")
    await saga.wait_phase(ended, "AwaitingPayment")
    saga.platform.kubectl(
        "patch",
        "checkout",
        ended,
        "--type=merge",
        "-p",
        '{"spec": {"cancelRequested": true}}',
        namespace=saga.namespace,
    )
    await saga.wait_phase(ended, "Cancelled")
    await journal_reaches(saga, ended, lambda r: r.finished_at is not None)
    await wait_stock(saga, p, (4, 1))  # the cancelled one's unit is back
    return operator, p, live, ended


async def deleted_at(saga: SagaEnv, name: str) -> dt.datetime | None:
    async with journal(saga) as readmodel:
        record: Record | None = await readmodel.get(name)
    assert record is not None
    return record.deleted_at


async def test_the_first_sweep_after_a_watch_gap_archives_ended_ones_deleted_in_it(
    saga: SagaEnv,
) -> None:
    """An ended checkout deleted while nobody watched (a gap, an operator restarting) is
    archived by the comparison after the listing, not once its TTL delete is overdue (an
    hour later: the audit reported its row as "resource: gone" all that time)."""
    operator, p, live, ended = await one_live_one_ended(saga)
    await operator.watcher.stop()  # a watch gap: neither deletion is seen
    saga.platform.kubectl("delete", "checkout", live, ended, namespace=saga.namespace)
    lists = counted_lists(operator)
    assert await operator.reconciler.sweep(saga.namespace, dt.timedelta(0)) == 2
    await wait_stock(saga, p, (4, 0))
    assert await deleted_at(saga, live) is not None
    assert await deleted_at(saga, ended) is not None
    assert lists == []  # two rows: a GET each, not a LIST of the namespace


async def test_sweep_reads_open_rows_one_by_one_and_ended_ones_once_their_ttl_is_overdue(
    saga: SagaEnv,
) -> None:
    operator, p, live, ended = await one_live_one_ended(saga)
    await operator.watcher.stop()  # no watch: deletions from now on are unseen
    # The comparison after the watch stopped: both exist. Later sweeps read open rows.
    assert await operator.reconciler.sweep(saga.namespace, dt.timedelta(0)) == 0
    saga.platform.kubectl("delete", "checkout", live, ended, namespace=saga.namespace)
    lists = counted_lists(operator)

    released = await operator.reconciler.sweep(saga.namespace, dt.timedelta(0))
    assert released == 1  # the live one: its unit comes back
    await wait_stock(saga, p, (4, 0))
    assert await deleted_at(saga, live) is not None
    assert await deleted_at(saga, ended) is None  # ended within its TTL: not read yet
    assert lists == []  # one row: a GET, not a LIST of the namespace

    now = dt.datetime.now(dt.UTC)
    operator.deps.clock = lambda: (
        now + TTL + reconciler_module.SWEEP_TTL_GRACE + dt.timedelta(minutes=1)
    )
    released = await operator.reconciler.sweep(saga.namespace, dt.timedelta(0))
    assert released == 1  # the ended one, now that its TTL delete is overdue: archived
    assert await deleted_at(saga, ended) is not None
    async with journal(saga) as readmodel:
        record = await readmodel.get(ended)
        assert record is not None and record.phase == "Cancelled"  # as it ended
    await wait_stock(saga, p, (4, 0))


async def test_many_open_rows_are_compared_with_one_list(
    saga: SagaEnv, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(reconciler_module, "SWEEP_GETS_UP_TO", 0)
    operator, p, live, _ = await one_live_one_ended(saga)
    await operator.watcher.stop()
    saga.platform.kubectl("delete", "checkout", live, namespace=saga.namespace)
    lists = counted_lists(operator)
    released = await operator.reconciler.sweep(saga.namespace, dt.timedelta(0))
    assert released == 1
    assert lists == [saga.namespace]
    await wait_stock(saga, p, (4, 0))


async def test_a_checkout_that_is_still_there_is_not_released(saga: SagaEnv) -> None:
    operator, p, live, ended = await one_live_one_ended(saga)
    key = (saga.namespace, live)
    await operator.watcher.stop()
    operator.reconciler.cache.pop(key)  # and the gap lost it from the cache
    released = await operator.reconciler.sweep(saga.namespace, dt.timedelta(0))
    assert released == 0
    body: dict[str, Any] = operator.reconciler.cache[key]  # read again, looked at again
    assert body["status"]["phase"] == "AwaitingPayment" and body["spec"]["items"]

    async def awaiting_again() -> bool:
        return key in operator.reconciler.awaiting

    await eventually(awaiting_again, within=5, interval=0.05)
    await wait_stock(saga, p, (4, 1))
    assert await deleted_at(saga, live) is None and await deleted_at(saga, ended) is None


async def test_while_the_watch_runs_unbroken_the_sweep_reads_nothing(
    saga: SagaEnv, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every row is compared once after the watch's listing; after that the watch's
    DELETED events are the truth (issue 12, session 11: the sweep listed the namespace
    every minute once open rows passed a 25th of its Checkouts)."""
    monkeypatch.setattr(reconciler_module, "SWEEP_GETS_UP_TO", 0)  # a comparison: a LIST
    operator, p, live, _ = await one_live_one_ended(saga)
    lists = counted_lists(operator)
    gets: list[str] = []
    get = operator.deps.kube.get

    async def counted_get(namespace: str, name: str) -> dict[str, Any] | None:
        gets.append(name)
        return await get(namespace, name)

    operator.deps.kube.get = counted_get  # type: ignore[method-assign]
    await operator.reconciler.sweep(saga.namespace, dt.timedelta(0))  # after the listing
    lists.clear()
    assert await operator.reconciler.sweep(saga.namespace, dt.timedelta(0)) == 0
    # Deleted while watched: its DELETED event releases it, not the sweep.
    saga.platform.kubectl("delete", "checkout", live, namespace=saga.namespace)
    await wait_stock(saga, p, (4, 0))
    assert await operator.reconciler.sweep(saga.namespace, dt.timedelta(0)) == 0
    assert lists == [] and gets == []
    # (A stopped watch or a re-list makes the next sweep compare every row again: the
    # watch-gap tests above, and tests/unit/test_sweep_reads_choice.py.)
