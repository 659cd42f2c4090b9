"""A buyer refused at the sold-out gate costs no read of the apiserver, even with an
Idempotency-Key, and a retried POST whose checkout exists still gets that checkout."""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import httpx
import pytest

from checkout_api.app import ApiDeps
from checkout_api.soldout import Wanted
from tests.integration.saga_fixtures import SagaEnv
from tests.integration.test_checkout_api import api  # noqa: F401  (the fixture)

Get = Callable[[str], Awaitable[dict[str, Any] | None]]


def _noting(get: Get, names: list[str]) -> Get:
    """``get``, noting each name it is asked for in ``names``."""

    async def noted(name: str) -> dict[str, Any] | None:
        names.append(name)
        return await get(name)

    return noted


@dataclass
class Buyer:
    http: httpx.AsyncClient
    token: str
    product: str

    async def post(self, key: str) -> httpx.Response:
        """One unit of the product, with this Idempotency-Key."""
        return await self.http.post(
            "/api/v1/checkouts",
            json={"products": [{"id": self.product, "price": 3_000, "quantity": 1}]},
            headers={"Authorization": f"Bearer {self.token}", "Idempotency-Key": key},
        )


async def test_a_refused_post_reads_no_checkout_and_a_retry_still_gets_its_own(
    saga: SagaEnv,
    api: tuple[httpx.AsyncClient, ApiDeps],  # noqa: F811
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    http, deps = api
    # No operator runs: the first checkout is created but never registered in the
    # read model, so only the API's own record of what it created knows it.
    monkeypatch.setattr(deps, "wait_seconds", 0.2)
    product = await saga.products.product(price=3_000, stock=1)
    buyer = Buyer(http, (await saga.users.token_for(f"b{uuid.uuid4().hex[:8]}"))[1], product)
    first = await buyer.post("k1")
    assert first.status_code == 202, first.text
    # Someone else holds the only unit now; the gate asks again.
    await saga.products.reserve(f"other-{uuid.uuid4().hex[:8]}", (product, 3_000, 1))
    deps.soldout.forget([Wanted(product, 1)])

    reads: list[str] = []
    monkeypatch.setattr(deps.checkouts, "get", _noting(deps.checkouts.get, reads))
    refused = await buyer.post("k2")
    assert refused.status_code == 409, refused.text
    assert refused.json()["reason"] == "OutOfStock"
    assert reads == []  # told from Redis and the read model, not by a GET

    again = await buyer.post("k1")
    assert again.status_code == 202, again.text
    assert again.json()["id"] == first.json()["id"]
    assert again.headers["Idempotent-Replayed"] == "true"
    listed = saga.platform.kubectl("get", "checkouts", "-o", "name", namespace=saga.namespace)
    assert len(listed.stdout.split()) == 1  # none for the refused buyer
