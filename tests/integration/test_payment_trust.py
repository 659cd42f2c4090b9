"""Money is trusted only when Midtrans confirms it, and every stray payment goes back.

On the real apiserver, Postgres, NATS, User and Product services and the Midtrans
sandbox process (which refuses what Midtrans refuses: refunds of captures, expiry
of challenged captures). Each test is an attack or an unlucky buyer from issue 8.
"""

from __future__ import annotations

import datetime as dt
import json
import uuid
from typing import Any

import httpx

from midtrans import compute_signature
from tests.helpers.waiting import eventually
from tests.integration.payment_signals import wait_sandbox
from tests.integration.saga_fixtures import SANDBOX_KEY, SagaEnv, condition
from tests.integration.test_saga_operator import product, wait_stock


async def publish_notification(saga: SagaEnv, payload: dict[str, str]) -> int:
    """Put a notification on the payment-status stream (as the listener, or an intruder,
    would) and wait until the operator's inbox has acknowledged it; its stream seq."""
    deps = saga.operator.deps
    topology = deps.announcer.topology
    listener = await saga.platform.nats("payment-listener")  # its NATS user, not the operator's
    try:
        ack = await listener.jetstream().publish(
            topology.payment_subject, json.dumps(payload).encode(), stream=topology.payment_stream
        )
    finally:
        await listener.close()

    async def acknowledged() -> bool:
        info = await deps.announcer.js.consumer_info(topology.payment_stream, "checkout-operator")
        return info.ack_floor is not None and (info.ack_floor.stream_seq or 0) >= ack.seq

    await eventually(acknowledged, within=30, interval=0.05)
    return int(ack.seq)


def signed(order_id: str, status: str, code: str, gross: str, **extra: str) -> dict[str, str]:
    return {
        "order_id": order_id,
        "transaction_status": status,
        "status_code": code,
        "gross_amount": gross,
        "signature_key": compute_signature(order_id, code, gross, SANDBOX_KEY),
        "currency": "IDR",
        **extra,
    }


def patch(saga: SagaEnv, name: str, body: dict[str, Any], subresource: str = "") -> None:
    """A merge patch by kubectl, as a person with write access would make it."""
    argv = ["patch", "checkout", name, "--type=merge", "-p", json.dumps(body)]
    if subresource:
        argv.append(f"--subresource={subresource}")
    saga.platform.kubectl(*argv, namespace=saga.namespace)


# --- trust boundaries ------------------------------------------------------------------


async def test_relabelled_pending_notification_on_the_stream_settles_nothing(
    saga: SagaEnv,
) -> None:
    await saga.start_operator(poll_interval=3600)  # only the inbox may act on payments
    p = await product(saga, stock=3)
    name = await saga.create(items=[(p, 10_000, 1)], paymentTTLSeconds=600)
    await saga.wait_phase(name, "AwaitingPayment")
    chosen = await saga.sandbox(name, "choose", payment_type="bank_transfer")
    assert chosen.status_code == 200, chosen.text
    # A genuine pending notification (201) with only transaction_status changed, and a
    # "validly signed" settlement for 1 IDR: both straight onto the stream.
    await publish_notification(saga, signed(name, "settlement", "201", "10000.00"))
    await publish_notification(saga, signed(name, "settlement", "200", "1.00"))
    body = await saga.get(name)
    assert body is not None and body["status"]["phase"] == "AwaitingPayment"
    assert body["status"]["payment"].get("transactionStatus") in (None, "pending")
    assert await saga.products.stock_of(p) == (3, 1)
    # A real payment still settles through the same inbox.
    await saga.sandbox(name, "pay", payment_type="bank_transfer")
    await publish_notification(saga, signed(name, "pending", "201", "10000.00"))
    await saga.wait_phase(name, "Settled")
    await wait_stock(saga, p, (2, 0))


async def test_status_claiming_settlement_is_corrected_not_settled(saga: SagaEnv) -> None:
    await saga.start_operator()
    p = await product(saga, stock=3)
    name = await saga.create(items=[(p, 10_000, 1)], paymentTTLSeconds=600)
    await saga.wait_phase(name, "AwaitingPayment")
    patch(saga, name, {"status": {"payment": {"transactionStatus": "settlement"}}}, "status")
    body = await saga.wait_for(name, lambda b: "UnverifiedPayment" in saga.warning_reasons(name))
    body = await saga.wait_for(
        name, lambda b: "transactionStatus" not in (b["status"].get("payment") or {})
    )
    assert body["status"]["phase"] == "AwaitingPayment"
    assert await saga.products.stock_of(p) == (3, 1)


