"""The webhook listener settles the Checkout itself (issue 13 item 1), on the real
processes: the real listener app, the Midtrans sandbox, the apiserver, the operator.

It writes ``Settled`` only for a payment Midtrans' status API confirms, compare-and-swap,
within the budget of 3 writes per paid checkout; when it cannot (the apiserver out of
reach) the notification is recorded and the operator settles it from its inbox.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
from collections.abc import AsyncIterator
from typing import Any

import httpx

from checkout_operator.readmodel import Record
from midtrans import MidtransClient, MidtransConfig
from payment_listener.settling import Outcome
from saga_kit.apiserver import ApiClient, Connection
from saga_kit.events import Topology
from saga_kit.kube import kube_api_client
from tests.helpers.processes import free_port
from tests.helpers.waiting import eventually
from tests.integration.payment_signals import midtrans_quiet
from tests.integration.saga_fixtures import (
    SANDBOX_KEY,
    SagaEnv,
    listener_settler,
    webhook_listener,
)
from tests.integration.test_payment_trust import publish_notification, signed

NEVER = 24 * 3600.0  # a poller told to wait this long: only notifications can settle


def paid_claim(order_id: str) -> dict[str, str]:
    """A "settlement" notification for 10,000 IDR, signed with the sandbox's key."""
    return signed(order_id, "settlement", "200", "10000.00", fraud_status="accept")


def status_writers(saga: SagaEnv, name: str) -> list[str]:
    """Who wrote this Checkout's status, in order (the field manager of each write)."""
    assert saga.audit is not None
    found = []
    for entry in saga.audit.refresh():
        ref = entry.get("objectRef") or {}
        code = (entry.get("responseStatus") or {}).get("code", 0)
        if (
            ref.get("resource") == "checkouts"
            and ref.get("name") == name
            and ref.get("subresource") == "status"
            and entry.get("stage") == "ResponseComplete"
            and entry.get("verb") == "patch"
            and 200 <= code < 300
        ):
            uri = str(entry.get("requestURI", ""))
            found.append(
                uri.split("fieldManager=", 1)[1].split("&")[0] if "fieldManager=" in uri else "?"
            )
    return found


async def awaiting(saga: SagaEnv, stock: int = 3) -> tuple[str, str]:
    product = await saga.products.product(price=10_000, stock=stock)
    name = await saga.create(items=[(product, 10_000, 1)], paymentTTLSeconds=600)
    await saga.wait_phase(name, "AwaitingPayment")
    return product, name


async def sold(saga: SagaEnv, product: str, stock: tuple[int, int]) -> None:
    async def level() -> bool:
        return await saga.products.stock_of(product) == stock

    await eventually(level, within=30)


async def test_the_listener_settles_a_payment_midtrans_confirms(saga: SagaEnv) -> None:
    operator = await saga.start_operator(poll_min_age=NEVER)
    product, name = await awaiting(saga)
    body = await saga.wait_phase(name, "AwaitingPayment")
    assert body["status"]["payment"]["midtransOrderId"] == name  # the page it must be for
    # As a buyer does: choose a bank transfer (Midtrans notifies "pending", which the
    # operator's inbox takes), then pay it.
    chose = await saga.sandbox(name, "choose", payment_type="bank_transfer")
    assert chose.status_code == 200, chose.text
    await midtrans_quiet(saga, name)
    view = saga.listener_view
    assert view is not None

    async def shown() -> bool:  # the listener's watch has shown the page
        known = await view.get(saga.namespace, name) or {}
        return bool(known.get("status", {}).get("phase") == "AwaitingPayment")

    await eventually(shown, within=10)
    reads = view.reads
    paid = await saga.sandbox(name, "pay", payment_type="bank_transfer")
    assert paid.status_code == 200, paid.text
    body = await saga.wait_phase(name, "Settled")
    assert body["status"]["payment"]["transactionStatus"] == "settlement"
    assert view.reads == reads  # settled from the watch's view: no read of the Checkout
    assert {c["type"]: c["status"] for c in body["status"]["conditions"]}["Ready"] == "True"
    # The listener wrote the settlement; the operator wrote the payment page before it.
    assert status_writers(saga, name) == ["checkout-operator", "payment-listener"]
    await sold(saga, product, (2, 0))
    record = await operator.deps.readmodel.get(name)
    assert record is not None and record.paid_order_id == name and record.paid_amount == 10_000

    async def announced() -> bool:
        return "Paid" in saga.events(name, "Normal")

    await eventually(announced, within=30)
    # The budget: create + the operator's page + the listener's settlement, nothing more.
    assert saga.api_writes(name) == ["create", "patch/status", "patch/status"]


async def test_a_paid_claim_midtrans_does_not_confirm_settles_nothing(saga: SagaEnv) -> None:
    """A notification signed for "settlement" while Midtrans says pending (the
    key holder lying, or Midtrans' own order of events): the listener asks, and
    writes nothing."""
    await saga.start_operator(poll_min_age=NEVER)
    product, name = await awaiting(saga)
    chose = await saga.sandbox(name, "choose", payment_type="bank_transfer")
    assert chose.status_code == 200, chose.text
    async with httpx.AsyncClient() as http:
        answer = await http.post(saga.listener_url, json=paid_claim(name))
    assert answer.status_code == 200, answer.text
    assert answer.json()["status"] == "recorded"  # left to the operator, not settled
    assert (await saga.kube.get(saga.namespace, name) or {})["status"]["phase"] == "AwaitingPayment"
    assert status_writers(saga, name) == ["checkout-operator"]
    assert await saga.products.stock_of(product) == (3, 1)  # still only reserved


