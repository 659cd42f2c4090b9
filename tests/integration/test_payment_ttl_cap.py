"""Checkouts created with kubectl cannot hold stock longer than the payment TTL cap."""

from __future__ import annotations

import datetime as dt
from typing import Any

from checkout_operator.saga import parse_timestamp
from tests.integration.saga_fixtures import SagaEnv, condition


async def awaiting_payment(
    saga: SagaEnv, cap: int, ttl: int
) -> tuple[str, dict[str, Any], dt.datetime | None, dt.datetime | None]:
    """An operator with this TTL cap, a checkout asking for ``ttl`` seconds, once it awaits
    payment: its name, body, creation time and expiry."""
    await saga.start_operator(max_payment_ttl_seconds=cap)
    product = await saga.products.product(price=10_000, stock=3)
    name = await saga.create(items=[(product, 10_000, 1)], paymentTTLSeconds=ttl)
    body = await saga.wait_phase(name, "AwaitingPayment")
    created = parse_timestamp(body["metadata"]["creationTimestamp"])
    expires = parse_timestamp(body["status"]["expiresAt"])
    return name, body, created, expires


async def test_a_long_ttl_is_clamped_to_the_cap_for_midtrans_and_expires_at(
    saga: SagaEnv,
) -> None:
    name, body, created, expires = await awaiting_payment(saga, cap=120, ttl=86_400)
    assert created is not None and expires is not None
    assert expires - created <= dt.timedelta(seconds=120 + 10)
    ready = condition(body, "PaymentReady")
    assert ready is not None
    assert "paymentTTLSeconds 86400 was capped at 120" in ready["message"]
    # Midtrans was asked for 2 minutes, not a day.
    snap = await saga.sandbox_state(await saga.midtrans_order(name))
    snap_expiry = dt.datetime.fromisoformat(snap["expires_at"])
    assert snap_expiry - created <= dt.timedelta(minutes=2, seconds=10)


async def test_a_ttl_within_the_cap_is_kept(saga: SagaEnv) -> None:
    _, body, created, expires = await awaiting_payment(saga, cap=3_600, ttl=600)
    assert created is not None and expires is not None
    assert dt.timedelta(seconds=600) <= expires - created <= dt.timedelta(seconds=610)
    ready = condition(body, "PaymentReady")
    assert ready is not None
    assert ready["message"] == "waiting for the buyer to pay"


async def test_the_crd_refuses_a_ttl_above_its_ceiling(saga: SagaEnv) -> None:
    result = await saga.create(
        "week-long", [("p", 1, 1)], check=False, userId="42", paymentTTLSeconds=604_800
    )
    assert result.returncode != 0
    assert "spec.paymentTTLSeconds: Invalid value: 604800" in result.stderr
    assert "less than or equal to 86400" in result.stderr
