"""The Checkout saga end to end on the real apiserver, services and Midtrans sandbox."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import uuid
from dataclasses import dataclass
from typing import Any

import pytest
import redis.asyncio as aioredis
from arq.jobs import Job, JobResult, JobStatus

from checkout_operator import actions
from checkout_operator.clients.announcer import expiry_job_id
from checkout_operator.saga import (
    Action,
    PaymentState,
    Plan,
    View,
    Voucher,
    parse_timestamp,
    timestamp,
)
from checkout_operator.saga import plan as saga_plan
from midtrans import MidtransServerError
from product_service import store
from tests.helpers.waiting import budget, eventually
from tests.integration.payment_signals import midtrans_quiet, wait_sandbox
from tests.integration.saga_fixtures import SagaEnv, condition


async def product(saga: SagaEnv, price: int = 10_000, stock: int = 10) -> str:
    return await saga.products.product(price=price, stock=stock)


async def test_happy_path_to_settled_with_few_writes(saga: SagaEnv) -> None:
    await saga.start_operator(fee=2_500)
    a = await product(saga, price=10_000, stock=5)
    b = await product(saga, price=4_000, stock=5)
    name = await saga.create(items=[(a, 10_000, 2), (b, 4_000, 1)], paymentTTLSeconds=600)

    body = await saga.wait_phase(name, "AwaitingPayment")
    status = body["status"]
    assert status["amounts"] == {"subtotal": 24_000, "fees": 2_500, "discount": 0, "total": 26_500}
    assert status["payment"]["snapToken"] and status["payment"]["redirectUrl"]
    assert status["orderId"] == name and status["expiresAt"]
    assert [h["phase"] for h in status["history"]] == ["Authorized", "Reserved", "AwaitingPayment"]
    assert await saga.products.stock_of(a) == (5, 2)

    # The buyer pays at Midtrans; the poller notices and settles.
    paid = await saga.sandbox(name, "pay", payment_type="bank_transfer")
    assert paid.status_code == 200, paid.text
    body = await saga.wait_phase(name, "Settled")
    assert body["status"]["payment"]["transactionStatus"] == "settlement"
    assert body["status"]["payment"]["paidAt"]

    await wait_stock(saga, a, (3, 0))
    await wait_stock(saga, b, (4, 0))
    record = await saga.operator.deps.readmodel.get(name)
    assert record is not None and record.phase == "Settled"
    assert record.committed_published and record.final_event_published
    history = await saga.operator.deps.readmodel.history(name)
    assert [p for p, _ in history] == [
        "Pending",
        "Authorized",
        "Reserved",
        "AwaitingPayment",
        "Settled",
    ]
    # create + one status write to AwaitingPayment + one to Settled.
    assert saga.api_writes(name) == ["create", "patch/status", "patch/status"]
    events = saga.events(name)
    # CHECKOUT_EVENTS=milestones (the default): the payment page and the ending only.
    assert sorted(events) == ["Paid", "PaymentPageReady"]


@pytest.mark.parametrize("case", ["user", "product", "stock", "price", "voucher", "free"])
async def test_rejected_before_stock_is_held(saga: SagaEnv, case: str) -> None:
    # A voucher that covers the whole order leaves 0 to pay: Midtrans takes no such
    # payment, and the goods are not given away.
    await saga.start_operator(vouchers={"FREE": Voucher("FREE", percent=100)})
    p = await product(saga, price=5_000, stock=0 if case == "stock" else 3)
    spec: dict[str, Any] = {}
    items = [(p, 4_999 if case == "price" else 5_000, 1)]
    if case == "product":
        items = [("no-such-product", 5_000, 1)]
    if case == "voucher":
        spec["voucher"] = "NOPE"
    if case == "free":
        spec["voucher"] = "FREE"
    if case == "user":
        saga.user_id = str(uuid.uuid4())
    name = await saga.create(items=items, **spec)
    body = await saga.wait_phase(name, "Rejected")
    expected = {
        "user": "Unauthorized",
        "product": "ProductNotFound",
        "stock": "OutOfStock",
        "price": "PriceMismatch",
        "voucher": "InvalidVoucher",
        "free": "InvalidVoucher",
    }[case]
    assert body["status"]["failure"]["reason"] == expected
    assert body["status"]["failure"]["message"]
    assert await saga.products.stock_of(p) == ((0, 0) if case == "stock" else (3, 0))
    assert saga.api_writes(name) == ["create", "patch/status"]


async def wait_stock(saga: SagaEnv, product_id: str, expected: tuple[int, int]) -> None:
    """Until the product's (stock, reserved) is ``expected``."""
    seen: list[tuple[int, int]] = []

    async def there() -> bool:
        seen.append(await saga.products.stock_of(product_id))
        return seen[-1] == expected

    await eventually(
        there, within=15, interval=0.05, failure=lambda: f"{product_id}: {seen[-1]} != {expected}"
    )


