"""How the sweep reads what exists: GETs or one LIST, by what each would cost; and, between
listings, only what the watch says is gone."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest

from checkout_operator import reconciler as module
from checkout_operator.readmodel import ReadModel, Record, Unarchived
from checkout_operator.reconciler import Reconciler
from tests.helpers.journal_records import record

NOW = dt.datetime(2026, 11, 29, 12, tzinfo=dt.UTC)
OLD = NOW - dt.timedelta(minutes=5)
MIN_AGE = dt.timedelta(seconds=30)


def open_row(n: int, created_at: dt.datetime = OLD) -> Record:
    return record(f"open-{n}", phase="AwaitingPayment", finished_at=None, created_at=created_at)


def unarchived(row: Record) -> Unarchived:
    return Unarchived(row.namespace, row.name, row.uid, row.created_at, row.finished_at)


class Kube:
    """Every row's resource exists but those ``gone``; counts how they were read."""

    def __init__(self) -> None:
        self.gets = 0
        self.lists = 0
        self.gone: set[str] = set()
        self.down = False

    async def get(self, namespace: str, name: str) -> dict[str, Any] | None:
        self.gets += 1
        if name in self.gone:
            return None
        return {"metadata": {"namespace": namespace, "name": name, "uid": name}}

    async def uids(self, namespace: str) -> dict[tuple[str, str], str]:
        self.lists += 1
        if self.down:
            raise ConnectionError("the apiserver is away")
        return {(r.namespace, r.name): r.uid for r in self.rows if r.name not in self.gone}

    rows: list[Record]


class Journal(ReadModel):
    def __init__(self, rows: list[Record]) -> None:
        super().__init__(None)  # its memory only: no journal here
        self.rows = rows

    async def undeleted(
        self, namespace: str | None = None, *, ended_before: dt.datetime | None = None
    ) -> list[Unarchived]:
        return [unarchived(r) for r in self.rows]

    async def get(self, order_id: str) -> Record | None:
        return next((r for r in self.rows if r.order_id == order_id), None)


class Settings:
    ttl_after_finished = None


class Deps:
    def __init__(self, rows: list[Record]) -> None:
        self.kube = Kube()
        self.kube.rows = rows
        self.readmodel = Journal(rows)
        self.settings = Settings()

    @staticmethod
    def clock() -> dt.datetime:
        return NOW


def reconciler(rows: list[Record], cached: int) -> Reconciler:
    rec = Reconciler(Deps(rows), workers=1)  # type: ignore[arg-type]
    for row in rows:  # the rows' checkouts are cached, as the watch saw them
        rec.cache[(row.namespace, row.name)] = {"metadata": {"uid": row.uid}}
    for n in range(cached - len(rows)):  # and the namespace's ended ones
        rec.cache[("shop", f"ended-{n}")] = {"metadata": {"uid": f"ended-{n}"}}
    # As a watch with a gap left it (a re-list): it may hold a checkout deleted unseen.
    rec._cache_fresh = False
    return rec


@pytest.mark.parametrize(
    ("rows", "cached", "gets", "lists"),
    [
        (50, 200, 50, 0),  # few: a GET each
        (150, 200, 0, 1),  # more than 100 in a small namespace: one LIST
        (150, 10_000, 150, 0),  # a LIST would read 10,000: 150 GETs cost less
        (500, 10_000, 0, 1),  # more than a 25th of them: one LIST
    ],
)
async def test_gets_while_they_cost_less_than_a_list(
    rows: int, cached: int, gets: int, lists: int
) -> None:
    rec = reconciler([open_row(n) for n in range(rows)], cached)
    assert await rec.sweep("shop", MIN_AGE) == 0
    kube = rec.deps.kube
    assert (kube.gets, kube.lists) == (gets, lists)  # type: ignore[attr-defined]


async def test_rows_younger_than_the_minimum_age_are_left_for_a_later_sweep() -> None:
    """Rows the watch has not shown yet: under load, most of the open rows."""
    young = [open_row(n, created_at=NOW - dt.timedelta(seconds=5)) for n in range(500)]
    rec = reconciler([*young, open_row(1_000)], cached=600)
    for row in young:
        rec.cache.pop((row.namespace, row.name))
    assert await rec.sweep("shop", MIN_AGE) == 0
    kube = rec.deps.kube
    assert (kube.gets, kube.lists) == (1, 0)  # type: ignore[attr-defined]


def five_hundred_open() -> tuple[Reconciler, Kube]:
    """500 open rows, all cached, in a namespace of 1,000 Checkouts: a comparison LISTs."""
    rec = reconciler([open_row(n) for n in range(500)], cached=1_000)
    return rec, rec.deps.kube  # type: ignore[return-value]


