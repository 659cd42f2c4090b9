"""The expiry job of a checkout that has ended: taken off the queue by the ending, and,
should one be left behind, answered by the journal, not the apiserver.

Every checkout's job runs at its payment deadline, long after most were paid: one
Checkout GET each, 20/s a quarter of an hour after 20 paid/s (issue 12, session 8:
603 GETs in 30 s of an idle system). The job still reads the resource whenever the
journal has no ending, so it expires what is still awaiting payment.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import pytest
import redis.asyncio as aioredis
from arq.jobs import Job, JobStatus

from checkout_operator.clients.announcer import expiry_job_id
from checkout_operator.worker import expire_checkout
from tests.helpers.waiting import eventually
from tests.integration.saga_fixtures import SagaEnv


def counting_gets(monkeypatch: pytest.MonkeyPatch, kube: Any) -> list[tuple[str, str]]:
    """The real client's GETs of Checkouts, recorded as they are made."""
    made: list[tuple[str, str]] = []
    real: Callable[[str, str], Awaitable[dict[str, Any] | None]] = kube.get

    async def get(namespace: str, name: str) -> dict[str, Any] | None:
        made.append((namespace, name))
        return await real(namespace, name)

    monkeypatch.setattr(kube, "get", get)
    return made


async def awaiting_payment(saga: SagaEnv, ttl: int) -> tuple[str, dict[str, Any]]:
    """An operator without the arq worker, and a checkout awaiting payment for ``ttl`` s."""
    await saga.start_operator(worker=False)
    product = await saga.products.product(price=10_000, stock=3)
    name = await saga.create(items=[(product, 10_000, 1)], paymentTTLSeconds=ttl)
    return name, await saga.wait_phase(name, "AwaitingPayment")


async def test_the_job_of_a_paid_checkout_reads_no_checkout(
    saga: SagaEnv, monkeypatch: pytest.MonkeyPatch
) -> None:
    name, _ = await awaiting_payment(saga, 600)
    deps = saga.operator.deps
    await saga.sandbox(name, "pay", payment_type="bank_transfer")
    body = await saga.wait_phase(name, "Settled")

    async def journaled() -> bool:
        record = await deps.readmodel.get(name)
        return record is not None and record.finished_at is not None

    await eventually(journaled, within=30, interval=0.05)
    gets = counting_gets(monkeypatch, deps.kube)
    uid = body["metadata"]["uid"]
    result = await expire_checkout({"deps": deps}, saga.namespace, name, uid)
    assert result == "already Settled"
    assert gets == []


async def test_the_job_of_an_unended_checkout_still_reads_and_expires_it(
    saga: SagaEnv, monkeypatch: pytest.MonkeyPatch
) -> None:
    name, body = await awaiting_payment(saga, 2)
    deps = saga.operator.deps
    gets = counting_gets(monkeypatch, deps.kube)
    uid = body["metadata"]["uid"]

    async def expired_by_the_job() -> bool:
        try:
            result = await expire_checkout({"deps": deps}, saga.namespace, name, uid)
        except Exception:  # arq's Retry while not yet due
            return False
        return result in ("Expired", "already Expired")

    await eventually(expired_by_the_job, within=30, interval=0.2)
    assert (saga.namespace, name) in gets


async def test_an_ending_takes_the_expiry_job_off_the_queue(saga: SagaEnv) -> None:
    """A paid checkout's job never runs: its ending removes it (red before: deferred)."""
    name, body = await awaiting_payment(saga, 600)
    uid = body["metadata"]["uid"]
    redis = aioredis.Redis.from_url(saga.settings.redis_url.value)
    try:
        job = Job(expiry_job_id(uid), redis, _queue_name=saga.settings.arq_queue)

        async def scheduled() -> bool:
            return await job.status() is JobStatus.deferred

        await eventually(scheduled, within=15, interval=0.05)
        await saga.sandbox(name, "pay", payment_type="bank_transfer")
        await saga.wait_phase(name, "Settled")

        async def dropped() -> bool:
            return await job.status() is JobStatus.not_found

        await eventually(dropped, within=30, interval=0.05)
        assert await redis.zscore(saga.settings.arq_queue, expiry_job_id(uid)) is None
    finally:
        await redis.aclose()
