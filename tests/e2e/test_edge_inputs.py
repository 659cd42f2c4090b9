"""Inputs that once gave a 500, a "retry" or a saga that never ends, on the real processes:
each is now a clear 4xx problem document (RFC 9457) and creates nothing."""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator
from typing import Any

import httpx

from tests.e2e.conftest import System

PROBLEM = "application/problem+json"
DEEP = b"[" * 1000 + b"]" * 1000
JSON = {"Content-Type": "application/json"}


def problem(reply: httpx.Response, status: int, reason: str | None = None) -> dict[str, Any]:
    assert reply.status_code == status, (reply.status_code, reply.text)
    assert reply.headers["content-type"] == PROBLEM, reply.headers
    body: dict[str, Any] = reply.json()
    assert {"type", "title", "status", "detail", "instance", "reason"} <= set(body), body
    assert body["status"] == status
    if reason is not None:
        assert body["reason"] == reason, body
    return body


def checkouts_of(system: System, user_id: str) -> list[str]:
    listed = system.platform.kubectl("get", "checkouts", "-o", "json", namespace="default")
    items = json.loads(listed.stdout)["items"]
    return [i["metadata"]["name"] for i in items if i["spec"].get("userId") == user_id]


async def test_the_checkout_api_refuses_what_it_cannot_take(system: System) -> None:
    async with httpx.AsyncClient(timeout=30) as http:
        buyer_id, buyer = await system.account(http)
        url = f"{system.api}/api/v1/checkouts"
        post = {**buyer, **JSON}
        nan = b'{"products": [{"id": "p", "price": NaN, "quantity": 1}]}'
        problem(await http.post(url, content=nan, headers=post), 400, "MALFORMED")
        problem(await http.post(url, content=DEEP, headers=post), 400, "MALFORMED")
        surrogate = b'{"products": [{"id": "\\ud800", "price": 1, "quantity": 1}]}'
        lone = problem(await http.post(url, content=surrogate, headers=post), 422)
        assert lone["errors"][0]["loc"] == ["body", "products", 0, "id"]
        nul = {"products": [{"id": "p\x00", "price": 1, "quantity": 1}]}
        named = problem(await http.post(url, json=nul, headers=buyer), 422, "INVALID_REQUEST")
        assert named["errors"][0]["loc"] == ["body", "products", 0, "id"]
        for price, quantity in ((10**13, 1), (0, 1), (1, 10**5), (2**63, 1)):
            line = {"products": [{"id": "p-1", "price": price, "quantity": quantity}]}
            problem(await http.post(url, json=line, headers=buyer), 422, "INVALID_REQUEST")
        big = b'{"voucher": "' + b"x" * (64 * 1024) + b'"}'
        problem(await http.post(url, content=big, headers=post), 413, "BODY_TOO_LARGE")

        async def streamed() -> AsyncIterator[bytes]:
            for _ in range(40):
                yield b" " * 4096

        problem(await http.post(url, content=streamed(), headers=post), 413, "BODY_TOO_LARGE")
        assert checkouts_of(system, buyer_id) == []  # nothing was created for any of them
        for odd in ("%2E", "%2E%2E", "a" * 10_000, "co-%00"):
            gone = await http.get(f"{url}/{odd}", headers=buyer)
            problem(gone, 404, "CHECKOUT_NOT_FOUND")
        for odd in ("x" * 10_000, "p%00"):
            listing = await http.get(f"{system.api}/api/v1/products/{odd}/checkouts", headers=buyer)
            problem(listing, 404, "PRODUCT_NOT_FOUND")


async def test_the_product_and_user_services_refuse_what_they_cannot_store(
    system: System,
) -> None:
    async with httpx.AsyncClient(timeout=30) as http:
        _, owner = await system.account(http)
        products = f"{system.products}/products"
        free = await http.post(
            products, json={"name": "free", "price": 0, "stock": 1}, headers=owner
        )
        assert problem(free, 422)["errors"][0]["loc"] == ["body", "price"]
        surrogate = b'{"name": "teh \\udfff", "price": 1, "stock": 1}'
        problem(await http.post(products, content=surrogate, headers={**owner, **JSON}), 422)
        problem(await http.get(f"{products}/p%00"), 404, "PRODUCT_NOT_FOUND")
        problem(await http.get(f"{products}/{'x' * 10_000}"), 404, "PRODUCT_NOT_FOUND")
        users = f"{system.users}/users"
        password = b'{"username": "abcde", "email": "a@b.co", "password": "\\ud800xxxxxxxxxx"}'
        problem(await http.post(users, content=password, headers=JSON), 422)
        problem(await http.post(users, content=DEEP, headers=JSON), 400, "MALFORMED")
        problem(await http.post(f"{system.users}/auth/login", content=DEEP, headers=JSON), 400)


async def test_the_listener_refuses_deep_json_as_malformed(system: System) -> None:
    async with httpx.AsyncClient(timeout=30) as http:
        problem(await http.post(system.listener, content=DEEP), 400, "MALFORMED")
        nan = b'{"order_id": "o", "gross_amount": Infinity}'
        problem(await http.post(system.listener, content=nan), 400, "MALFORMED")
        forged = {
            "order_id": f"o-{uuid.uuid4().hex[:8]}",
            "status_code": "200",
            "gross_amount": "1.00",
            "signature_key": "0" * 128,
            "transaction_status": "settlement",
        }
        problem(await http.post(system.listener, json=forged), 401, "BAD_SIGNATURE")


async def test_kubectl_cannot_create_a_checkout_the_saga_could_never_finish(
    system: System,
) -> None:
    for item, field in (
        ({"productId": "p\x00", "unitPrice": 1, "quantity": 1}, "productId"),
        ({"productId": "p", "unitPrice": 10**15, "quantity": 1}, "unitPrice"),
    ):
        name = f"co-edge-{uuid.uuid4().hex[:8]}"
        resource = {
            "apiVersion": "checkout.saga.dev/v1alpha1",
            "kind": "Checkout",
            "metadata": {"name": name},
            "spec": {"userId": "42", "items": [item]},
        }
        refused = system.platform.kubectl(
            "create", "-f", "-", namespace="default", stdin=json.dumps(resource), check=False
        )
        assert refused.returncode != 0
        assert f"spec.items[0].{field}: Invalid value" in refused.stderr, refused.stderr