@pytest.fixture
def released(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    names: list[str] = []

    async def release(deps: Any, record: Record, last: Any = None) -> None:
        names.append(record.name)
        deps.readmodel.rows = [r for r in deps.readmodel.rows if r is not record]  # archived

    monkeypatch.setattr(module, "release_deleted", release)
    return names


async def test_between_listings_only_rows_whose_checkout_left_the_cache_are_read(
    released: list[str],
) -> None:
    rec, kube = five_hundred_open()
    assert await rec.sweep("shop", MIN_AGE) == 0  # after the start's listing: all compared
    assert (kube.gets, kube.lists) == (0, 1)
    assert await rec.sweep("shop", MIN_AGE) == 0  # the watch holds every row's checkout
    assert (kube.gets, kube.lists) == (0, 1)
    # One deleted: the watch's DELETED took it from the cache, and its release failed.
    rec.cache.pop(("shop", "open-7"))
    kube.gone.add("open-7")
    assert await rec.sweep("shop", MIN_AGE) == 1
    assert (kube.gets, kube.lists) == (1, 1) and released == ["open-7"]


@pytest.mark.parametrize("gap", ["listed", "watch stopped", "watch started"])
async def test_after_a_listing_or_without_a_watch_every_row_is_compared_again(
    gap: str, released: list[str]
) -> None:
    """Deleted in a watch gap: a re-list sends no DELETED, so the cache still holds it."""
    rows = [open_row(n) for n in range(500)]
    rec = reconciler(rows, cached=1_000)
    rec.enqueue = lambda key, delay=0.0: None  # type: ignore[method-assign]
    kube: Kube = rec.deps.kube  # type: ignore[assignment]
    await rec.sweep("shop", MIN_AGE)
    kube.gone.add("open-3")
    if gap == "listed":  # kopf's events of a (re-)listing have no type
        rec.observe(None, {"metadata": {"namespace": "shop", "name": "open-9", "uid": "open-9"}})
    elif gap == "watch stopped":
        rec.watch_stopped()
    else:
        rec.watch_started()
    assert await rec.sweep("shop", MIN_AGE) == 1
    assert kube.lists == 2 and released == ["open-3"]
    assert ("shop", "open-3") not in rec.cache
    if gap != "watch stopped":  # compared since: the watch is trusted again
        assert await rec.sweep("shop", MIN_AGE) == 0 and kube.lists == 2


async def test_a_comparison_that_fails_is_made_again_by_the_next_sweep() -> None:
    rec, kube = five_hundred_open()
    kube.down = True
    with pytest.raises(ConnectionError):
        await rec.sweep("shop", MIN_AGE)
    kube.down = False
    assert await rec.sweep("shop", MIN_AGE) == 0
    assert kube.lists == 2


async def test_a_young_checkout_deleted_in_a_watch_gap_is_released_by_the_comparison(
    released: list[str],
) -> None:
    """The comparison after a listing reads the young rows the cache holds too: the sweeps
    after it trust the cache, which still holds one deleted in the gap."""
    young = open_row(1, created_at=NOW - dt.timedelta(seconds=5))
    rec = reconciler([young, *(open_row(n) for n in range(2, 10))], cached=100)
    await rec.sweep("shop", MIN_AGE)
    rec.deps.kube.gone.add("open-1")  # type: ignore[attr-defined]
    rec.watch_started()  # the gap ends: kopf lists again (and sends no DELETED)
    assert await rec.sweep("shop", MIN_AGE) == 1
    assert released == ["open-1"]


async def test_every_tenth_sweep_compares_every_row_whatever_the_watch_says(
    released: list[str],
) -> None:
    """A backstop: a re-list that found nothing sends no event at all."""
    rec, kube = five_hundred_open()
    await rec.sweep("shop", MIN_AGE)
    kube.gone.add("open-5")  # deleted unseen, still cached
    for _ in range(module.COMPARE_ALL_EVERY - 1):  # the first compared; 9 trust the watch
        assert await rec.sweep("shop", MIN_AGE) == 0
    assert kube.lists == 1
    assert await rec.sweep("shop", MIN_AGE) == 1
    assert kube.lists == 2 and released == ["open-5"]


class SettingsWithTtl:
    ttl_after_finished = dt.timedelta(hours=1)


class JournalOfEndings(Journal):
    """Answers ``undeleted`` as the real journal does: ended rows only up to ``ended_before``."""

    async def undeleted(
        self, namespace: str | None = None, *, ended_before: dt.datetime | None = None
    ) -> list[Unarchived]:
        return [
            unarchived(r)
            for r in self.rows
            if r.finished_at is None or ended_before is None or r.finished_at < ended_before
        ]


async def test_an_ended_checkout_deleted_while_nobody_watched_is_archived_after_the_listing(
    released: list[str],
) -> None:
    """It used to wait until its TTL delete was overdue (an hour and five minutes), and the
    audit reported its row ("not deleted", "resource: gone") all that time."""
    ended = record(
        "ended-1", phase="Settled", finished_at=NOW - dt.timedelta(minutes=2), created_at=OLD
    )
    rows = [ended, *(open_row(n) for n in range(3))]
    rec = reconciler(rows, cached=10)
    journal = JournalOfEndings(rows)
    rec.deps.readmodel = journal
    rec.deps.settings = SettingsWithTtl()  # type: ignore[assignment]
    rec.cache.pop(("shop", "ended-1"))  # deleted while the operator restarted: not listed
    rec.deps.kube.gone.add("ended-1")  # type: ignore[attr-defined]
    assert await rec.sweep("shop", MIN_AGE) == 1  # the first sweep after the start's listing
    assert released == ["ended-1"]
    # Between listings ended rows are left to their TTL delete and the watch: none is read.
    later = record(
        "ended-2", phase="Settled", finished_at=NOW - dt.timedelta(minutes=1), created_at=OLD
    )
    journal.rows.append(later)
    rec.deps.kube.gone.add("ended-2")  # type: ignore[attr-defined]
    gets = rec.deps.kube.gets  # type: ignore[attr-defined]
    assert await rec.sweep("shop", MIN_AGE) == 0
    assert rec.deps.kube.gets == gets  # type: ignore[attr-defined]


def listed(rec: Reconciler, row: Record) -> None:
    """kopf lists ``row``'s checkout (an event of type None)."""
    meta = {"namespace": row.namespace, "name": row.name, "uid": row.uid, "resourceVersion": "1"}
    rec.observe(None, {"apiVersion": "v1", "kind": "Checkout", "metadata": meta, "status": {}})


async def test_the_first_comparison_after_a_start_reads_only_rows_the_listing_did_not_show(
    released: list[str],
) -> None:
    """A restart with thousands of ended Checkouts: every one the listing showed exists,
    so reading them all (a LIST of the namespace, and its memory) was needless."""
    rows = [open_row(n) for n in range(500)]
    rec = Reconciler(Deps(rows), workers=1)  # type: ignore[arg-type]
    rec.watch_started()
    for row in rows[:-1]:  # the last was deleted while the operator was down
        listed(rec, row)
    rec.deps.kube.gone.add(rows[-1].name)  # type: ignore[attr-defined]
    assert await rec.sweep("shop", MIN_AGE) == 1
    kube = rec.deps.kube
    assert (kube.gets, kube.lists) == (1, 0)  # type: ignore[attr-defined]
    assert released == [rows[-1].name]
    # The backstop still compares every row, whatever the watch says.
    for _ in range(module.COMPARE_ALL_EVERY - 1):
        await rec.sweep("shop", MIN_AGE)
    assert kube.lists == 0  # type: ignore[attr-defined]
    await rec.sweep("shop", MIN_AGE)
    assert kube.lists == 1  # type: ignore[attr-defined]


@pytest.mark.parametrize("gap", ["re-listed", "watch started again", "watch stopped"])
async def test_after_a_gap_the_first_comparison_reads_every_row(
    released: list[str], gap: str
) -> None:
    """A re-list (or a second watch) does not send DELETED for what went in the gap: the
    cache may hold one, so every row is compared."""
    rows = [open_row(n) for n in range(500)]
    rec = Reconciler(Deps(rows), workers=1)  # type: ignore[arg-type]
    rec.watch_started()
    for row in rows:
        listed(rec, row)
    rec.deps.kube.gone.add(rows[0].name)  # type: ignore[attr-defined]
    if gap == "re-listed":
        listed(rec, rows[1])
    elif gap == "watch started again":
        rec.watch_started()
    else:
        rec.watch_stopped()
    assert await rec.sweep("shop", MIN_AGE) == 1
    assert released == [rows[0].name]
    assert rec.deps.kube.lists == 1  # type: ignore[attr-defined]


async def test_a_checkout_read_before_the_listing_is_compared_by_the_first_sweep(
    released: list[str],
) -> None:
    """The inbox or a retry may read a checkout (a GET) before kopf's listing; deleted
    before the listing, it is neither listed nor deleted by the watch, so the cache holding
    it proves nothing (a review of session 14)."""
    rows = [open_row(n) for n in range(3)]
    rec = Reconciler(Deps(rows), workers=1)  # type: ignore[arg-type]
    rec.watch_started()
    await rec._refresh((rows[0].namespace, rows[0].name))  # read, then deleted
    rec.deps.kube.gone.add(rows[0].name)  # type: ignore[attr-defined]
    for row in rows[1:]:
        listed(rec, row)
    assert await rec.sweep("shop", MIN_AGE) == 1
    assert released == [rows[0].name]
