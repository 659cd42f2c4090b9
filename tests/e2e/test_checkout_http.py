"""End to end over HTTP through the real processes: the shop's and Midtrans' doors."""

from __future__ import annotations

import asyncio
import hashlib
import json
import uuid
from typing import Any

import httpx
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.e2e.conftest import System


async def checkout(
    system: System,
    http: httpx.AsyncClient,
    auth: dict[str, str],
    product: dict[str, Any],
    quantity: int = 1,
    **extra: Any,
) -> httpx.Response:
    body = {
        "products": [{"id": product["id"], "price": product["price"], "quantity": quantity}],
        **extra.pop("body", {}),
    }
    return await http.post(f"{system.api}/api/v1/checkouts", json=body, headers={**auth, **extra})


async def wait_phase(
    system: System, http: httpx.AsyncClient, auth: dict[str, str], cid: str, *phases: str
) -> dict[str, Any]:
    body: dict[str, Any] = {}
    for _ in range(600):
        body = (await http.get(f"{system.api}/api/v1/checkouts/{cid}", headers=auth)).json()
        if body.get("phase") in phases:
            return body
        await asyncio.sleep(0.1)
    raise AssertionError(f"{cid} never reached {phases}: {body}")


async def available(system: System, http: httpx.AsyncClient, product_id: str) -> int:
    return int((await http.get(f"{system.products}/products/{product_id}")).json()["available"])


def signed(
    system: System, order_id: str, status: str, gross: str, code: str = "200"
) -> dict[str, str]:
    signature = hashlib.sha512(f"{order_id}{code}{gross}{system.server_key}".encode()).hexdigest()
    return {
        "order_id": order_id,
        "status_code": code,
        "gross_amount": gross,
        "signature_key": signature,
        "transaction_status": status,
        "transaction_id": str(uuid.uuid4()),
        "fraud_status": "accept",
        "payment_type": "bank_transfer",
        "transaction_time": "2026-01-01 10:00:00",
        "settlement_time": "2026-01-01 10:00:05",
        "currency": "IDR",
    }


async def test_pay_flow_reaches_settled_through_the_webhook(system: System) -> None:
    async with httpx.AsyncClient(timeout=30) as http:
        _, buyer = await system.account(http)
        _, owner = await system.account(http)
        product = await system.product(http, owner, price=20_000, stock=5)
        reply = await checkout(system, http, buyer, product, 2)
        assert reply.status_code == 201, reply.text
        created = reply.json()
        assert created["phase"] == "AwaitingPayment" and created["total"] == 40_000
        assert created["snap_token"] and created["redirect_url"] and created["expires_at"]
        assert await available(system, http, str(product["id"])) == 3
        paid = await http.post(
            f"{system.sandbox}/_sandbox/transactions/{created['id']}/pay", json={}
        )
        assert paid.status_code == 200, paid.text
        await wait_phase(system, http, buyer, created["id"], "Settled")
        listed = (await http.get(f"{system.api}/api/v1/checkouts", headers=buyer)).json()
        assert [c["id"] for c in listed["items"]] == [created["id"]]
        owner_view = await http.get(
            f"{system.api}/api/v1/products/{product['id']}/checkouts", headers=owner
        )
        assert owner_view.status_code == 200
        assert [c["id"] for c in owner_view.json()["items"]] == [created["id"]]
        out = system.platform.kubectl("get", "checkout", created["id"], namespace="default").stdout
        assert "Settled" in out


async def test_unpaid_checkout_expires_and_the_stock_comes_back(system: System) -> None:
    async with httpx.AsyncClient(timeout=30) as http:
        _, buyer = await system.account(http)
        _, owner = await system.account(http)
        product = await system.product(http, owner, stock=4)
        reply = await checkout(system, http, buyer, product, 3, body={"payment_ttl_seconds": 2})
        assert reply.status_code == 201, reply.text
        assert await available(system, http, str(product["id"])) == 1
        await wait_phase(system, http, buyer, reply.json()["id"], "Expired")
        for _ in range(100):
            if await available(system, http, str(product["id"])) == 4:
                break
            await asyncio.sleep(0.1)
        assert await available(system, http, str(product["id"])) == 4


async def test_forged_malformed_duplicate_and_stale_webhooks_change_nothing(system: System) -> None:
    async with httpx.AsyncClient(timeout=30) as http:
        _, buyer = await system.account(http)
        _, owner = await system.account(http)
        product = await system.product(http, owner, price=15_000, stock=3)
        created = (await checkout(system, http, buyer, product, 1)).json()
        cid = created["id"]
        forged = signed(system, cid, "settlement", "15000.00")
        forged["signature_key"] = "0" * 128
        assert (await http.post(system.listener, json=forged)).status_code == 401
        assert (await http.post(system.listener, content=b"not json")).status_code == 400
        missing = signed(system, cid, "settlement", "15000.00")
        del missing["signature_key"]
        reply = await http.post(system.listener, json=missing)
        assert reply.status_code == 400 and "signature_key" in reply.text
        await asyncio.sleep(1.0)
        assert (await http.get(f"{system.api}/api/v1/checkouts/{cid}", headers=buyer)).json()[
            "phase"
        ] == "AwaitingPayment"

        settlement = signed(system, cid, "settlement", "15000.00")
        first = await http.post(system.listener, json=settlement)
        again = await http.post(system.listener, json=settlement)
        assert first.status_code == again.status_code == 200
        assert again.json()["duplicate"] is True
        await wait_phase(system, http, buyer, cid, "Settled")
        stale = await http.post(
            system.listener, json=signed(system, cid, "pending", "15000.00", "201")
        )
        assert stale.status_code == 200
        await asyncio.sleep(1.0)
        assert (await http.get(f"{system.api}/api/v1/checkouts/{cid}", headers=buyer)).json()[
            "phase"
        ] == "Settled"
        unknown = await http.post(
            system.listener, json=signed(system, "no-such-order", "settlement", "1.00")
        )
        assert unknown.status_code == 200