async def test_payment_page_failure_cancels_and_restores_stock(saga: SagaEnv) -> None:
    await saga.start_operator(midtrans_key="wrong-server-key")
    p = await product(saga, stock=4)
    name = await saga.create(items=[(p, 10_000, 3)])
    body = await saga.wait_phase(name, "Cancelled")
    assert body["status"]["failure"]["reason"] == "PaymentSetupFailed"
    assert "401" in body["status"]["failure"]["message"]
    await wait_stock(saga, p, (4, 0))


def without_the_operators_deadline(monkeypatch: pytest.MonkeyPatch) -> None:
    """The operator never expires a checkout by its own clock: no wake-up at its deadline
    and no expiry step past it (an expiry Midtrans reports would still count)."""

    def plan(
        view: View,
        now: dt.datetime,
        ttl: dt.timedelta | None,
        deadline: dt.datetime | None = None,
    ) -> Plan:
        step = saga_plan(view, now, ttl, deadline)
        if step.action is Action.WAIT or (
            step.action is Action.EXPIRE and view.payment is not PaymentState.EXPIRED
        ):
            return Plan(Action.WAIT)
        return step

    monkeypatch.setattr(actions, "plan", plan)


async def expiry_job(saga: SagaEnv, name: str) -> tuple[JobStatus, JobResult | None]:
    """The arq expiry job of a checkout: its status and, once it ran, its result."""
    body = await saga.get(name)
    assert body is not None
    redis = aioredis.Redis.from_url(saga.settings.redis_url.value)
    try:
        job = Job(
            expiry_job_id(body["metadata"]["uid"]), redis, _queue_name=saga.settings.arq_queue
        )
        return await job.status(), await job.result_info()
    finally:
        await redis.aclose()


async def test_the_expiry_job_alone_expires_an_unpaid_checkout(
    saga: SagaEnv, monkeypatch: pytest.MonkeyPatch
) -> None:
    without_the_operators_deadline(monkeypatch)
    await saga.start_operator()
    p = await product(saga, stock=4)
    name = await saga.create(items=[(p, 10_000, 3)], paymentTTLSeconds=2)
    await saga.wait_phase(name, "AwaitingPayment")
    body = await saga.wait_phase(name, "Expired", within=30)
    assert body["status"]["failure"]["reason"] == "PaymentExpired"

    # The worker's job did it: it ran, and its answer was the write that expired it
    # (arq stores the result a moment after the job's write: wait for it).
    async def job_done() -> bool:
        return (await expiry_job(saga, name))[0] is JobStatus.complete

    await eventually(job_done, within=30, interval=0.05)
    _, result = await expiry_job(saga, name)
    assert result is not None and result.success and result.result == "Expired", result
    await wait_stock(saga, p, (4, 0))
    record = await saga.operator.deps.readmodel.get(name)
    assert record is not None and record.expiry_scheduled and record.final_event_published


async def test_the_operators_deadline_alone_expires_an_unpaid_checkout(saga: SagaEnv) -> None:
    await saga.start_operator(worker=False)
    p = await product(saga, stock=4)
    name = await saga.create(items=[(p, 10_000, 3)], paymentTTLSeconds=2)
    await saga.wait_phase(name, "AwaitingPayment")
    body = await saga.wait_phase(name, "Expired", within=30)
    assert body["status"]["failure"]["reason"] == "PaymentExpired"
    await wait_stock(saga, p, (4, 0))  # the final event went out (published, then applied)

    async def journaled() -> bool:  # the journal marks it right after the publish
        record = await saga.operator.deps.readmodel.get(name)
        return record is not None and record.expiry_scheduled and record.final_event_published

    await eventually(journaled, within=30, interval=0.05)
    # The job was scheduled (journaled above), but nobody ran it: the operator's wake-up
    # did, and the ending took the job off the queue.
    status, result = await expiry_job(saga, name)
    assert status is JobStatus.not_found and result is None


