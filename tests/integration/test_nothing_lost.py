"""Stock and journal come out right after crashes, lost events and watch gaps (issue 9).

On the real apiserver, Postgres, NATS, User and Product services and the Midtrans
sandbox. A crash is reproduced by stopping the operator and leaving the journal and
the resource exactly as the interrupted step would have left them.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import math
import time
import uuid
from collections.abc import AsyncIterator, Callable, Sequence
from typing import Any

import asyncpg
import grpc
import pytest
from kubernetes_asyncio.client.exceptions import ApiException

from checkout_operator import metrics
from checkout_operator.actions import Retry
from checkout_operator.breaker import CircuitBreaker
from checkout_operator.readmodel import ReadModel, Record
from checkout_operator.saga import Line, Phase, Voucher
from midtrans import MidtransClientError, MidtransError, MidtransServerError
from saga_kit import db
from saga_kit.checkout_status import status_patch
from saga_kit.settings import Secret
from tests.helpers.waiting import eventually
from tests.integration.saga_fixtures import Operator, SagaEnv
from tests.integration.test_saga_operator import product, wait_stock


@contextlib.asynccontextmanager
async def journal(saga: SagaEnv) -> AsyncIterator[ReadModel]:
    """The operator's journal, opened apart from any operator (one may be stopped)."""
    pool = await db.create_pool(saga.platform.postgres_dsn, saga.settings.db_schema)
    try:
        yield ReadModel(pool)
    finally:
        await pool.close()


async def write_ending(saga: SagaEnv, name: str, phase: Phase, reason: str) -> dict[str, Any]:
    """The operator's own status write of an ending, as ``actions._end`` makes it."""
    body = await saga.get(name)
    assert body is not None
    now = dt.datetime.now(dt.UTC)
    status = status_patch(
        body,
        now,
        phase,
        [(phase, reason)],
        [("Ready", False, reason, "not paid in time")],
        {"failure": {"reason": reason, "message": "not paid in time"}},
    )
    return await saga.kube.patch_status(body, status)


async def journal_reaches(saga: SagaEnv, name: str, check: Callable[[Record], bool]) -> Record:
    """The journal row of ``name`` once ``check`` holds for it."""
    seen: list[Record] = []
    async with journal(saga) as readmodel:

        async def reached() -> bool:
            record = await readmodel.get(name)
            seen[:] = [record] if record is not None else []
            return record is not None and check(record)

        await eventually(reached, within=30, interval=0.1)
    return seen[0]


async def archived_as(saga: SagaEnv, name: str, phase: str) -> None:
    record = await journal_reaches(saga, name, lambda r: r.deleted_at is not None)
    assert record.phase == phase
    async with journal(saga) as readmodel:
        assert ("Cancelled", "Deleted") not in await readmodel.history(name)


async def awaiting_payment(saga: SagaEnv, stock: int) -> tuple[Operator, str, str]:
    """A running operator, a product and a checkout of one unit waiting for payment."""
    operator = await saga.start_operator()
    p = await product(saga, stock=stock)
    name = await saga.create(items=[(p, 10_000, 1)], paymentTTLSeconds=600)
    await saga.wait_phase(name, "AwaitingPayment")
    return operator, p, name


async def retries_grow(by: int) -> None:
    start = metrics.RETRIES._value.get()

    async def grown() -> bool:
        return bool(metrics.RETRIES._value.get() >= start + by)

    await eventually(grown, within=30, interval=0.05)


# --- final events ----------------------------------------------------------------------


async def test_final_event_lost_on_the_way_is_published_again(saga: SagaEnv) -> None:
    """Journaled as published, but the Product service never applied it (lost, or
    dead-lettered by an older consumer): the open reservation brings it back."""
    operator, p, name = await awaiting_payment(saga, stock=3)
    await operator.shutdown()
    await write_ending(saga, name, Phase.EXPIRED, "PaymentExpired")
    async with journal(saga) as readmodel:
        await readmodel.record_phase(name, [(Phase.EXPIRED, "PaymentExpired")])
        await readmodel.mark(name, final_event_published=True)  # ... and never arrived
    assert await saga.products.stock_of(p) == (3, 1)
    await saga.start_operator(final_event_grace=dt.timedelta(seconds=1))
    await wait_stock(saga, p, (3, 0))
    await journal_reaches(saga, name, lambda r: r.final_event_attempts == 1)


