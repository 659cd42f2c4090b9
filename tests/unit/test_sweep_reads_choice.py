"""How the sweep reads what exists: GETs or one LIST, by what each would cost."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest

from checkout_operator.readmodel import Record
from checkout_operator.reconciler import Reconciler
from tests.helpers.journal_records import record

NOW = dt.datetime(2026, 11, 29, 12, tzinfo=dt.UTC)
OLD = NOW - dt.timedelta(minutes=5)
MIN_AGE = dt.timedelta(seconds=30)


def open_row(n: int, created_at: dt.datetime = OLD) -> Record:
    return record(f"open-{n}", phase="AwaitingPayment", finished_at=None, created_at=created_at)


class Kube:
    """Every row's resource exists; counts how they were read."""

    def __init__(self) -> None:
        self.gets = 0
        self.lists = 0

    async def get(self, namespace: str, name: str) -> dict[str, Any]:
        self.gets += 1
        return {"metadata": {"namespace": namespace, "name": name, "uid": name}}

    async def uids(self, namespace: str) -> dict[tuple[str, str], str]:
        self.lists += 1
        return {(r.namespace, r.name): r.uid for r in self.rows}

    rows: list[Record]


class Journal:
    def __init__(self, rows: list[Record]) -> None:
        self.rows = rows

    async def undeleted(self, namespace: str | None, *, ended_before: Any) -> list[Record]:
        return self.rows


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
    young = [open_row(n, created_at=NOW - dt.timedelta(seconds=5)) for n in range(500)]
    rec = reconciler([*young, open_row(1_000)], cached=600)
    assert await rec.sweep("shop", MIN_AGE) == 0
    kube = rec.deps.kube
    assert (kube.gets, kube.lists) == (1, 0)  # type: ignore[attr-defined]