async def test_phase_settled_written_by_hand_sells_nothing(saga: SagaEnv) -> None:
    await saga.start_operator()
    p = await product(saga, stock=3)
    name = await saga.create(items=[(p, 10_000, 1)], paymentTTLSeconds=600)
    await saga.wait_phase(name, "AwaitingPayment")
    patch(saga, name, {"status": {"phase": "Settled"}}, "status")
    body = await saga.wait_for(name, lambda b: "UnverifiedSettlement" in saga.warning_reasons(name))
    verified = condition(body, "PaymentVerified")
    assert verified is not None and verified["status"] == "False"
    # Written onto the whole resource, not onto the little the cache keeps of it.
    assert condition(body, "StockReserved") is not None and condition(body, "Ready") is not None
    await wait_stock(saga, p, (3, 0))  # released, not sold
    record = await saga.operator.deps.readmodel.get(name)
    assert record is not None and record.phase == "Cancelled" and record.paid_order_id is None
    # The page stays payable until its own expiry: money paid on it goes back.
    paid = await saga.sandbox(name, "pay", payment_type="bank_transfer")
    assert paid.status_code == 200, paid.text
    await publish_notification(saga, signed(name, "settlement", "200", "10000.00"))
    await wait_sandbox(saga, name, "refund")
    assert await saga.products.stock_of(p) == (3, 0)


# --- money after the end ----------------------------------------------------------------


async def test_payment_after_the_checkout_was_deleted_is_refunded(saga: SagaEnv) -> None:
    await saga.start_operator()
    p = await product(saga, stock=2)
    name = await saga.create(items=[(p, 10_000, 1)], paymentTTLSeconds=600)
    await saga.wait_phase(name, "AwaitingPayment")
    saga.platform.kubectl("delete", "checkout", name, namespace=saga.namespace)
    await wait_stock(saga, p, (2, 0))
    # No payment method was chosen, so Midtrans answered 404 to cancel: the Snap page
    # is still payable, and the buyer pays on it.
    paid = await saga.sandbox(name, "pay", payment_type="bank_transfer")
    assert paid.status_code == 200, paid.text
    state = await wait_sandbox(saga, name, "refund")
    assert state["refunded_amount"] == 10_000
    assert await saga.products.stock_of(p) == (2, 0)


async def test_cancelled_checkout_page_paid_later_is_refunded_and_hands_out_no_link(
    saga: SagaEnv,
) -> None:
    await saga.start_operator()
    p = await product(saga, stock=2)
    name = await saga.create(items=[(p, 10_000, 1)], paymentTTLSeconds=600)
    await saga.wait_phase(name, "AwaitingPayment")
    patch(saga, name, {"spec": {"cancelRequested": True}})
    body = await saga.wait_phase(name, "Cancelled")
    payment = body["status"].get("payment") or {}
    assert "redirectUrl" not in payment and "snapToken" not in payment
    await saga.sandbox(name, "pay", payment_type="bank_transfer")
    await wait_sandbox(saga, name, "refund")
    body = await saga.wait_for(name, lambda b: condition(b, "LatePayment") is not None)
    late = condition(body, "LatePayment")
    assert late is not None and late["reason"] == "Refunded"
    assert body["status"]["phase"] == "Cancelled"


# --- late card payments -----------------------------------------------------------------


async def test_late_card_capture_is_voided_not_refunded(saga: SagaEnv) -> None:
    await saga.start_operator()
    p = await product(saga, stock=2)
    name = await saga.create(items=[(p, 10_000, 1)], paymentTTLSeconds=1)
    await saga.wait_phase(name, "Expired", within=20)
    captured = await saga.sandbox(name, "force-capture", fraud="accept")
    assert captured.status_code == 200, captured.text
    state = await wait_sandbox(saga, name, "cancel")
    assert state["refunds"] == []  # never "refunded": Midtrans refuses that for a capture
    body = await saga.wait_for(name, lambda b: condition(b, "LatePayment") is not None)
    late = condition(body, "LatePayment")
    assert late is not None and late["reason"] == "Voided"
    await wait_stock(saga, p, (2, 0))


async def test_challenged_capture_at_expiry_is_cancelled(saga: SagaEnv) -> None:
    await saga.start_operator()
    p = await product(saga, stock=2)
    name = await saga.create(items=[(p, 10_000, 1)], paymentTTLSeconds=3)
    await saga.wait_phase(name, "AwaitingPayment")
    held = await saga.sandbox(name, "pay", payment_type="credit_card", fraud="challenge")
    assert held.status_code == 200, held.text
    await saga.wait_phase(name, "Expired", within=30)
    state = await wait_sandbox(saga, name, "cancel")
    assert state["fraud_status"] == "challenge"
    await wait_stock(saga, p, (2, 0))