async def test_deletion_journaled_but_not_announced_still_releases(saga: SagaEnv) -> None:
    """The operator died after journaling a deletion and before publishing `cancelled`."""
    operator, p, name = await awaiting_payment(saga, stock=2)
    await operator.shutdown()
    saga.platform.kubectl("delete", "checkout", name, namespace=saga.namespace)
    async with journal(saga) as readmodel:
        await readmodel.record_phase(name, [(Phase.CANCELLED, "Deleted")], deleted=True)
    await saga.start_operator()
    await wait_stock(saga, p, (2, 0))


async def test_ttl_delete_waits_until_the_ending_is_journaled_and_announced(
    saga: SagaEnv,
) -> None:
    operator, p, name = await awaiting_payment(saga, stock=2)
    await operator.shutdown()
    # Ended on the resource long ago; the journal missed it (the crash window).
    await write_ending(saga, name, Phase.EXPIRED, "PaymentExpired")
    await saga.start_operator(ttl_after_finished=dt.timedelta(seconds=0))

    async def gone() -> bool:
        return await saga.get(name) is None

    await eventually(gone, within=30, interval=0.1)
    async with journal(saga) as readmodel:
        record = await readmodel.get(name)
    assert record is not None
    assert (record.phase, record.final_event_published) == ("Expired", True)
    assert record.deleted_at is not None
    await wait_stock(saga, p, (2, 0))


# --- Rejected after Reserve; errors that are nobody's refusal ---------------------------


async def test_start_retried_after_reserve_that_ends_rejected_releases_the_stock(
    saga: SagaEnv,
) -> None:
    """Reserve succeeded, the payment page could not be made (Midtrans away); before
    the retry the voucher was withdrawn, so the checkout ends Rejected. Its stock
    must come back."""
    operator = await saga.start_operator(
        vouchers={"TEN": Voucher("TEN", percent=10)},
        midtrans_url="http://127.0.0.1:9",  # nothing listens: a transient error
        payment_setup_deadline=dt.timedelta(hours=1),
    )
    p = await product(saga, stock=2)
    name = await saga.create(items=[(p, 10_000, 1)], voucher="TEN")
    await wait_stock(saga, p, (2, 1))
    await operator.shutdown()
    await saga.start_operator(vouchers={})
    body = await saga.wait_phase(name, "Rejected")
    assert body["status"]["failure"]["reason"] == "InvalidVoucher"
    await wait_stock(saga, p, (2, 0))


async def test_midtrans_away_for_many_retries_uses_up_no_payment_attempts(saga: SagaEnv) -> None:
    """Each retry used to journal a new Midtrans order id (``name~n``) and count it as an
    attempt, so a short outage (the operator's retries come within seconds, and once the
    circuit opens they fail fast without reaching Midtrans) used up the attempts and
    ended the checkout PaymentSetupFailed long before the setup deadline: an outage
    turned into a refusal. Now a retry asks again for the order id it journaled."""
    operator = await saga.start_operator(
        midtrans_url="http://127.0.0.1:9",  # nothing listens: a transient error
        payment_setup_deadline=dt.timedelta(hours=1),
        max_payment_attempts=2,
    )
    p = await product(saga, stock=2)
    name = await saga.create(items=[(p, 10_000, 1)])
    retried = metrics.RETRIES._value.get()
    body: dict[str, Any] | None = None

    async def retried_twice_the_attempts_or_ended() -> bool:
        nonlocal body
        body = await saga.get(name)
        ended = body is not None and (body.get("status") or {}).get("phase") is not None
        return ended or metrics.RETRIES._value.get() >= retried + 4

    await eventually(retried_twice_the_attempts_or_ended, within=30, interval=0.05)
    assert body is not None
    assert (body.get("status") or {}).get("phase") is None, body["status"]
    async with journal(saga) as readmodel:
        record = await readmodel.get(name)
        pages = await readmodel.payment_pages(name)
    assert record is not None and (record.payment_attempt, record.midtrans_order_id) == (1, name)
    assert [page.midtrans_order_id for page in pages] == [name]
    await operator.shutdown()
    await saga.start_operator(max_payment_attempts=2)  # Midtrans is back
    body = await saga.wait_phase(name, "AwaitingPayment")
    # The buyer's page is the order id itself, as the sandbox's customer controls expect.
    assert body["status"]["payment"]["midtransOrderId"] == name
    await wait_stock(saga, p, (2, 1))


