"""The Product service's REST API, authenticated by the real User service over gRPC."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest

from product_service.rest_api import create_rest_app
from saga_kit.grpc_auth import authenticated_channel
from saga_kit.user_auth import UserServiceAuthenticator
from tests.integration.product_fixtures import ProductEnv
from tests.integration.user_fixtures import UserEnv


@dataclass
class Shop:
    http: httpx.AsyncClient
    users: UserEnv
    products: ProductEnv

    async def owner(self) -> tuple[str, dict[str, str]]:
        user_id, token = await self.users.token_for(f"u{uuid.uuid4().hex[:8]}")
        return user_id, {"Authorization": f"Bearer {token}"}

    async def create(self, headers: dict[str, str], **body: Any) -> dict[str, Any]:
        payload = {"name": f"Kopi {uuid.uuid4().hex[:6]}", "price": 25_000, "stock": 10} | body
        reply = await self.http.post("/api/v1/products", json=payload, headers=headers)
        assert reply.status_code == 201, reply.text
        created: dict[str, Any] = reply.json()
        return created


@pytest.fixture
async def shop(product_env: ProductEnv, user_env: UserEnv) -> AsyncIterator[Shop]:
    channel = authenticated_channel(user_env.grpc_target, product_env.token)
    app = create_rest_app(product_env.pool, UserServiceAuthenticator(channel))
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://products") as http:
        yield Shop(http, user_env, product_env)
    await channel.close()


async def test_owner_crud_and_public_catalogue(shop: Shop) -> None:
    owner_id, auth = await shop.owner()
    created = await shop.create(auth, name="Kopi Susu Large", description="iced")
    assert created["slug"] == "kopi-susu-large"
    assert created["owner_id"] == owner_id
    assert (created["stock"], created["reserved"], created["available"]) == (10, 0, 10)
    pid = created["id"]

    public = await shop.http.get(f"/api/v1/products/{pid}")
    assert public.status_code == 200
    assert "owner_id" not in public.json() and public.json()["available"] == 10

    patched = await shop.http.patch(
        f"/api/v1/products/{pid}", json={"price": 27_000, "stock": 12}, headers=auth
    )
    assert patched.status_code == 200, patched.text
    assert (patched.json()["price"], patched.json()["stock"]) == (27_000, 12)

    mine = await shop.http.get("/api/v1/owner/products", headers=auth)
    assert [p["id"] for p in mine.json()["items"]] == [pid]

    deleted = await shop.http.delete(f"/api/v1/products/{pid}", headers=auth)
    assert deleted.status_code == 204
    assert (await shop.http.get(f"/api/v1/products/{pid}")).status_code == 404
    # The slug of a deleted product is free again.
    again = await shop.create(auth, name="Kopi Susu Large")
    assert again["slug"] == "kopi-susu-large"


async def test_catalogue_pagination_is_complete_and_stable(shop: Shop) -> None:
    _, auth = await shop.owner()
    ids = [(await shop.create(auth))["id"] for _ in range(7)]
    seen: list[str] = []
    token: str | None = None
    while True:
        params: dict[str, Any] = {"page_size": 3} | ({"page_token": token} if token else {})
        page = (await shop.http.get("/api/v1/products", params=params)).json()
        seen += [p["id"] for p in page["items"]]
        token = page["next_page_token"]
        if token is None:
            break
    assert seen == ids
    bad = await shop.http.get("/api/v1/products", params={"page_token": "%%%"})
    assert bad.status_code == 422 and bad.json()["reason"] == "INVALID_PAGE_TOKEN"
    too_big = await shop.http.get("/api/v1/products", params={"page_size": 1000})
    assert too_big.status_code == 422


async def test_only_the_owner_may_change_a_product(shop: Shop) -> None:
    _, owner = await shop.owner()
    _, other = await shop.owner()
    pid = (await shop.create(owner))["id"]
    for reply in (
        await shop.http.patch(f"/api/v1/products/{pid}", json={"price": 1}, headers=other),
        await shop.http.delete(f"/api/v1/products/{pid}", headers=other),
    ):
        assert reply.status_code == 403
        assert reply.json()["reason"] == "NOT_PRODUCT_OWNER"
    assert (await shop.http.get(f"/api/v1/products/{pid}")).json()["price"] == 25_000


async def test_authentication_is_required_and_checked(shop: Shop) -> None:
    body = {"name": "x", "price": 1, "stock": 1}
    missing = await shop.http.post("/api/v1/products", json=body)
    assert missing.status_code == 401 and missing.headers["www-authenticate"] == "Bearer"
    forged = await shop.http.post(
        "/api/v1/products", json=body, headers={"Authorization": "Bearer not.a.token"}
    )
    assert forged.status_code == 401
    assert forged.json()["reason"] == "TOKEN_INVALID"


async def test_invalid_input_is_422_naming_the_field(shop: Shop) -> None:
    _, auth = await shop.owner()
    cases = [
        ({"name": "", "price": 1, "stock": 1}, "name"),
        ({"name": "x", "price": -1, "stock": 1}, "price"),
        ({"name": "x", "price": 1.5, "stock": 1}, "price"),
        ({"name": "x", "price": 1, "stock": -3}, "stock"),
        ({"name": "x", "price": 1, "stock": 1, "slug": "Not A Slug"}, "slug"),
        ({"name": "x", "price": 1, "stock": 1, "owner_id": "me"}, "owner_id"),
    ]
    for body, field in cases:
        reply = await shop.http.post("/api/v1/products", json=body, headers=auth)
        assert reply.status_code == 422, (body, reply.text)
        assert any(field in err["loc"] for err in reply.json()["errors"]), (field, reply.text)
    pid = (await shop.create(auth))["id"]
    null = await shop.http.patch(f"/api/v1/products/{pid}", json={"price": None}, headers=auth)
    assert null.status_code == 422 and null.json()["fields"] == {"price": "cannot be null"}


async def test_duplicate_slug_and_stock_below_reserved_are_409(shop: Shop) -> None:
    _, auth = await shop.owner()
    first = await shop.create(auth, slug="kopi", stock=5)
    dup = await shop.http.post(
        "/api/v1/products", json={"name": "y", "slug": "kopi", "price": 1, "stock": 1}, headers=auth
    )
    assert dup.status_code == 409 and dup.json()["reason"] == "SLUG_TAKEN"
    await shop.products.reserve("order-rest-1", (first["id"], first["price"], 4))
    below = await shop.http.patch(
        f"/api/v1/products/{first['id']}", json={"stock": 3}, headers=auth
    )
    assert below.status_code == 409
    assert below.json()["reason"] == "STOCK_BELOW_RESERVED"
    assert below.json()["reserved"] == "4"