async def test_operator_expires_overdue_checkouts_when_the_job_is_lost(saga: SagaEnv) -> None:
    await saga.start_operator()
    p = await product(saga, stock=2)
    name = await saga.create(items=[(p, 10_000, 1)], paymentTTLSeconds=3)
    body = await saga.wait_phase(name, "AwaitingPayment")

    async def scheduled() -> bool:
        record = await saga.operator.deps.readmodel.get(name)
        return record is not None and record.expiry_scheduled

    await eventually(scheduled, within=15, interval=0.05)
    # Redis loses the job (and the whole queue).
    redis = aioredis.Redis.from_url(saga.settings.redis_url.value)
    assert await redis.delete(f"arq:job:{expiry_job_id(body['metadata']['uid'])}") == 1
    await redis.delete(saga.settings.arq_queue)
    await redis.aclose()
    await saga.wait_phase(name, "Expired", within=20)
    await wait_stock(saga, p, (2, 0))


# --- status edited by hand -------------------------------------------------------------


def patch_status(saga: SagaEnv, name: str, status: dict[str, Any]) -> None:
    """A merge patch of the status by kubectl, as a person with ``checkouts/status`` makes it."""
    body = json.dumps({"status": status})
    saga.platform.kubectl(
        "patch", "checkout", name, "--subresource=status", "--type=merge", "-p", body,
        namespace=saga.namespace,
    )  # fmt: skip


@pytest.mark.parametrize("expirer", ["job", "operator"])
async def test_expires_at_moved_later_by_hand_expires_at_the_journaled_deadline(
    saga: SagaEnv, monkeypatch: pytest.MonkeyPatch, expirer: str
) -> None:
    """status.expiresAt is a view of the deadline journaled with the terms, by which the
    Snap page lapses. Moved a year later by hand, it holds the stock no longer: the expiry
    job and the operator's own wake-up, each alone, expire the checkout at the journal's."""
    if expirer == "job":
        without_the_operators_deadline(monkeypatch)
    await saga.start_operator(worker=expirer == "job")
    p = await product(saga, stock=2)
    name = await saga.create(items=[(p, 10_000, 1)], paymentTTLSeconds=4)
    await saga.wait_phase(name, "AwaitingPayment")
    record = await saga.operator.deps.readmodel.get(name)
    assert record is not None and record.expires_at is not None and record.expiry_scheduled
    later = timestamp(record.expires_at + dt.timedelta(days=365))
    patch_status(saga, name, {"expiresAt": later})
    edited = await saga.get(name)  # edited while it still awaited payment
    assert edited is not None and edited["status"]["phase"] == "AwaitingPayment", edited
    assert edited["status"]["expiresAt"] == later

    body = await saga.wait_phase(name, "Expired", within=30)
    assert body["status"]["failure"]["reason"] == "PaymentExpired"
    await wait_stock(saga, p, (2, 0))
    if expirer == "job":  # it ran and expired it: not put off to the edited date

        async def job_done() -> bool:
            return (await expiry_job(saga, name))[0] is JobStatus.complete

        await eventually(job_done, within=30, interval=0.05)
        _, result = await expiry_job(saga, name)
        assert result is not None and result.result == "Expired", result


async def awaiting_by_hand(
    saga: SagaEnv, monkeypatch: pytest.MonkeyPatch, ttl: int, *, midtrans_fails: bool = False
) -> tuple[str, str]:
    """A new checkout whose phase a person moves to AwaitingPayment (the CRD allows
    Pending -> AwaitingPayment) while the start step waits for Midtrans' payment page, so
    the step's own status write loses the compare-and-swap. Midtrans then answers (the
    page and terms are journaled), or with ``midtrans_fails`` fails once (nothing beyond
    the attempt is). The checkout's name and its product (2 in stock, 1 reserved)."""
    operator = await saga.start_operator()
    midtrans = operator.deps.midtrans
    create_snap = midtrans.create_snap
    asked, answer = asyncio.Event(), asyncio.Event()

    async def slow_snap(*args: Any, **kwargs: Any) -> Any:
        if not asked.is_set():
            asked.set()
            await answer.wait()
            if midtrans_fails:
                raise MidtransServerError("Midtrans away", http_status=503)
        return await create_snap(*args, **kwargs)

    monkeypatch.setattr(midtrans, "create_snap", slow_snap)
    p = await product(saga, stock=2)
    name = await saga.create(items=[(p, 10_000, 1)], paymentTTLSeconds=ttl)
    await asyncio.wait_for(asked.wait(), budget(30))
    await wait_stock(saga, p, (2, 1))
    patch_status(saga, name, {"phase": "AwaitingPayment"})
    answer.set()
    return name, p