# --- the payment-setup deadline: Midtrans' time, from the first Snap order ------------


Failed = list[tuple[str, float]]  # a Snap order whose call failed, and when it was made


def snap_failing(operator: Operator, lost: Callable[[str, Failed], bool], *, made: bool) -> Failed:
    """Midtrans' Snap call for ``order`` fails while ``lost(order, failed so far)``: with
    ``made`` its gateway answers 504 after the backend made the order (asked again, the
    order id is taken), else Midtrans was not reached. Returns the failed calls."""
    midtrans = operator.deps.midtrans
    real_create = midtrans.create_snap
    failed: Failed = []

    async def create_snap(order: str, *args: Any, **kwargs: Any) -> Any:
        if not lost(order, failed):
            return await real_create(order, *args, **kwargs)
        if made:
            await real_create(order, *args, **kwargs)  # asked again: the id is taken (409)
        failed.append((order, time.monotonic()))
        raise MidtransServerError(f"POST snap {order}: 504 Gateway Timeout", http_status=504)

    midtrans.create_snap = create_snap  # type: ignore[method-assign,assignment]
    return failed


async def since_the_first_snap_order(saga: SagaEnv, name: str, phase: str) -> dt.timedelta:
    """From the journal's first Snap order of ``name`` to its history entering ``phase``,
    both by the journal's clock."""
    async with journal(saga) as readmodel:
        pages = await readmodel.payment_pages(name)
        at = await readmodel.pool.fetchval(
            "SELECT at FROM checkout_history WHERE order_id = $1 AND phase = $2", name, phase
        )
    assert pages and at is not None, (pages, at)
    elapsed: dt.timedelta = at - pages[0].created_at
    return elapsed


async def test_time_before_the_first_snap_call_does_not_count_against_midtrans(
    saga: SagaEnv,
) -> None:
    """The setup deadline counted from the Checkout's creation: after the Product service
    was away longer than it, the first Snap failure (a blip) ended the checkout
    Cancelled/PaymentSetupFailed at once, though Midtrans had been asked nothing before.
    Now it counts from the checkout's first Snap order: the blip is retried."""
    deadline = dt.timedelta(seconds=0.5)
    operator = await saga.start_operator(payment_setup_deadline=deadline)
    products = operator.deps.products
    real_reserve = products.reserve
    away_until = math.inf
    refused: list[str] = []

    async def product_away(order: str, user: str, lines: Sequence[Line]) -> list[Line]:
        if time.monotonic() < away_until:
            refused.append(order)
            raise grpc.aio.AioRpcError(
                grpc.StatusCode.UNAVAILABLE, grpc.aio.Metadata(), grpc.aio.Metadata(), "away"
            )
        return await real_reserve(order, user, lines)

    products.reserve = product_away  # type: ignore[method-assign,assignment]
    blips = snap_failing(operator, lambda order, failed: not failed, made=False)  # one
    p = await product(saga, stock=2)
    name = await saga.create(items=[(p, 10_000, 1)], paymentTTLSeconds=600)
    # The Product service comes back when the checkout is twice the deadline old.
    away_until = time.monotonic() + 2 * deadline.total_seconds()
    body = await saga.wait_phase(name, "AwaitingPayment", "Cancelled")
    assert body["status"]["phase"] == "AwaitingPayment", body["status"].get("failure")
    assert refused and [order for order, _ in blips] == [name]
    assert body["status"]["payment"]["midtransOrderId"] == name  # asked again: no attempt
    await wait_stock(saga, p, (2, 1))