async def test_refused_refund_is_retried_surfaced_and_then_done(saga: SagaEnv) -> None:
    await saga.start_operator(refund_retry_base=dt.timedelta(seconds=0.5))
    p = await product(saga, stock=2)
    name = await saga.create(items=[(p, 10_000, 1)], paymentTTLSeconds=1)
    await saga.wait_phase(name, "Expired", within=20)
    refused = await saga.sandbox(name, "refuse-refunds", refuse=True)
    assert refused.status_code == 200, refused.text
    await saga.sandbox(name, "force-settle")
    body = await saga.wait_for(name, lambda b: condition(b, "RefundFailed") is not None)
    failed = condition(body, "RefundFailed")
    assert failed is not None and failed["status"] == "True", failed
    # The Event follows the condition's write (a moment later under load).
    await eventually(lambda: "RefundRefused" in saga.warning_reasons(name), 30, 0.5)
    watched = await saga.operator.deps.returns.get(name)
    assert watched is not None and watched.state == "refused" and watched.attempts >= 1

    # Refused again at least once more: it is retried, not marked done.
    async def refused_twice() -> bool:
        again = await saga.operator.deps.returns.get(name)
        return again is not None and again.attempts >= 2

    await eventually(refused_twice, within=30, interval=0.05)
    assert (await saga.sandbox_state(name))["transaction_status"] == "settlement"
    # A person fixes it at Midtrans; the next try goes through and the flag turns off.
    await saga.sandbox(name, "refuse-refunds", refuse=False)
    await wait_sandbox(saga, name, "refund")
    body = await saga.wait_for(
        name, lambda b: (condition(b, "RefundFailed") or {}).get("status") == "False"
    )
    watched = await saga.operator.deps.returns.get(name)
    assert watched is not None and watched.state == "returned"


async def test_money_on_an_order_never_made_for_the_checkout_buys_nothing_and_is_left_alone(
    saga: SagaEnv,
) -> None:
    """A Snap order for the checkout's id at 1 IDR exists first (another release's
    checkout of the same name on one merchant account, or someone with the merchant
    key): paying it must not buy the goods, and it is not this operator's to give back.
    Refunding it took the money of whatever its maker sold (helper review, session 14)."""
    await saga.start_operator(poll_interval=3600)
    p = await product(saga, stock=2)
    name = f"order-decoy-{uuid.uuid4().hex[:8]}"
    async with httpx.AsyncClient(base_url=saga.midtrans_url, auth=(SANDBOX_KEY, "")) as http:
        decoy = await http.post(
            "/snap/v1/transactions",
            json={
                "transaction_details": {"order_id": name, "gross_amount": 1},
                "item_details": [{"id": "x", "name": "x", "price": 1, "quantity": 1}],
            },
        )
        assert decoy.status_code == 201, decoy.text
    await saga.create(name, items=[(p, 10_000, 1)], paymentTTLSeconds=600)
    await saga.wait_phase(name, "AwaitingPayment")
    assert await saga.midtrans_order(name) == f"{name}~2"  # the decoy's id was taken
    paid = await saga.sandbox(name, "pay", payment_type="bank_transfer")
    assert paid.status_code == 200, paid.text
    genuine = paid.json()["notifications"][-1]["payload"]
    await publish_notification(saga, genuine)  # a genuine, validly signed settlement of 1 IDR
    pool = saga.operator.deps.returns.pool

    async def left_to_its_maker() -> bool:
        row = await pool.fetchrow(
            "SELECT state, returned_how FROM payment_returns WHERE midtrans_order_id = $1", name
        )
        return row is not None and (row["state"], row["returned_how"]) == ("closed", "not-ours")

    await eventually(left_to_its_maker, within=30, interval=0.05)
    state = await saga.sandbox_state(name)
    assert (state["transaction_status"], state["refunds"]) == ("settlement", []), state
    body = await saga.get(name)
    assert body is not None and body["status"]["phase"] == "AwaitingPayment"
    assert "transactionStatus" not in body["status"]["payment"], body["status"]["payment"]
    assert await saga.products.stock_of(p) == (2, 1)
    # The checkout's own page still sells it.
    own = await saga.sandbox(f"{name}~2", "pay", payment_type="bank_transfer")
    assert own.status_code == 200, own.text
    await publish_notification(saga, own.json()["notifications"][-1]["payload"])
    await saga.wait_phase(name, "Settled")
    await wait_stock(saga, p, (1, 0))


async def test_settlement_that_lost_its_status_write_to_an_ending_is_refunded(
    saga: SagaEnv,
) -> None:
    """The race of settlement and expiry, fixed in one order: the settlement journaled
    its payment, then its status write lost to another ending (here a cancel). The
    checkout sold nothing, so money on that very order goes back (CI caught it kept)."""
    await saga.start_operator()
    p = await product(saga, stock=2)
    name = await saga.create(items=[(p, 10_000, 1)], paymentTTLSeconds=600)
    await saga.wait_phase(name, "AwaitingPayment")
    order = await saga.midtrans_order(name)
    # What settle() journals right before its compare-and-swap, which then loses.
    await saga.operator.deps.readmodel.mark_paid(name, order, 10_000)
    patch(saga, name, {"spec": {"cancelRequested": True}})
    await saga.wait_phase(name, "Cancelled")
    await wait_stock(saga, p, (2, 0))
    paid = await saga.sandbox(order, "pay", payment_type="bank_transfer")
    assert paid.status_code == 200, paid.text
    state = await wait_sandbox(saga, order, "refund")
    assert state["refunded_amount"] == 10_000
    body = await saga.wait_for(name, lambda b: condition(b, "LatePayment") is not None)
    assert body["status"]["phase"] == "Cancelled"
    record = await saga.operator.deps.readmodel.get(name)
    assert record is not None and record.paid_order_id is None  # the stale claim is gone
    assert await saga.products.stock_of(p) == (2, 0)
