"""A checkout awaiting payment is looked at again on every change of it and every
deadline; once this process has seen its `committed` and expiry job journaled, those looks
read no journal row (issue 12, session 11: ~0.9 reads per paid checkout were these)."""

from __future__ import annotations

import dataclasses
import datetime as dt
from typing import Any

import pytest

from checkout_operator import reconciler as reconciler_module
from checkout_operator.actions import ensure_announced
from checkout_operator.readmodel import ReadModel, Record
from checkout_operator.reconciler import Reconciler
from tests.helpers.journal_records import record


class Journal(ReadModel):
    def __init__(self, row: Record) -> None:
        super().__init__(None)
        self.row = row
        self.reads = 0

    async def get(self, order_id: str) -> Record | None:
        self.reads += 1
        return self.row

    async def mark(self, order_id: str, **flags: Any) -> None:
        self.row = dataclasses.replace(self.row, **flags)


class Announcer:
    def __init__(self) -> None:
        self.told: list[str] = []
        self.expiry_at: dt.datetime | None = None

    async def publish(self, order_id: str, event: str) -> None:
        self.told.append(event)

    async def schedule_expiry(self, namespace: str, name: str, uid: str, at: Any) -> None:
        self.told.append("expiry job")
        self.expiry_at = at


class Deps:
    def __init__(self, journal: Journal) -> None:
        self.readmodel = journal
        self.announcer = Announcer()


def checkout(phase: str, version: int) -> dict[str, Any]:
    return {
        "metadata": {
            "namespace": "shop",
            "name": "co-1",
            "uid": "co-1",
            "resourceVersion": str(version),
        },
        "status": {"phase": phase, "expiresAt": "2026-11-29T13:00:00Z"},
    }


DEADLINE = dt.datetime(2026, 11, 29, 13, 0, 0, 500_000, tzinfo=dt.UTC)  # the journal's


async def test_an_awaiting_checkout_seen_announced_is_looked_at_without_a_read() -> None:
    journal = Journal(
        record(
            "co-1",
            phase="AwaitingPayment",
            finished_at=None,
            committed_published=False,
            expiry_scheduled=False,
            expires_at=DEADLINE,
        )
    )
    deps = Deps(journal)
    awaiting = checkout("AwaitingPayment", 2)
    await ensure_announced(deps, awaiting)  # type: ignore[arg-type]
    assert journal.reads == 1 and deps.announcer.told == ["committed", "expiry job"]
    # Remembered with the journal's deadline: the reconciler plans by it without a read.
    assert journal.announced_deadline("co-1") == DEADLINE
    for _ in range(3):  # a watch event, the poller's look, a deadline
        await ensure_announced(deps, awaiting)  # type: ignore[arg-type]
    assert journal.reads == 1 and len(deps.announcer.told) == 2

    # Once the checkout moves on, the memory of it goes: nothing holds it until its
    # TTL delete, and a look at it reads the journal as before.
    reconciler = Reconciler(deps)  # type: ignore[arg-type]
    reconciler.enqueue = lambda key, delay=0.0: None  # type: ignore[method-assign]
    reconciler.observe("MODIFIED", awaiting)
    reconciler.observe("MODIFIED", checkout("Settled", 3))
    assert not journal.announced_known("co-1")
    assert journal.announced_deadline("co-1") is None
    await ensure_announced(deps, awaiting)  # type: ignore[arg-type]
    assert journal.reads == 2


@pytest.mark.parametrize(
    ("shown", "due"),
    [
        ("2027-11-29T13:00:00Z", DEADLINE),  # moved a year later by hand: the journal's
        ("2026-11-29T12:30:00Z", DEADLINE - dt.timedelta(minutes=30, microseconds=500_000)),
        (None, DEADLINE),  # removed by hand
    ],
)
async def test_the_expiry_job_is_scheduled_at_the_journaled_deadline(
    shown: str | None, due: dt.datetime
) -> None:
    """The job runs when the deadline journaled with the terms passes (the Snap page
    lapses by it), or at an earlier expiresAt: never later, whatever the resource says."""
    journal = Journal(
        record(
            "co-1",
            phase="AwaitingPayment",
            finished_at=None,
            expiry_scheduled=False,
            expires_at=DEADLINE,
        )
    )
    deps = Deps(journal)
    body = checkout("AwaitingPayment", 2)
    if shown is None:
        del body["status"]["expiresAt"]
    else:
        body["status"]["expiresAt"] = shown
    await ensure_announced(deps, body)  # type: ignore[arg-type]
    assert deps.announcer.expiry_at == due


async def test_a_checkout_without_its_expiry_job_is_read_each_time() -> None:
    """No expiresAt (an older resource, a hand edit): no job, so nothing to remember."""
    journal = Journal(
        record("co-1", phase="AwaitingPayment", finished_at=None, expiry_scheduled=False)
    )
    deps = Deps(journal)
    body = checkout("AwaitingPayment", 2)
    del body["status"]["expiresAt"]
    await ensure_announced(deps, body)  # type: ignore[arg-type]
    await ensure_announced(deps, body)  # type: ignore[arg-type]
    assert journal.reads == 2


async def test_a_step_that_remembers_after_the_checkout_moved_on_is_forgotten(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The watch says the checkout ended while a step awaits; the step then remembers it
    announced. Nothing may keep that uid (it would stay until the process ends)."""
    journal = Journal(record("co-1", phase="AwaitingPayment", finished_at=None))
    deps = Deps(journal)
    reconciler = Reconciler(deps)  # type: ignore[arg-type]
    reconciler.enqueue = lambda key, delay=0.0: None  # type: ignore[method-assign]
    awaiting = checkout("AwaitingPayment", 2)
    awaiting["status"]["payment"] = {"snapToken": "t"}

    async def step(deps: Any, body: dict[str, Any]) -> None:
        reconciler.observe("MODIFIED", checkout("Settled", 3))  # meanwhile, the watch
        journal.remember_announced("co-1", DEADLINE)

    monkeypatch.setattr(reconciler_module, "reconcile", step)
    reconciler.observe("ADDED", awaiting)
    await reconciler._process(("shop", "co-1"))
    assert not journal.announced_known("co-1")