async def test_an_open_circuit_alone_never_ends_a_checkout(saga: SagaEnv) -> None:
    """The circuit, opened by an outage, stays open longer than the setup deadline while
    Midtrans answers again: a call the breaker kept from Midtrans failed nothing, so it
    ended the checkout PaymentSetupFailed only because time had passed. Now only a real
    failed call past the deadline does; its trial call gets the page."""
    deadline = dt.timedelta(seconds=1)
    operator = await saga.start_operator(payment_setup_deadline=deadline)
    breaker = CircuitBreaker(cooldown=2.5 * deadline.total_seconds(), transient=(MidtransError,))

    async def away() -> None:
        raise MidtransServerError("POST snap: 503", http_status=503)

    for _ in range(breaker.threshold):  # the outage that opened it
        with contextlib.suppress(MidtransError):
            await breaker.call(away)
    assert breaker.state == "open"
    operator.deps.breaker = breaker
    p = await product(saga, stock=2)
    name = await saga.create(items=[(p, 10_000, 1)], paymentTTLSeconds=600)
    body = await saga.wait_phase(name, "AwaitingPayment", "Cancelled")
    assert body["status"]["phase"] == "AwaitingPayment", body["status"].get("failure")
    assert body["status"]["payment"]["midtransOrderId"] == name
    # The page came longer than the deadline after the first Snap order was journaled.
    assert await since_the_first_snap_order(saga, name, "AwaitingPayment") > deadline
    await wait_stock(saga, p, (2, 1))


async def test_an_open_circuit_a_cooldown_past_the_deadline_ends_the_checkouts_waiting(
    saga: SagaEnv,
) -> None:
    """Midtrans away for longer than the setup deadline: the circuit's trial calls, one a
    cooldown and shared by every checkout, were the only calls that could end one, so
    each waiting checkout held its stock until a trial call happened to be its own (two
    a minute with the default cooldown). Now an open circuit a whole cooldown past the
    deadline ends it too (it was opened again by a call that failed past the deadline)."""
    deadline = dt.timedelta(seconds=1)
    operator = await saga.start_operator(payment_setup_deadline=deadline)
    snap_failing(operator, lambda order, failed: True, made=False)  # Midtrans away
    breaker = CircuitBreaker(cooldown=1.0, transient=(MidtransError,))
    operator.deps.breaker = breaker
    p = await product(saga, stock=4)
    names = [await saga.create(items=[(p, 10_000, 1)], paymentTTLSeconds=600) for _ in range(4)]
    failures = []
    for name in names:
        body = await saga.wait_phase(name, "Cancelled", within=60)
        failures.append(body["status"]["failure"]["message"])
    assert all("setup deadline" in f for f in failures), failures
    # Not one per trial call: the open circuit ended some of them.
    assert any("circuit" in f for f in failures), failures
    await wait_stock(saga, p, (4, 0))


async def test_a_gateway_losing_snap_answers_for_a_while_uses_the_attempts_over_the_deadline(
    saga: SagaEnv,
) -> None:
    """Midtrans' gateway answers 504 after its backend made each Snap order. Asked again,
    the order id is taken and the next attempt takes ``name~n``: at the reconciler's
    backoff (0.2 s doubling) all 5 attempts went in ~3 s and the checkout ended
    Cancelled "no payment page after 5 attempts", however long the setup deadline. Now
    new orders are spread over the deadline and the attempts outlast the outage."""
    deadline, outage = dt.timedelta(seconds=8), 5.0  # the gaps: 0, 1, 2, 4 s
    operator = await saga.start_operator(payment_setup_deadline=deadline)
    lost = snap_failing(
        operator,
        lambda order, failed: not failed or time.monotonic() - failed[0][1] < outage,
        made=True,
    )
    p = await product(saga, stock=2)
    name = await saga.create(items=[(p, 10_000, 1)], paymentTTLSeconds=600)
    body = await saga.wait_phase(name, "AwaitingPayment", "Cancelled")
    assert body["status"]["phase"] == "AwaitingPayment", (lost, body["status"].get("failure"))
    shown = body["status"]["payment"]["midtransOrderId"]
    async with journal(saga) as readmodel:
        pages = await readmodel.payment_pages(name)
    # Every order made is listed (stray money on one is returned); only the last is shown.
    assert [(page.midtrans_order_id, page.shown) for page in pages] == [
        *((order, False) for order, _ in lost),
        (shown, True),
    ]
    assert 2 <= len(lost) < saga.settings.max_payment_attempts
    paid = await saga.sandbox(shown, "pay", payment_type="bank_transfer")
    assert paid.status_code == 200, paid.text
    await saga.wait_phase(name, "Settled")
    await wait_stock(saga, p, (1, 0))