@contextlib.asynccontextmanager
async def unreachable_apiserver() -> AsyncIterator[ApiClient]:
    """A client of an apiserver that is not there (a closed port)."""
    api = ApiClient(Connection(f"https://127.0.0.1:{free_port()}", ssl.create_default_context()))
    try:
        yield api
    finally:
        await api.close()


async def test_without_the_apiserver_the_notification_is_recorded_and_the_operator_settles(
    saga: SagaEnv,
) -> None:
    midtrans = MidtransClient(
        MidtransConfig(server_key=SANDBOX_KEY, core_base_url=saga.midtrans_url)
    )
    topology = Topology.namespaced(saga.settings.events_namespace)
    async with (
        unreachable_apiserver() as api,
        listener_settler(api, midtrans, saga.namespace) as (settler, _),
        webhook_listener(saga.platform, topology, settler) as cut_off,
    ):
        saga.listener_url = cut_off  # Midtrans notifies this listener
        await saga.start_operator(poll_min_age=NEVER)
        product, name = await awaiting(saga)
        paid = await saga.sandbox(name, "pay", payment_type="bank_transfer")
        assert paid.status_code == 200, paid.text
        await saga.wait_phase(name, "Settled")
        state: dict[str, Any] = await saga.sandbox_state(name)
        assert [n["state"] for n in state["notifications"]] == ["delivered", "delivered"]
        assert status_writers(saga, name) == ["checkout-operator", "checkout-operator"]
        await sold(saga, product, (2, 0))
    await midtrans.aclose()


async def test_a_listener_for_every_namespace_finds_the_checkout_by_name(saga: SagaEnv) -> None:
    """CHECKOUT_NAMESPACE unset: the listener finds the Checkout by name across
    namespaces (a LIST by field selector) and settles it all the same."""
    await saga.start_operator(poll_min_age=NEVER, notifications=False)
    product, name = await awaiting(saga)
    paid = await saga.sandbox(name, "pay", payment_type="bank_transfer")
    assert paid.status_code == 200, paid.text
    config = MidtransConfig(server_key=SANDBOX_KEY, core_base_url=saga.midtrans_url)
    async with MidtransClient(config) as midtrans:
        api = await kube_api_client()
        try:
            async with listener_settler(api, midtrans, namespace="") as (settler, _):
                assert (await settler.settle(f"{name}~9")).outcome is Outcome.LEFT  # not its page
                assert (await settler.settle(name)).outcome is Outcome.SETTLED
                assert (await settler.settle(name)).outcome is Outcome.LEFT  # settled already
        finally:
            await api.close()
    await saga.wait_phase(name, "Settled")
    await sold(saga, product, (2, 0))


async def test_a_sold_and_announced_order_notified_again_costs_no_midtrans_call(
    saga: SagaEnv,
) -> None:
    """The listener's settlement notified again (Midtrans retries, a replay): the inbox
    acknowledges it from the journal without asking Midtrans, which it could not here."""
    await saga.start_operator(poll_min_age=NEVER)
    product, name = await awaiting(saga)
    chose = await saga.sandbox(name, "choose", payment_type="bank_transfer")
    assert chose.status_code == 200, chose.text
    await midtrans_quiet(saga, name)
    await saga.sandbox(name, "pay", payment_type="bank_transfer")
    await saga.wait_phase(name, "Settled")
    await sold(saga, product, (2, 0))
    await midtrans_quiet(saga, name)

    async def announced() -> bool:
        record = await saga.operator.deps.readmodel.get(name)
        return record is not None and record.final_event_published

    await eventually(announced, within=30)
    await saga.operator.shutdown()
    # A successor that cannot reach Midtrans at all (a closed port).
    await saga.start_operator(poll_min_age=NEVER, midtrans_url=f"http://127.0.0.1:{free_port()}")
    await publish_notification(saga, paid_claim(name))


async def test_the_notifications_of_a_sale_the_listener_made_cost_the_inbox_no_read(
    saga: SagaEnv,
) -> None:
    """Midtrans notifies "pending" and "settlement" for a payment; the listener settles
    the Checkout and records both on the inbox. The operator journals and announces the
    sale, then takes both notifications once each, answered from its memory: no journal
    read, no redelivery (issue 12: ~3.6 reads and a redelivery per paid checkout)."""
    operator = await saga.start_operator(poll_min_age=NEVER, inbox_look_after=3.0)
    _, name = await awaiting(saga)
    journal = operator.deps.readmodel
    inbox_reads: list[str] = []
    read = journal.get

    async def counted(order_id: str) -> Record | None:
        task = asyncio.current_task()
        if task is not None and "PaymentInbox" in getattr(task.get_coro(), "__qualname__", ""):
            inbox_reads.append(order_id)
        return await read(order_id)

    journal.get = counted  # type: ignore[method-assign]
    paid = await saga.sandbox(name, "pay", payment_type="bank_transfer")
    assert paid.status_code == 200, paid.text
    await saga.wait_phase(name, "Settled")
    topology = operator.deps.announcer.topology

    async def both_taken() -> bool:
        info = await operator.deps.announcer.js.consumer_info(
            topology.payment_stream, "checkout-operator"
        )
        return info.ack_floor.consumer_seq >= 2 and not info.num_ack_pending

    await eventually(both_taken, within=30)
    info = await operator.deps.announcer.js.consumer_info(
        topology.payment_stream, "checkout-operator"
    )
    assert info.delivered.consumer_seq == 2  # each delivered once
    assert journal.sold_by(name) == name
    assert inbox_reads == []
