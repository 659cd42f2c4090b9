"""One error model for the four HTTP services (saga_kit.problems, saga_kit.request_bodies):
what the OpenAPI declares is what is returned, bodies are capped before they are read,
and no body or path reaches a 500. In-process, on each service's real app; the e2e tests
run the same on the real processes."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from fastapi import FastAPI

from checkout_api.app import ApiDeps, CheckoutProblem, create_app
from payment_listener.app import create_app as create_listener
from product_service.rest_api import create_rest_app as create_products
from saga_kit import checkout_bounds as bounds
from saga_kit import problems
from saga_kit.apiserver import ApiError
from saga_kit.events import Topology
from saga_kit.problems import PROBLEM_JSON, Problem
from saga_kit.request_bodies import MAX_BODY_BYTES, BodyLimit
from saga_kit.user_auth import Identity
from user_service.rest_api import build_rest_app as create_users

ROOT = Path(__file__).resolve().parents[2]
MODELS: dict[str, type[Problem]] = {"Problem": Problem, "CheckoutProblem": CheckoutProblem}


class Anyone:
    async def authenticate(self, access_token: str) -> Identity:
        return Identity(user_id="u-1", username="u")


class NoAccounts:
    async def authenticate(self, token: str) -> None:
        raise AssertionError("the route asked for accounts")


async def _not_ready() -> dict[str, bool]:
    return {"postgres": False, "redis": True}


def apps() -> dict[str, FastAPI]:
    deps: list[Any] = [None] * 9
    deps[2] = Anyone()
    return {
        "checkout-api": create_app(ApiDeps(*deps)),
        "listener": create_listener("key", None, Topology()),
        "users": create_users(NoAccounts(), _not_ready),  # type: ignore[arg-type]
        "products": create_products(None, Anyone()),
    }


APPS = apps()
AUTH = {"Authorization": "Bearer t"}
JSON = {"Content-Type": "application/json"}
# (app, method, path, request arguments, expected status)
ERRORS: list[tuple[str, str, str, dict[str, Any], int]] = [
    ("checkout-api", "GET", "/api/v1/checkouts", {}, 401),
    ("checkout-api", "GET", "/api/v1/checkouts/%2E", {"headers": AUTH}, 404),
    ("checkout-api", "GET", "/api/v1/checkouts/..", {"headers": AUTH}, 404),
    ("checkout-api", "GET", "/api/v1/checkouts/" + "a" * 10_000, {"headers": AUTH}, 404),
    ("checkout-api", "GET", "/api/v1/products/a%00b/checkouts", {"headers": AUTH}, 404),
    (
        "checkout-api",
        "GET",
        "/api/v1/checkouts",
        {"headers": AUTH, "params": {"page_size": 0}},
        422,
    ),
    ("checkout-api", "POST", "/api/v1/checkouts", {"content": b"[" * 1000 + b"]" * 1000}, 400),
    ("checkout-api", "POST", "/api/v1/checkouts", {"content": b'{"products": NaN}'}, 400),
    ("checkout-api", "POST", "/api/v1/checkouts", {"content": b'{"products": [1e999]}'}, 422),
    ("checkout-api", "POST", "/api/v1/checkouts", {"content": b'{"voucher": "\\ud800"}'}, 422),
    ("checkout-api", "POST", "/api/v1/checkouts", {"content": b"\xff\xfe"}, 400),
    ("checkout-api", "POST", "/api/v1/checkouts", {"content": b" " * (MAX_BODY_BYTES + 1)}, 413),
    ("checkout-api", "DELETE", "/api/v1/checkouts", {}, 405),
    ("checkout-api", "GET", "/nowhere", {}, 404),
    ("listener", "POST", "/midtrans/notifications", {"content": b"[" * 1000 + b"]" * 1000}, 400),
    ("listener", "POST", "/midtrans/notifications", {"content": b'{"order_id": "x"}'}, 400),
    ("listener", "POST", "/midtrans/notifications", {"content": b'{"a": "\\u0000"}'}, 422),
    ("listener", "GET", "/readyz", {}, 503),
    ("users", "POST", "/api/v1/users", {"content": b'{"username": 1}'}, 422),
    ("users", "POST", "/api/v1/users", {"content": b'{"password": "\\udc00xxxxxxxx"}'}, 422),
    ("users", "POST", "/api/v1/auth/login", {"content": b"[" * 1000 + b"]" * 1000}, 400),
    ("users", "GET", "/api/v1/users/me", {}, 401),
    ("users", "GET", "/readyz", {}, 503),
    ("products", "GET", "/api/v1/products/a%00b", {}, 404),
    ("products", "GET", "/api/v1/products/" + "x" * 10_000, {}, 404),
    ("products", "POST", "/api/v1/products", {"content": b'{"name": "\\ud800"}'}, 422),
    (
        "products",
        "POST",
        "/api/v1/products",
        {"json": {"name": "x", "price": 0, "stock": 1}, "headers": AUTH},
        422,
    ),
    ("products", "POST", "/api/v1/products", {"json": {"name": "x", "price": 1, "stock": 1}}, 401),
]


def _operations(app: FastAPI) -> Iterator[tuple[str, str, dict[str, Any]]]:
    for path, methods in app.openapi()["paths"].items():
        for method, operation in methods.items():
            yield path, method, operation


@pytest.mark.parametrize("name", APPS)
def test_every_declared_error_is_a_problem_document(name: str) -> None:
    app = APPS[name]
    schemas = app.openapi()["components"]["schemas"]
    assert "HTTPValidationError" not in schemas
    for path, method, operation in _operations(app):
        assert operation.get("tags"), (path, method)
        errors = {code: r for code, r in operation["responses"].items() if code[0] in "45"}
        assert "500" in errors, (path, method)
        for code, response in errors.items():
            assert list(response["content"]) == [PROBLEM_JSON], (path, method, code)
            ref = response["content"][PROBLEM_JSON]["schema"]["$ref"]
            assert ref.rsplit("/", 1)[1] in MODELS, (path, method, code, ref)


@pytest.fixture
async def clients() -> AsyncIterator[dict[str, httpx.AsyncClient]]:
    opened = {
        name: httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app, raise_app_exceptions=False),
            base_url="http://test",
        )
        for name, app in APPS.items()
    }
    yield opened
    for client in opened.values():
        await client.aclose()


def _declared(app: FastAPI, method: str, path: str, status: int) -> type[Problem]:
    """The model the OpenAPI declares for this answer (Problem for unrouted paths)."""
    for template, template_method, operation in _operations(app):
        same = len(template.split("/")) == len(path.split("/")) and all(
            a == b or a.startswith("{")
            for a, b in zip(template.split("/"), path.split("/"), strict=True)
        )
        if same and template_method == method.lower():
            response = operation["responses"].get(str(status))
            assert response is not None, f"{method} {template} does not declare {status}"
            ref = response["content"][PROBLEM_JSON]["schema"]["$ref"]
            return MODELS[ref.rsplit("/", 1)[1]]
    return Problem


@pytest.mark.parametrize(("name", "method", "path", "request_args", "status"), ERRORS)
async def test_an_error_answer_is_the_declared_problem_document(
    clients: dict[str, httpx.AsyncClient],
    name: str,
    method: str,
    path: str,
    request_args: dict[str, Any],
    status: int,
) -> None:
    request_args = {"headers": JSON} | request_args
    reply = await clients[name].request(method, path, **request_args)
    assert reply.status_code == status, reply.text
    assert reply.headers["content-type"] == PROBLEM_JSON
    body = reply.json()
    model = _declared(APPS[name], method, path, status)
    assert model.model_validate(body).status == status
    assert body["type"] == problems.TYPE_BASE + body["reason"]
    assert "\\ud" not in reply.text and "\\u0000" not in reply.text  # never the input
    if body["reason"] == "INVALID_REQUEST":
        assert body["errors"] and all(e["loc"][0] in ("body", "query") for e in body["errors"])


async def test_a_streamed_body_is_cut_off_at_the_limit(
    clients: dict[str, httpx.AsyncClient],
) -> None:
    read: list[int] = []

    async def chunks() -> AsyncIterator[bytes]:
        for _ in range(100):
            read.append(1)
            yield b" " * 4096

    reply = await clients["listener"].post("/midtrans/notifications", content=chunks())
    assert reply.status_code == 413 and reply.json()["reason"] == "BODY_TOO_LARGE"
    assert len(read) < 100  # refused while arriving, not after


async def test_content_length_over_the_limit_is_refused_before_the_app_runs() -> None:
    reached: list[str] = []

    async def app(scope: Any, receive: Any, send: Any) -> None:
        reached.append(scope["path"])

    limited = BodyLimit(app, limit=10)
    transport = httpx.ASGITransport(app=limited)
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
        reply = await client.post("/x", content=b"x" * 11)
    assert reply.status_code == 413 and reply.headers["content-type"] == PROBLEM_JSON
    assert reached == []


async def test_an_uncaught_error_is_a_500_problem_without_internals() -> None:
    app = FastAPI()

    @app.get("/boom")
    async def boom() -> None:
        raise RuntimeError("password=hunter2 at /srv/secret.py")

    @app.get("/apiserver/{status}")
    async def apiserver(status: int) -> None:
        raise ApiError(status, "etcd down" if status >= 500 else "Refused")

    problems.install(app)
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
        boom_reply = await client.get("/boom")
        down = await client.get("/apiserver/500")
        throttled = await client.get("/apiserver/429")
        forbidden = await client.get("/apiserver/403")
    assert boom_reply.status_code == 500 and boom_reply.json()["reason"] == "INTERNAL_ERROR"
    assert "hunter2" not in boom_reply.text and "secret" not in boom_reply.text
    assert down.status_code == 503 and down.json()["reason"] == "APISERVER_UNAVAILABLE"
    assert down.headers["retry-after"] == "1"
    assert throttled.status_code == 503 and throttled.json()["reason"] == "APISERVER_UNAVAILABLE"
    # A refusal of a request we should not have sent is a bug, not a retry.
    assert forbidden.status_code == 500 and forbidden.json()["reason"] == "INTERNAL_ERROR"


def test_the_crd_refuses_what_the_api_refuses() -> None:
    """The CRD's id pattern, price and quantity bounds are saga_kit.checkout_bounds'."""
    crd = yaml.safe_load((ROOT / "crds" / "checkout.yaml").read_text())
    spec = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]
    item = spec["properties"]["items"]["items"]["properties"]
    assert item["productId"]["pattern"] == bounds.ID_PATTERN
    assert item["productId"]["maxLength"] == bounds.PRODUCT_ID_MAX_LENGTH
    assert spec["properties"]["userId"]["pattern"] == bounds.ID_PATTERN
    assert spec["properties"]["userId"]["maxLength"] == bounds.ID_MAX_LENGTH
    assert item["unitPrice"]["minimum"] == bounds.MIN_UNIT_PRICE
    assert item["unitPrice"]["maximum"] == bounds.MAX_UNIT_PRICE
    assert item["quantity"]["maximum"] == bounds.MAX_QUANTITY
    assert spec["properties"]["items"]["maxItems"] == bounds.MAX_ITEMS
    worst = bounds.MAX_ITEMS * bounds.MAX_QUANTITY * bounds.MAX_UNIT_PRICE
    assert worst < 2**63  # a total Postgres' bigint holds
    assert bounds.possible_id("p-1") and not bounds.possible_id("p\x00")
    assert not bounds.possible_name(".") and not bounds.possible_name("..")
