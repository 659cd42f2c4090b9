"""The Checkout saga end to end on the real apiserver, services and Midtrans sandbox."""

from __future__ import annotations

import asyncio
import datetime as dt
import uuid
from typing import Any

import pytest
import redis.asyncio as aioredis

from checkout_operator.clients.announcer import expiry_job_id
from tests.integration.saga_fixtures import SagaEnv


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

    async def sold() -> bool:
        return await saga.products.stock_of(a) == (3, 0) and await saga.products.stock_of(b) == (
            4,
            0,
        )

    for _ in range(200):
        if await sold():
            break
        await asyncio.sleep(0.05)
    assert await sold()
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
    events = saga.platform.kubectl(
        "get",
        "events",
        f"--field-selector=involvedObject.name={name}",
        "-o",
        "jsonpath={.items[*].reason}",
        namespace=saga.namespace,
    ).stdout.split()
    assert sorted(events) == sorted(["UserAuthorized", "StockReserved", "PaymentPageReady", "Paid"])


@pytest.mark.parametrize("case", ["user", "product", "stock", "price", "voucher"])
async def test_rejected_before_stock_is_held(saga: SagaEnv, case: str) -> None:
    await saga.start_operator()
    p = await product(saga, price=5_000, stock=0 if case == "stock" else 3)
    spec: dict[str, Any] = {}
    items = [(p, 4_999 if case == "price" else 5_000, 1)]
    if case == "product":
        items = [("no-such-product", 5_000, 1)]
    if case == "voucher":
        spec["voucher"] = "NOPE"
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
    }[case]
    assert body["status"]["failure"]["reason"] == expected
    assert body["status"]["failure"]["message"]
    assert await saga.products.stock_of(p) == ((0, 0) if case == "stock" else (3, 0))
    assert saga.api_writes(name) == ["create", "patch/status"]


async def wait_stock(saga: SagaEnv, product_id: str, expected: tuple[int, int]) -> None:
    for _ in range(300):
        if await saga.products.stock_of(product_id) == expected:
            return
        await asyncio.sleep(0.05)
    assert await saga.products.stock_of(product_id) == expected


async def test_payment_page_failure_cancels_and_restores_stock(saga: SagaEnv) -> None:
    await saga.start_operator(midtrans_key="wrong-server-key")
    p = await product(saga, stock=4)
    name = await saga.create(items=[(p, 10_000, 3)])
    body = await saga.wait_phase(name, "Cancelled")
    assert body["status"]["failure"]["reason"] == "PaymentSetupFailed"
    assert "401" in body["status"]["failure"]["message"]
    await wait_stock(saga, p, (4, 0))


async def test_unpaid_checkout_expires_and_restores_stock(saga: SagaEnv) -> None:
    await saga.start_operator()
    p = await product(saga, stock=4)
    name = await saga.create(items=[(p, 10_000, 3)], paymentTTLSeconds=2)
    await saga.wait_phase(name, "AwaitingPayment")
    body = await saga.wait_phase(name, "Expired", within=20)
    assert body["status"]["failure"]["reason"] == "PaymentExpired"
    await wait_stock(saga, p, (4, 0))
    record = await saga.operator.deps.readmodel.get(name)
    assert record is not None and record.expiry_scheduled and record.final_event_published


async def test_operator_expires_overdue_checkouts_when_the_job_is_lost(saga: SagaEnv) -> None:
    await saga.start_operator()
    p = await product(saga, stock=2)
    name = await saga.create(items=[(p, 10_000, 1)], paymentTTLSeconds=3)
    body = await saga.wait_phase(name, "AwaitingPayment")
    for _ in range(100):
        record = await saga.operator.deps.readmodel.get(name)
        if record is not None and record.expiry_scheduled:
            break
        await asyncio.sleep(0.05)
    # Redis loses the job (and the whole queue).
    redis = aioredis.Redis.from_url(saga.settings.redis_url.value)
    assert await redis.delete(f"arq:job:{expiry_job_id(body['metadata']['uid'])}") == 1
    await redis.delete(saga.settings.arq_queue)
    await redis.aclose()
    await saga.wait_phase(name, "Expired", within=20)
    await wait_stock(saga, p, (2, 0))


async def test_cancel_request_cancels_at_midtrans_and_restores_stock(saga: SagaEnv) -> None:
    await saga.start_operator()
    p = await product(saga, stock=4)
    name = await saga.create(items=[(p, 10_000, 2)])
    await saga.wait_phase(name, "AwaitingPayment")
    await saga.sandbox(name, "choose", payment_type="bank_transfer")
    saga.platform.kubectl(
        "patch",
        "checkout",
        name,
        "--type=merge",
        "-p",
        '{"spec": {"cancelRequested": true}}',
        namespace=saga.namespace,
    )
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
    body = await saga.wait_for(
        name,
        lambda b: any(
            c["type"] == "LatePayment" and c["status"] == "True"
            for c in b["status"].get("conditions", [])
        ),
    )
    assert body["status"]["phase"] == "Expired"
    state = await saga.sandbox_state(name)
    assert state["transaction_status"] == "refund", state
    await wait_stock(saga, p, (4, 0))
    reasons = saga.platform.kubectl(
        "get",
        "events",
        f"--field-selector=involvedObject.name={name},type=Warning",
        "-o",
        "jsonpath={.items[*].reason}",
        namespace=saga.namespace,
    ).stdout.split()
    assert "LatePayment" in reasons


async def test_settlement_racing_expiry_has_exactly_one_winner(saga: SagaEnv) -> None:
    await saga.start_operator()
    products = [await product(saga, stock=1) for _ in range(8)]
    names = [await saga.create(items=[(p, 10_000, 1)], paymentTTLSeconds=2) for p in products]
    for name in names:
        await saga.wait_phase(name, "AwaitingPayment")
    await asyncio.sleep(1.7)
    await asyncio.gather(*(saga.sandbox(n, "pay", payment_type="bank_transfer") for n in names))
    for name, p in zip(names, products, strict=True):
        body = await saga.wait_phase(name, "Settled", "Expired", within=30)
        phase = body["status"]["phase"]
        state = await saga.sandbox_state(name)
        if phase == "Settled":
            await wait_stock(saga, p, (0, 0))
        else:
            await wait_stock(saga, p, (1, 0))
            # If the money arrived anyway, it goes back.
            if state.get("transaction_status") in ("settlement", "refund"):
                await saga.wait_for(
                    name,
                    lambda b: any(
                        c["type"] == "LatePayment" for c in b["status"].get("conditions", [])
                    ),
                )


async def test_finished_checkouts_are_deleted_after_their_ttl_and_kept_in_postgres(
    saga: SagaEnv,
) -> None:
    await saga.start_operator(ttl_after_finished=dt.timedelta(seconds=1))
    p = await product(saga, stock=3)
    name = await saga.create(items=[(p, 10_000, 1)])
    await saga.wait_phase(name, "AwaitingPayment")
    await saga.sandbox(name, "pay", payment_type="bank_transfer")
    await saga.wait_phase(name, "Settled")
    for _ in range(200):
        if await saga.get(name) is None:
            break
        await asyncio.sleep(0.05)
    assert await saga.get(name) is None
    # The whole life of a paid checkout: 4 writes to the Checkout object.
    assert saga.api_writes(name) == ["create", "patch/status", "patch/status", "delete"]
    record = await saga.operator.deps.readmodel.get(name)
    assert record is not None and record.phase == "Settled" and record.deleted_at is not None