async def test_idempotency_key_returns_the_same_checkout(system: System) -> None:
    async with httpx.AsyncClient(timeout=30) as http:
        _, buyer = await system.account(http)
        _, owner = await system.account(http)
        product = await system.product(http, owner, stock=5)
        key = {"Idempotency-Key": uuid.uuid4().hex}
        first = await checkout(system, http, buyer, product, 2, **key)
        again = await checkout(system, http, buyer, product, 2, **key)
        assert first.status_code == 201 and again.status_code == 200
        assert again.headers["idempotent-replayed"] == "true"
        assert first.json()["id"] == again.json()["id"]
        assert await available(system, http, str(product["id"])) == 3
        other = await checkout(system, http, buyer, product, 1, **key)
        assert (
            other.status_code == 422
            and other.json()["detail"]["reason"] == "IDEMPOTENCY_KEY_REUSED"
        )


async def test_users_never_see_or_cancel_each_others_checkouts(system: System) -> None:
    async with httpx.AsyncClient(timeout=30) as http:
        _, alice = await system.account(http)
        _, bob = await system.account(http)
        _, owner = await system.account(http)
        product = await system.product(http, owner, stock=5)
        cid = (await checkout(system, http, alice, product)).json()["id"]
        assert (
            await http.get(f"{system.api}/api/v1/checkouts/{cid}", headers=bob)
        ).status_code == 404
        assert (
            await http.post(f"{system.api}/api/v1/checkouts/{cid}/cancel", headers=bob)
        ).status_code == 404
        assert (await http.get(f"{system.api}/api/v1/checkouts", headers=bob)).json()["items"] == []
        listing = await http.get(
            f"{system.api}/api/v1/products/{product['id']}/checkouts", headers=bob
        )
        assert listing.status_code == 403
        assert (await http.get(f"{system.api}/api/v1/checkouts/{cid}")).status_code == 401
        cancelled = await http.post(f"{system.api}/api/v1/checkouts/{cid}/cancel", headers=alice)
        assert cancelled.status_code == 202
        await wait_phase(system, http, alice, cid, "Cancelled")
        again = await http.post(f"{system.api}/api/v1/checkouts/{cid}/cancel", headers=alice)
        assert again.status_code == 409


async def test_refusals_name_the_reason(system: System) -> None:
    async with httpx.AsyncClient(timeout=30) as http:
        _, buyer = await system.account(http)
        _, owner = await system.account(http)
        product = await system.product(http, owner, price=9_000, stock=1)
        too_many = await checkout(system, http, buyer, product, 2)
        assert too_many.status_code == 409
        assert too_many.json()["detail"]["reason"] == "InsufficientStock"
        assert str(product["id"]) in too_many.json()["detail"]["message"]
        wrong_price = await checkout(system, http, buyer, {**product, "price": 8_000})
        assert wrong_price.status_code == 409
        assert wrong_price.json()["detail"]["reason"] == "PriceMismatch"
        unknown = await checkout(system, http, buyer, {"id": "nope", "price": 1})
        assert (
            unknown.status_code == 422 and unknown.json()["detail"]["reason"] == "ProductNotFound"
        )
        twice = await http.post(
            f"{system.api}/api/v1/checkouts",
            json={"products": [{"id": "a", "price": 1, "quantity": 1}] * 2},
            headers=buyer,
        )
        assert twice.status_code == 422 and "listed twice" in twice.text
        docs = await http.get(f"{system.api}/openapi.json")
        assert docs.status_code == 200 and "/api/v1/checkouts" in docs.json()["paths"]


JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=4)
    ),
    max_leaves=12,
)
ITEM = st.fixed_dictionaries(
    {},
    optional={
        "id": JSON | st.text(max_size=60),
        "price": JSON | st.integers(),
        "quantity": JSON | st.integers(),
    },
)
BODY = JSON | st.fixed_dictionaries(
    {"products": st.lists(ITEM, max_size=3) | JSON}, optional={"x": JSON}
)


async def test_malformed_bodies_are_4xx_never_5xx(system: System) -> None:
    async with httpx.AsyncClient(timeout=30) as http:
        _, buyer = await system.account(http)
        seen: list[int] = []

        @settings(max_examples=150, deadline=None, suppress_health_check=list(HealthCheck))
        @given(body=BODY)
        def fuzz(body: Any) -> None:
            seen.append(0)
            bodies.append(body)

        bodies: list[Any] = []
        fuzz()
        for body in bodies:
            reply = await http.post(
                f"{system.api}/api/v1/checkouts", content=json.dumps(body), headers=buyer
            )
            assert reply.status_code < 500, (body, reply.status_code, reply.text)
            listener = await http.post(system.listener, content=json.dumps(body))
            assert 400 <= listener.status_code < 500, (body, listener.text)
        assert len(seen) >= 100