@pytest.mark.parametrize("midtrans", ["answers-lost", "away"])
async def test_only_the_setup_deadline_ends_a_payment_setup(saga: SagaEnv, midtrans: str) -> None:
    """Snap never gives a page: its answers are lost (each order made, then 504), or it
    is away. The checkout ends Cancelled/PaymentSetupFailed, its stock released and no
    page handed out, and only once the deadline from its first Snap order is over: with
    2 attempts, lost answers used to end it within a second."""
    deadline = dt.timedelta(seconds=2)
    operator = await saga.start_operator(payment_setup_deadline=deadline, max_payment_attempts=2)
    failed = snap_failing(operator, lambda order, failed: True, made=midtrans == "answers-lost")
    p = await product(saga, stock=2)
    name = await saga.create(items=[(p, 10_000, 1)], paymentTTLSeconds=600)
    body = await saga.wait_phase(name, "AwaitingPayment", "Cancelled")
    status = body["status"]
    assert status["phase"] == "Cancelled", status
    assert status["failure"]["reason"] == "PaymentSetupFailed"
    assert await since_the_first_snap_order(saga, name, "Cancelled") >= deadline
    assert "setup deadline (2 s)" in status["failure"]["message"]
    assert not (status.get("payment") or {}).get("snapToken")
    async with journal(saga) as readmodel:
        pages = await readmodel.payment_pages(name)
    expected = [name, f"{name}~2"] if midtrans == "answers-lost" else [name]
    assert [(page.midtrans_order_id, page.snap_token) for page in pages] == [
        (order, None) for order in expected
    ]
    assert {order for order, _ in failed} == set(expected)
    await wait_stock(saga, p, (2, 0))


async def test_rejected_for_an_order_id_reserved_by_someone_else_releases_nothing_of_theirs(
    saga: SagaEnv,
) -> None:
    await saga.start_operator()
    p = await product(saga, stock=3)
    name = f"order-{uuid.uuid4().hex[:10]}"
    await saga.products.reserve(name, (p, 10_000, 2))  # someone else's, under this id
    await saga.create(name, items=[(p, 10_000, 1)])
    body = await saga.wait_phase(name, "Rejected")
    assert body["status"]["failure"]["reason"] == "DuplicateOrderId"
    # Done with by the final-event relay: the reservation counts as closed for us.
    record = await journal_reaches(saga, name, lambda r: r.reservation_closed_at is not None)
    assert not record.reserve_attempted and not record.final_event_published
    assert await saga.products.stock_of(p) == (3, 2)


async def test_refused_credentials_are_retried_not_a_refusal(saga: SagaEnv) -> None:
    """A wrong service token (a rotation half done) is not the buyer's fault."""
    operator = await saga.start_operator(service_token=Secret("not-the-token"))
    p = await product(saga, stock=2)
    name = await saga.create(items=[(p, 10_000, 1)], paymentTTLSeconds=600)
    await retries_grow(3)  # the User service refused us three times over
    body = await saga.get(name)
    assert body is not None and (body.get("status") or {}).get("phase") is None
    await operator.shutdown()
    await saga.start_operator()
    await saga.wait_phase(name, "AwaitingPayment")
    await wait_stock(saga, p, (2, 1))


# --- the read model -------------------------------------------------------------------


async def test_journal_is_levelled_with_an_ending_it_missed(saga: SagaEnv) -> None:
    """The operator died between its status write (Expired) and the journal's: on
    restart the journal says Expired, the stock is released, and after deletion the
    archive still says Expired."""
    operator, p, name = await awaiting_payment(saga, stock=2)
    await operator.shutdown()
    await write_ending(saga, name, Phase.EXPIRED, "PaymentExpired")
    operator = await saga.start_operator()
    await wait_stock(saga, p, (2, 0))
    await journal_reaches(saga, name, lambda r: r.phase == "Expired")
    saga.platform.kubectl("delete", "checkout", name, namespace=saga.namespace)
    await archived_as(saga, name, "Expired")


