"""Checkouts created with kubectl cannot hold stock longer than the payment TTL cap."""

from __future__ import annotations

import datetime as dt
import json

from checkout_operator.saga import parse_timestamp
from tests.integration.saga_fixtures import SagaEnv


async def test_a_long_ttl_is_clamped_to_the_cap_for_midtrans_and_expires_at(
    saga: SagaEnv,
) -> None:
    await saga.start_operator(max_payment_ttl_seconds=120)
    product = await saga.products.product(price=10_000, stock=3)
    name = await saga.create(items=[(product, 10_000, 1)], paymentTTLSeconds=86_400)
    body = await saga.wait_phase(name, "AwaitingPayment")
    created = parse_timestamp(body["metadata"]["creationTimestamp"])
    expires = parse_timestamp(body["status"]["expiresAt"])
    assert created is not None and expires is not None
    assert expires - created <= dt.timedelta(seconds=120 + 10)
    (ready,) = [c for c in body["status"]["conditions"] if c["type"] == "PaymentReady"]
    assert "paymentTTLSeconds 86400 was capped at 120" in ready["message"]
    # Midtrans was asked for 2 minutes, not a day.
    snap = await saga.sandbox_state(await saga.midtrans_order(name))
    snap_expiry = dt.datetime.fromisoformat(snap["expires_at"])
    assert snap_expiry - created <= dt.timedelta(minutes=2, seconds=10)


async def test_a_ttl_within_the_cap_is_kept(saga: SagaEnv) -> None:
    await saga.start_operator(max_payment_ttl_seconds=3_600)
    product = await saga.products.product(price=10_000, stock=3)
    name = await saga.create(items=[(product, 10_000, 1)], paymentTTLSeconds=600)
    body = await saga.wait_phase(name, "AwaitingPayment")
    created = parse_timestamp(body["metadata"]["creationTimestamp"])
    expires = parse_timestamp(body["status"]["expiresAt"])
    assert created is not None and expires is not None
    assert dt.timedelta(seconds=600) <= expires - created <= dt.timedelta(seconds=610)
    (ready,) = [c for c in body["status"]["conditions"] if c["type"] == "PaymentReady"]
    assert ready["message"] == "waiting for the buyer to pay"


def test_the_crd_refuses_a_ttl_above_its_ceiling(saga: SagaEnv) -> None:
    body = {
        "apiVersion": "checkout.saga.dev/v1alpha1",
        "kind": "Checkout",
        "metadata": {"name": "week-long"},
        "spec": {
            "userId": "42",
            "items": [{"productId": "p", "unitPrice": 1, "quantity": 1}],
            "paymentTTLSeconds": 604_800,
        },
    }
    result = saga.platform.kubectl(
        "create", "-f", "-", namespace=saga.namespace, stdin=json.dumps(body), check=False
    )
    assert result.returncode != 0
    assert "spec.paymentTTLSeconds: Invalid value: 604800" in result.stderr
    assert "less than or equal to 86400" in result.stderr
