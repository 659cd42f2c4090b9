"""The checkout API in-process against the real saga: 202 on a slow saga, archived reads."""

from __future__ import annotations

import asyncio
import datetime as dt
import uuid
from collections.abc import AsyncIterator

import httpx
import pytest
from checkout_api.app import ApiDeps, create_app
from checkout_api.kube import Checkouts

from checkout.product.v1 import product_pb2_grpc
from checkout_operator.app import kube_api_client
from saga_kit import db
from saga_kit.grpc_auth import authenticated_channel
from saga_kit.user_auth import UserServiceAuthenticator
from tests.integration.saga_fixtures import SagaEnv


@pytest.fixture
async def api(saga: SagaEnv) -> AsyncIterator[tuple[httpx.AsyncClient, ApiDeps]]:
    s = saga.settings
    pool = await db.create_pool(s.database_url.value, s.db_schema)
    kube = await kube_api_client()
    users = authenticated_channel(s.user_service, s.service_token)
    products = authenticated_channel(s.product_service, s.service_token)
    deps = ApiDeps(
        checkouts=Checkouts(kube, saga.namespace),
        readmodel=pool,
        authenticator=UserServiceAuthenticator(users),
        products=product_pb2_grpc.ProductServiceStub(products),
        wait_seconds=10,
        default_ttl_seconds=900,
    )
    transport = httpx.ASGITransport(app=create_app(deps))
    async with httpx.AsyncClient(transport=transport, base_url="http://api") as http:
        yield http, deps
    await users.close()
    await products.close()
    await kube.close()
    await pool.close()


async def test_a_slow_saga_answers_202_with_a_status_url(
    saga: SagaEnv, api: tuple[httpx.AsyncClient, ApiDeps]
) -> None:
    http, deps = api
    _, token = await saga.users.token_for(f"b{uuid.uuid4().hex[:8]}")
    auth = {"Authorization": f"Bearer {token}"}
    product = await saga.products.product(price=3_000, stock=5)
    body = {"products": [{"id": product, "price": 3_000, "quantity": 1}]}
    # No operator is running yet: the checkout stays Pending while the API waits.
    deps.wait_seconds = 0.3
    reply = await http.post("/api/v1/checkouts", json=body, headers=auth)
    assert reply.status_code == 202, reply.text
    assert reply.headers["location"] == reply.json()["status_url"]
    cid = reply.json()["id"]
    await saga.start_operator()
    for _ in range(200):
        got = (await http.get(reply.json()["status_url"], headers=auth)).json()
        if got["phase"] == "AwaitingPayment":
            break
        await asyncio.sleep(0.05)
    assert got["phase"] == "AwaitingPayment" and got["snap_token"]
    assert got["id"] == cid


async def test_archived_checkouts_are_still_listed_and_readable(
    saga: SagaEnv, api: tuple[httpx.AsyncClient, ApiDeps]
) -> None:
    http, _ = api
    await saga.start_operator(ttl_after_finished=dt.timedelta(seconds=1))
    _, token = await saga.users.token_for(f"b{uuid.uuid4().hex[:8]}")
    auth = {"Authorization": f"Bearer {token}"}
    product = await saga.products.product(price=3_000, stock=5)
    reply = await http.post(
        "/api/v1/checkouts",
        json={"products": [{"id": product, "price": 3_000, "quantity": 2}]},
        headers=auth,
    )
    assert reply.status_code == 201, reply.text
    cid = reply.json()["id"]
    await http.post(f"/api/v1/checkouts/{cid}/cancel", headers=auth)
    for _ in range(200):  # Cancelled, then deleted one second later
        if await saga.get(cid) is None:
            break
        await asyncio.sleep(0.05)
    assert await saga.get(cid) is None
    one = await http.get(f"/api/v1/checkouts/{cid}", headers=auth)
    assert one.status_code == 200 and one.json()["phase"] == "Cancelled"
    assert one.json()["items"] == [{"product_id": product, "unit_price": 3_000, "quantity": 2}]
    listed = await http.get("/api/v1/checkouts", params={"page_size": 1}, headers=auth)
    assert [c["id"] for c in listed.json()["items"]] == [cid]
    assert listed.json()["next_page_token"] is None