async def test_deleted_right_after_an_ending_the_journal_missed_keeps_that_ending(
    saga: SagaEnv,
) -> None:
    """The watch's DELETED event carries the resource's last state: the archive keeps
    the phase it ended in, not Cancelled/Deleted."""
    operator, p, name = await awaiting_payment(saga, stock=2)
    await operator.watcher.stop()  # events are handed over below, as kopf would
    last = await write_ending(saga, name, Phase.EXPIRED, "PaymentExpired")
    saga.platform.kubectl("delete", "checkout", name, namespace=saga.namespace)
    operator.reconciler.observe("DELETED", last)
    await wait_stock(saga, p, (2, 0))
    await archived_as(saga, name, "Expired")


async def test_answer_of_the_awaiting_payment_write_lost_still_sells_when_paid(
    saga: SagaEnv,
) -> None:
    """The apiserver applied the AwaitingPayment write but the operator never heard
    (a 504, a crash right after it): the journal must still judge the payment by the
    checkout's total, settle it, and keep the money (chaos seed 900356676)."""
    operator = await saga.start_operator()
    kube = operator.deps.kube
    real_patch = kube.patch_status
    lost: list[str] = []

    async def answer_lost(body: dict[str, Any], status: dict[str, Any]) -> dict[str, Any]:
        updated = await real_patch(body, status)
        if status.get("phase") == "AwaitingPayment" and not lost:
            lost.append(body["metadata"]["name"])
            raise ApiException(status=504, reason="Gateway Timeout")  # written, unheard
        return updated

    kube.patch_status = answer_lost  # type: ignore[method-assign]
    p = await product(saga, stock=2)
    name = await saga.create(items=[(p, 10_000, 1)], paymentTTLSeconds=600)
    await saga.wait_phase(name, "AwaitingPayment")
    assert lost == [name]
    paid = await saga.sandbox(name, "pay", payment_type="bank_transfer")
    assert paid.status_code == 200, paid.text
    await saga.wait_phase(name, "Settled")
    await wait_stock(saga, p, (1, 0))
    record = await journal_reaches(saga, name, lambda r: r.phase == "Settled")
    assert record.paid_order_id == name and record.total == 10_000
    assert (await saga.sandbox_state(name))["transaction_status"] == "settlement"


@pytest.mark.parametrize("duplicate", ["409", "worded-unknown"])
async def test_a_payment_page_whose_answer_was_lost_is_made_again_under_a_new_order_id(
    saga: SagaEnv, duplicate: str
) -> None:
    """Midtrans made the Snap order but its answer never came (a timeout): asked again
    for that order id it says the id is taken (409; or a 400 in words the client does
    not know), so the next attempt takes ``name~2``, and the buyer pays that page."""
    operator = await saga.start_operator()
    midtrans = operator.deps.midtrans
    real_create = midtrans.create_snap
    lost: list[str] = []

    async def answer_lost(order: str, *args: Any, **kwargs: Any) -> Any:
        if order in lost and duplicate == "worded-unknown":
            raise MidtransClientError(
                "snap failed", http_status=400, error_messages=["order_id tidak valid lagi"]
            )
        made = await real_create(order, *args, **kwargs)
        if not lost:
            lost.append(order)
            raise MidtransError("read timeout")  # made at Midtrans, unheard here
        return made

    midtrans.create_snap = answer_lost  # type: ignore[method-assign,assignment]
    p = await product(saga, stock=2)
    name = await saga.create(items=[(p, 10_000, 1)], paymentTTLSeconds=600)
    body = await saga.wait_phase(name, "AwaitingPayment")
    assert lost == [name]
    assert body["status"]["payment"]["midtransOrderId"] == f"{name}~2"
    async with journal(saga) as readmodel:
        pages = await readmodel.payment_pages(name)
    assert [(page.midtrans_order_id, page.shown) for page in pages] == [
        (name, False),
        (f"{name}~2", True),
    ]
    paid = await saga.sandbox(f"{name}~2", "pay", payment_type="bank_transfer")
    assert paid.status_code == 200, paid.text
    await saga.wait_phase(name, "Settled")
    await wait_stock(saga, p, (1, 0))


