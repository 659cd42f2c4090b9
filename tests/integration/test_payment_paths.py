"""Both ways a payment reaches the operator, each on its own: Midtrans' signed
notification through the real webhook listener and the payment inbox, and the
status poller."""

from __future__ import annotations

from typing import Any

from tests.helpers.waiting import eventually
from tests.integration.saga_fixtures import SagaEnv

NEVER = 24 * 3600.0  # seconds: a poller told to wait this long before its first look


async def awaiting_payment(saga: SagaEnv) -> tuple[str, str]:
    product = await saga.products.product(price=10_000, stock=3)
    name = await saga.create(items=[(product, 10_000, 1)], paymentTTLSeconds=600)
    await saga.wait_phase(name, "AwaitingPayment")
    return product, name


def notifications(state: dict[str, Any]) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = state["notifications"]
    return found


async def test_notified_payment_settles_through_the_listener_with_polling_off(
    saga: SagaEnv,
) -> None:
    operator = await saga.start_operator(poll_min_age=NEVER)
    product, name = await awaiting_payment(saga)
    paid = await saga.sandbox(name, "pay", payment_type="bank_transfer")
    assert paid.status_code == 200, paid.text
    body = await saga.wait_phase(name, "Settled")
    assert body["status"]["payment"]["transactionStatus"] == "settlement"
    sent = notifications(await saga.sandbox_state(name))
    assert [n["transaction_status"] for n in sent] == ["pending", "settlement"]
    for note in sent:  # each went to this test's listener and was taken (2xx)
        assert note["url"] == saga.listener_url and note["state"] == "delivered", note
    topology = operator.deps.announcer.topology
    inbox = await operator.deps.announcer.js.consumer_info(
        topology.payment_stream, "checkout-operator"
    )
    assert inbox.delivered.consumer_seq >= 2  # both statuses were read from the inbox

    async def sold() -> bool:
        return await saga.products.stock_of(product) == (2, 0)

    await eventually(sold, within=30)


async def test_polling_alone_settles_when_midtrans_notifies_nobody(saga: SagaEnv) -> None:
    # The session's Midtrans has no dashboard notification URL: without the
    # per-transaction override, nothing is sent and only the poller can learn of it.
    operator = await saga.start_operator(notifications=False)
    _, name = await awaiting_payment(saga)
    paid = await saga.sandbox(name, "pay", payment_type="bank_transfer")
    assert paid.status_code == 200, paid.text
    await saga.wait_phase(name, "Settled")
    sent = notifications(await saga.sandbox_state(name))
    assert [n["state"] for n in sent] == ["unsent", "unsent"]
    topology = operator.deps.announcer.topology
    inbox = await operator.deps.announcer.js.consumer_info(
        topology.payment_stream, "checkout-operator"
    )
    assert inbox.delivered.consumer_seq == 0


async def test_every_phase_change_gets_an_event_when_asked(saga: SagaEnv) -> None:
    await saga.start_operator(events="all")
    _, name = await awaiting_payment(saga)
    await saga.sandbox(name, "pay", payment_type="bank_transfer")
    await saga.wait_phase(name, "Settled")

    def reasons() -> list[str]:
        return sorted(saga.events(name))

    await eventually(lambda: len(reasons()) >= 4)
    assert reasons() == ["Paid", "PaymentPageReady", "StockReserved", "UserAuthorized"]
