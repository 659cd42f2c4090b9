"""The start step's announcements (issue 12, session 11): when one of `committed` and the
expiry job fails, the other is still journaled and the failed one is done later.

Real apiserver, Postgres, NATS, Redis, User and Product services, Midtrans sandbox.
"""

from __future__ import annotations

from typing import Any

from tests.integration.saga_fixtures import SagaEnv
from tests.integration.test_nothing_lost import journal_reaches
from tests.integration.test_saga_operator import product


async def test_an_expiry_job_that_fails_leaves_committed_journaled_and_is_scheduled_later(
    saga: SagaEnv,
) -> None:
    operator = await saga.start_operator()
    announcer = operator.deps.announcer
    schedule = announcer.schedule_expiry
    failures = [ConnectionError("Redis is away")]

    async def flaky(*args: Any, **kwargs: Any) -> None:
        if failures:
            raise failures.pop()
        await schedule(*args, **kwargs)

    announcer.schedule_expiry = flaky  # type: ignore[method-assign]
    p = await product(saga, stock=2)
    name = await saga.create(items=[(p, 10_000, 1)], paymentTTLSeconds=600)
    await saga.wait_phase(name, "AwaitingPayment")
    record = await journal_reaches(saga, name, lambda r: r.expiry_scheduled)
    assert failures == [] and record.committed_published
    assert record.phase == "AwaitingPayment"