def shows_a_page(body: dict[str, Any]) -> bool:
    return bool(((body.get("status") or {}).get("payment") or {}).get("snapToken"))


async def test_awaiting_payment_written_by_hand_ahead_of_the_operator_gets_the_journals_page(
    saga: SagaEnv, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The operator's write lost to the hand-written phase: the resource still gets the
    page, amounts and deadline the journal holds (so the buyer has a link and the poller
    asks about it), the journal is levelled and announced, and a payment on it sells."""
    name, p = await awaiting_by_hand(saga, monkeypatch, ttl=600)
    body = await saga.wait_for(name, shows_a_page)
    record = await saga.operator.deps.readmodel.get(name)
    assert record is not None and record.expires_at is not None
    status = body["status"]
    assert status["phase"] == "AwaitingPayment"
    assert status["payment"] == {
        "snapToken": record.snap_token,
        "redirectUrl": record.redirect_url,
        "midtransOrderId": record.midtrans_order_id,
    }
    assert status["expiresAt"] == timestamp(record.expires_at)
    assert status["amounts"]["total"] == record.total == 10_000
    assert [h["phase"] for h in status["history"]] == ["Authorized", "Reserved", "AwaitingPayment"]
    assert (condition(body, "PaymentReady") or {}).get("status") == "True", body

    async def announced() -> bool:
        journal = await saga.operator.deps.readmodel.get(name)
        return (
            journal is not None
            and journal.phase == "AwaitingPayment"
            and (journal.committed_published and journal.expiry_scheduled)
        )

    await eventually(announced, within=15, interval=0.05)
    paid = await saga.sandbox(name, "pay", payment_type="bank_transfer")
    assert paid.status_code == 200, paid.text
    await saga.wait_phase(name, "Settled")
    await wait_stock(saga, p, (1, 0))


async def test_awaiting_payment_written_by_hand_ahead_of_the_operator_expires(
    saga: SagaEnv, monkeypatch: pytest.MonkeyPatch
) -> None:
    """... and unpaid, it expires at the journaled deadline and its stock comes back."""
    name, p = await awaiting_by_hand(saga, monkeypatch, ttl=2)
    body = await saga.wait_phase(name, "Expired", within=30)
    assert body["status"]["failure"]["reason"] == "PaymentExpired"
    await wait_stock(saga, p, (2, 0))


async def test_awaiting_payment_written_by_hand_before_any_page_is_journaled_cancels(
    saga: SagaEnv, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Midtrans failed meanwhile, so the journal holds no page and no deadline: none was
    ever offered. The checkout is cancelled and its stock released, not held for ever."""
    name, p = await awaiting_by_hand(saga, monkeypatch, ttl=600, midtrans_fails=True)
    body = await saga.wait_phase(name, "Cancelled")
    assert body["status"]["failure"]["reason"] == "PaymentSetupFailed"
    assert "written before" in body["status"]["failure"]["message"]
    assert not shows_a_page(body)
    await wait_stock(saga, p, (2, 0))
    record = await saga.operator.deps.readmodel.get(name)
    assert record is not None and record.phase == "Cancelled" and record.total is None


async def test_cancel_request_cancels_at_midtrans_and_restores_stock(saga: SagaEnv) -> None:
    await saga.start_operator()
    p = await product(saga, stock=4)
    name = await saga.create(items=[(p, 10_000, 2)])
    await saga.wait_phase(name, "AwaitingPayment")
    await saga.sandbox(name, "choose", payment_type="bank_transfer")
    saga.request_cancel(name)
    body = await saga.wait_phase(name, "Cancelled")
    assert body["status"]["failure"]["reason"] == "CancelRequested"
    await wait_stock(saga, p, (4, 0))
    assert (await saga.sandbox_state(name))["transaction_status"] == "cancel"


async def test_deleting_a_checkout_that_holds_stock_releases_it(saga: SagaEnv) -> None:
    await saga.start_operator()
    p = await product(saga, stock=4)
    name = await saga.create(items=[(p, 10_000, 2)])
    await saga.wait_phase(name, "AwaitingPayment")
    saga.platform.kubectl("delete", "checkout", name, namespace=saga.namespace)
    await wait_stock(saga, p, (4, 0))
    record = await saga.operator.deps.readmodel.get(name)
    assert record is not None and record.phase == "Cancelled" and record.deleted_at is not None


async def test_deletion_while_the_operator_is_down_is_released_on_restart(saga: SagaEnv) -> None:
    first = await saga.start_operator()
    p = await product(saga, stock=4)
    name = await saga.create(items=[(p, 10_000, 2)])
    await saga.wait_phase(name, "AwaitingPayment")
    await first.shutdown()
    saga.platform.kubectl("delete", "checkout", name, namespace=saga.namespace)
    second = await saga.start_operator()
    released = await second.reconciler.sweep(saga.namespace, min_age=dt.timedelta(0))
    assert released == 1
    await wait_stock(saga, p, (4, 0))


async def test_late_payment_is_refunded_and_flagged(saga: SagaEnv) -> None:
    await saga.start_operator()
    p = await product(saga, stock=4)
    name = await saga.create(items=[(p, 10_000, 1)], paymentTTLSeconds=1)
    await saga.wait_phase(name, "Expired", within=20)
    forced = await saga.sandbox(name, "force-settle")
    assert forced.status_code == 200, forced.text
    body = await saga.wait_for(name, late_payment_flagged)
    assert (condition(body, "LatePayment") or {}).get("reason") == "Refunded", body
    await eventually(lambda: "LatePayment" in saga.warning_reasons(name), within=15)
    # Midtrans' last word (the refund, notified) taken in: the money is back, the
    # checkout still Expired and nothing on it says paid.
    state = await midtrans_quiet(saga, name)
    assert state["transaction_status"] == "refund" and state["refunded_amount"] == 10_000, state
    seen = await saga.get(name)
    assert seen is not None and seen["status"]["phase"] == "Expired", seen
    assert not paid_on(seen), seen
    await wait_stock(saga, p, (4, 0))


@dataclass(frozen=True)
class Payment:
    """What the buyer saw of one payment at Midtrans."""

    name: str
    accepted: bool  # Midtrans took the money
    before_deadline: bool  # and said so before the checkout's expiresAt


async def pay_around_the_deadline(saga: SagaEnv, name: str, offset: float | None) -> Payment:
    """Pay ``offset`` seconds from the checkout's expiresAt (as soon as the page exists
    if that has passed); ``None``: a bank transfer chosen at once, paid only once the
    checkout is seen Expired and Midtrans closed the transaction (so it refuses)."""
    body = await saga.wait_for(name, lambda b: bool((b.get("status") or {}).get("expiresAt")))
    deadline = parse_timestamp(body["status"]["expiresAt"])
    assert deadline is not None
    order = await saga.midtrans_order(name)
    if offset is None:
        chosen = await saga.sandbox(order, "choose", payment_type="bank_transfer")
        assert chosen.status_code == 200, chosen.text
        await saga.wait_phase(name, "Expired")
        await wait_sandbox(saga, order, "expire", "cancel")
    else:
        moment = deadline + dt.timedelta(seconds=offset)
        await asyncio.sleep(max(0.0, (moment - dt.datetime.now(dt.UTC)).total_seconds()))
    reply = await saga.sandbox(order, "pay", payment_type="bank_transfer")
    answered = dt.datetime.now(dt.UTC)
    return Payment(name, reply.status_code == 200, reply.status_code == 200 and answered < deadline)


def late_payment_flagged(body: dict[str, Any]) -> bool:
    flag = condition(body, "LatePayment")
    return flag is not None and flag["status"] == "True"


def paid_on(body: dict[str, Any]) -> bool:
    """Whether the Checkout's status.payment says Midtrans holds money for it."""
    payment = (body.get("status") or {}).get("payment") or {}
    return bool(payment.get("paidAt")) or payment.get("transactionStatus") in (
        "settlement",
        "capture",
    )


async def test_settlement_racing_expiry_has_exactly_one_winner(saga: SagaEnv) -> None:
    """Payments land across the expiry window, from as soon as the page exists to after
    the checkout is seen expired. Midtrans decides the race: money it took before the
    operator's expiry wins (Settled, sold, kept); money after is given back (Expired,
    released, refunded and flagged); a transaction Midtrans closed takes none. Both
    endings must occur, each consistent."""
    await saga.start_operator()
    ttl = 4
    offsets: list[float | None] = [-ttl, -1.0, -0.5, -0.25, 0.0, 0.25, 0.5, 1.0, None]
    products = [await product(saga, stock=1) for _ in offsets]
    names = [await saga.create(items=[(p, 10_000, 1)], paymentTTLSeconds=ttl) for p in products]
    payments = await asyncio.gather(
        *(pay_around_the_deadline(saga, n, o) for n, o in zip(names, offsets, strict=True))
    )
    phases = {}
    for payment in payments:
        body = await saga.wait_phase(payment.name, "Settled", "Expired", within=60)
        phases[payment.name] = body["status"]["phase"]
    assert set(phases.values()) == {"Settled", "Expired"}, (phases, payments)
    assert not payments[-1].accepted, payments[-1]  # a closed transaction takes no money

    for payment, p in zip(payments, products, strict=True):
        name, phase = payment.name, phases[payment.name]
        order = await saga.midtrans_order(name)
        if phase == "Expired":
            assert not payment.before_deadline, f"{name}: money taken in time lost to the expiry"
            await wait_stock(saga, p, (1, 0))
            if payment.accepted:  # the money arrived anyway: it goes back, and says so
                await saga.wait_for(name, late_payment_flagged)
                state = await saga.sandbox_state(order)
                assert state["transaction_status"] == "refund", state
            else:
                # Midtrans refused the money: once its last word is delivered and taken
                # in, nothing was paid, on either side.
                state = await midtrans_quiet(saga, order)
                assert not state["settlement_time"] and not state["refunds"], state
                assert state["token_expired"] or state["transaction_status"] in (
                    "expire",
                    "cancel",
                ), state
                seen = await saga.get(name)
                assert seen is not None and seen["status"]["phase"] == "Expired", seen
                assert not paid_on(seen) and condition(seen, "LatePayment") is None, seen
        else:
            assert payment.accepted, f"{name}: settled without Midtrans taking the money"
            await wait_stock(saga, p, (0, 0))
        events = await store.events_for(saga.products.pool, name)
        final = {"Settled": "settled", "Expired": "expired"}[phase]
        applied = [(e["event_type"], e["outcome"]) for e in events if e["outcome"] == "applied"]
        assert applied == [("committed", "applied"), (final, "applied")], events
    # Every late payment has been refunded by now: a settled one was not.
    for name, phase in phases.items():
        if phase == "Settled":
            body = await saga.wait_phase(name, "Settled")
            state = await saga.sandbox_state(await saga.midtrans_order(name))
            assert state["transaction_status"] == "settlement", state
            assert condition(body, "LatePayment") is None, body


async def test_finished_checkouts_are_deleted_after_their_ttl_and_kept_in_postgres(
    saga: SagaEnv,
) -> None:
    await saga.start_operator(ttl_after_finished=dt.timedelta(seconds=1))
    p = await product(saga, stock=3)
    name = await saga.create(items=[(p, 10_000, 1)])
    await saga.wait_phase(name, "AwaitingPayment")
    await saga.sandbox(name, "pay", payment_type="bank_transfer")
    await saga.wait_phase(name, "Settled")

    async def deleted() -> bool:
        return await saga.get(name) is None

    await eventually(deleted, within=15, interval=0.05)
    # The whole life of a paid checkout: 4 writes to the Checkout object.
    assert saga.api_writes(name) == ["create", "patch/status", "patch/status", "delete"]

    async def archived() -> bool:  # marked right after the delete's answer, not with it
        record = await saga.operator.deps.readmodel.get(name)
        return record is not None and record.deleted_at is not None

    await eventually(archived, within=15, interval=0.05)
    record = await saga.operator.deps.readmodel.get(name)
    assert record is not None and record.phase == "Settled"
