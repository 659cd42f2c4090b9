"""A rush on a product through the checkout API and the real saga: buyers beyond what is
left wait at the sold-out gate instead of being refused 503 and retrying, and are told
OutOfStock once the checkouts ahead of them hold the stock, with nothing created."""

from __future__ import annotations

import asyncio
import uuid

import httpx
import pytest

from checkout_api.admission import Admission
from checkout_api.app import ApiDeps
from tests.integration.saga_fixtures import SagaEnv
from tests.integration.test_checkout_api import api  # noqa: F401  (the fixture)


async def test_a_crowd_beyond_the_stock_waits_at_the_gate_and_is_refused_without_503(
    saga: SagaEnv,
    api: tuple[httpx.AsyncClient, ApiDeps],  # noqa: F811
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    http, deps = api
    await saga.start_operator()
    product = await saga.products.product(price=3_000, stock=2)
    body = {"products": [{"id": product, "price": 3_000, "quantity": 1}]}
    tokens = [(await saga.users.token_for(f"b{uuid.uuid4().hex[:8]}"))[1] for _ in range(6)]
    # Two places: without the gate holding them back, the four buyers behind the
    # first two were refused 503 Overloaded (and would retry) while those two ran.
    monkeypatch.setattr(deps, "admission", Admission(2))
    replies = await asyncio.gather(
        *(
            http.post("/api/v1/checkouts", json=body, headers={"Authorization": f"Bearer {t}"})
            for t in tokens
        )
    )
    statuses = sorted(r.status_code for r in replies)
    assert statuses == [201, 201, 409, 409, 409, 409], [r.text for r in replies]
    assert {r.json()["reason"] for r in replies if r.status_code == 409} == {"OutOfStock"}
    assert deps.admission.refused == 0
    listed = saga.platform.kubectl("get", "checkouts", "-o", "name", namespace=saga.namespace)
    assert len(listed.stdout.split()) == 2  # none for the buyers refused at the gate