# --- watch gaps ------------------------------------------------------------------------


async def test_deleted_during_a_watch_gap_is_released_by_the_sweep(saga: SagaEnv) -> None:
    operator, p, name = await awaiting_payment(saga, stock=2)
    await wait_stock(saga, p, (2, 1))
    await operator.watcher.stop()  # the watch is cut off; the cache still holds the checkout
    saga.platform.kubectl("delete", "checkout", name, namespace=saga.namespace)
    assert (saga.namespace, name) in operator.reconciler.cache
    released = await operator.reconciler.sweep(saga.namespace, dt.timedelta(0))
    assert released == 1
    await wait_stock(saga, p, (2, 0))
    assert (saga.namespace, name) not in operator.reconciler.cache


async def test_a_live_checkout_missing_from_the_cache_is_read_again_by_the_sweep(
    saga: SagaEnv,
) -> None:
    """The sweep lists metadata only (uids, no bodies); a live checkout it finds that the
    cache lacks is read whole and looked at again."""
    operator, _, name = await awaiting_payment(saga, stock=2)
    await operator.watcher.stop()
    key = (saga.namespace, name)
    uid = operator.reconciler.cache.pop(key)["metadata"]["uid"]
    assert await operator.deps.kube.uids(saga.namespace) == {key: uid}
    released = await operator.reconciler.sweep(saga.namespace, dt.timedelta(0))
    assert released == 0
    body = operator.reconciler.cache[key]
    assert body["metadata"]["uid"] == uid and body["status"]["phase"] == "AwaitingPayment"
    assert body["spec"]["items"]  # read whole, not from the metadata list


async def test_gone_on_refresh_is_a_deletion(saga: SagaEnv) -> None:
    operator, p, name = await awaiting_payment(saga, stock=2)
    await operator.watcher.stop()
    saga.platform.kubectl("delete", "checkout", name, namespace=saga.namespace)
    key = (saga.namespace, name)
    body = operator.reconciler.cache[key]
    assert body["status"]["phase"] == "AwaitingPayment"

    async def stale_write(_: dict[str, Any]) -> None:
        raise Retry("checkout changed")  # what a status write answered with 404 raises

    await operator.reconciler.exclusive(key, stale_write)
    assert key not in operator.reconciler.cache
    await wait_stock(saga, p, (2, 0))


# --- outages stop no loop --------------------------------------------------------------


async def test_journal_outage_stops_no_loop_and_loses_no_payment(saga: SagaEnv) -> None:
    """The journal unreachable for a while (its table renamed away): the inbox, the
    poller and the other loops keep running, and the payment notified meanwhile
    settles the checkout once it is back."""
    operator, p, name = await awaiting_payment(saga, stock=2)
    schema = saga.settings.db_schema
    conn = await asyncpg.connect(saga.platform.postgres_dsn)
    try:
        await conn.execute(f'ALTER TABLE "{schema}".checkouts RENAME TO checkouts_away')
        paid = await saga.sandbox(name, "pay", payment_type="bank_transfer")
        assert paid.status_code == 200, paid.text
        deps = operator.deps
        topology = deps.announcer.topology
        listener = await saga.platform.nats("payment-listener")
        try:
            payload = paid.json()["notifications"][-1]["payload"]
            await listener.jetstream().publish(
                topology.payment_subject,
                json.dumps(payload).encode(),
                stream=topology.payment_stream,
            )
        finally:
            await listener.close()

        async def tried_again() -> bool:  # the inbox read it, failed, and asked for it again
            info = await deps.announcer.js.consumer_info(
                topology.payment_stream, "checkout-operator"
            )
            return (info.num_redelivered or 0) >= 1

        await eventually(tried_again, within=30, interval=0.1)
        ended = [t.get_name() for t in operator.tasks if t.done()]
        assert ended == [], f"loops ended during the outage: {ended}"
    finally:
        await conn.execute(f'ALTER TABLE "{schema}".checkouts_away RENAME TO checkouts')
        await conn.close()
    await saga.wait_phase(name, "Settled")
    await wait_stock(saga, p, (1, 0))
