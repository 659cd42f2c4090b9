"""A Checkout's conditions as Kubernetes tools read them: a summary Ready condition
(`kubectl wait --for=condition=Ready` works) and conditions that stop holding turn False."""

from __future__ import annotations

import asyncio

from tests.integration.saga_fixtures import SagaEnv, condition


async def test_ready_is_true_once_paid_and_kubectl_wait_sees_it(saga: SagaEnv) -> None:
    await saga.start_operator()
    product = await saga.products.product(price=10_000, stock=3)
    name = await saga.create(items=[(product, 10_000, 1)], paymentTTLSeconds=600)
    body = await saga.wait_phase(name, "AwaitingPayment")
    ready = condition(body, "Ready")
    assert ready is not None and (ready["status"], ready["reason"]) == ("False", "AwaitingPayment")
    waiting = asyncio.create_task(
        asyncio.to_thread(
            saga.platform.kubectl,
            "wait",
            "--for=condition=Ready",
            "--timeout=60s",
            f"checkout/{name}",
            namespace=saga.namespace,
            check=False,
        )
    )
    await saga.sandbox(name, "pay", payment_type="bank_transfer")
    waited = await waiting
    assert waited.returncode == 0, waited.stderr
    body = await saga.wait_phase(name, "Settled")
    ready = condition(body, "Ready")
    assert ready is not None and (ready["status"], ready["reason"]) == ("True", "Settled")
    for cond in body["status"]["conditions"]:  # every field metav1.Condition requires
        assert {"type", "status", "reason", "message", "lastTransitionTime"} <= cond.keys()
        assert cond["observedGeneration"] == body["metadata"]["generation"]


async def test_an_ending_turns_what_held_before_it_false(saga: SagaEnv) -> None:
    await saga.start_operator()
    product = await saga.products.product(price=10_000, stock=3)
    name = await saga.create(items=[(product, 10_000, 1)], paymentTTLSeconds=600)
    before = await saga.wait_phase(name, "AwaitingPayment")
    assert condition(before, "StockReserved")["status"] == "True"  # type: ignore[index]
    saga.request_cancel(name)
    body = await saga.wait_phase(name, "Cancelled")
    for type_ in ("Ready", "StockReserved", "PaymentReady"):
        cond = condition(body, type_)
        assert cond is not None and cond["status"] == "False", (type_, cond)
        assert cond["reason"] == body["status"]["failure"]["reason"]
