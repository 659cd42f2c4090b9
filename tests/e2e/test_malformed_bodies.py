"""Bodies no one should send, at the shop's and Midtrans' doors (the checkout API, the
listener, the User and Product REST APIs): a clear 4xx problem document, never a crash.

A hypothesis property over JSON-ish values, shrunk and replayed on failure. Values that
JSON and UTF-8 cannot carry (NaN, Infinity, NUL, lone surrogates) are always among the
leaves and in the explicit examples: each has crashed a JSON API somewhere.
"""

from __future__ import annotations

import asyncio
import json
import math
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, example, given, note, settings
from hypothesis import strategies as st

from tests.e2e.conftest import System

JSON = {"Content-Type": "application/json"}

NASTY: list[Any] = [math.nan, math.inf, -math.inf, "\x00", "p\x00", "\ud800", "x\udfff", "\udc00a"]
LEAF = (
    st.sampled_from(NASTY)
    | st.none()
    | st.booleans()
    | st.integers()
    | st.floats()
    | st.text(max_size=20)
)
JSON_VALUES = st.recursive(
    LEAF,
    lambda children: (
        st.lists(children, max_size=4)
        | st.dictionaries(st.text(max_size=10) | st.sampled_from(NASTY[3:]), children, max_size=4)
    ),
    max_leaves=12,
)
ITEM = st.fixed_dictionaries(
    {},
    optional={
        "id": JSON_VALUES | st.text(max_size=60) | st.sampled_from(NASTY),
        "price": JSON_VALUES | st.integers(),
        "quantity": JSON_VALUES | st.integers(),
        "extra": JSON_VALUES,
    },
)
BODY = JSON_VALUES | st.fixed_dictionaries(
    {"products": st.lists(ITEM, max_size=3) | JSON_VALUES},
    optional={"voucher": JSON_VALUES, "customer": JSON_VALUES, "payment_ttl_seconds": JSON_VALUES},
)
ACCOUNT = st.fixed_dictionaries(
    {},
    optional={
        "username": JSON_VALUES | st.text(min_size=3, max_size=40),
        "email": JSON_VALUES | st.emails(),
        "password": JSON_VALUES | st.text(min_size=8, max_size=40),
    },
)
PRODUCT = st.fixed_dictionaries(
    {},
    optional={
        "name": JSON_VALUES | st.text(max_size=30),
        "price": JSON_VALUES | st.integers(),
        "stock": JSON_VALUES | st.integers(),
        "slug": JSON_VALUES,
        "description": JSON_VALUES,
    },
)
# How the body goes on the wire: escaped ASCII JSON (NaN and Infinity as bare words,
# a lone surrogate as \udXXX), or raw UTF-8 (a lone surrogate as bytes no decoder takes).
ENCODING = st.sampled_from(["ascii", "utf-8"])


def encode(body: Any, encoding: str) -> bytes:
    if encoding == "ascii":
        return json.dumps(body).encode()
    return json.dumps(body, ensure_ascii=False).encode("utf-8", "surrogatepass")


def clean(value: Any) -> bool:
    """Whether strict JSON in valid UTF-8 can carry ``value``: finite numbers, strings
    without NUL or surrogates."""
    if isinstance(value, float):
        return math.isfinite(value)
    if isinstance(value, str):
        return "\x00" not in value and not any(0xD800 <= ord(c) <= 0xDFFF for c in value)
    if isinstance(value, list):
        return all(clean(v) for v in value)
    if isinstance(value, dict):
        return all(clean(k) and clean(v) for k, v in value.items())
    return True


def might_be_a_checkout(body: Any) -> bool:
    """Over-generous on purpose: anything the API might rightly take is counted here;
    everything else is invalid and must be refused with a 4xx."""
    if not clean(body) or not isinstance(body, dict):
        return False
    products = body.get("products")
    return (
        isinstance(products, list)
        and bool(products)
        and all(
            isinstance(item, dict)
            and isinstance(item.get("id"), str)
            and all(
                isinstance(item.get(k), int) and not isinstance(item.get(k), bool)
                for k in ("price", "quantity")
            )
            for item in products
        )
    )


class Buyers:
    """A buyer's auth header; a fresh buyer when the POST rate or open-checkout limit
    answers 429, so a limit never stands in for the answer being tested."""

    def __init__(self, system: System) -> None:
        self.system = system
        self.auth = self.fresh()

    def fresh(self) -> dict[str, str]:
        async def account() -> dict[str, str]:
            async with httpx.AsyncClient(timeout=30) as http:
                return (await self.system.account(http))[1]

        self.auth = asyncio.run(account())
        return self.auth

    def post(self, http: httpx.Client, content: bytes) -> httpx.Response:
        url = f"{self.system.api}/api/v1/checkouts"
        headers = {**self.auth, "Content-Type": "application/json"}
        reply = http.post(url, content=content, headers=headers)
        for _ in range(3):
            if reply.status_code != 429:
                break
            headers = {**self.fresh(), "Content-Type": "application/json"}
            reply = http.post(url, content=content, headers=headers)
        return reply


@pytest.fixture(scope="module")
def buyers(system: System) -> Buyers:
    return Buyers(system)


@pytest.fixture(scope="module")
def owner(buyers: Buyers) -> dict[str, str]:
    """A product owner's auth header (any account may list products)."""
    return buyers.fresh()


@pytest.fixture(scope="module")
def http() -> Iterator[httpx.Client]:
    with httpx.Client(timeout=60) as client:
        yield client


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(body=BODY, encoding=ENCODING)
@example(body={"products": [{"id": "p", "price": math.nan, "quantity": 1}]}, encoding="ascii")
@example(body={"products": [{"id": "p", "price": 1, "quantity": math.inf}]}, encoding="ascii")
@example(body={"products": [{"id": "p", "price": -math.inf, "quantity": 1}]}, encoding="ascii")
@example(body={"products": [{"id": "\x00", "price": 1, "quantity": 1}]}, encoding="ascii")
@example(body={"products": [{"id": "\ud800", "price": 1, "quantity": 1}]}, encoding="ascii")
@example(body={"products": [{"id": "\ud800", "price": 1, "quantity": 1}]}, encoding="utf-8")
@example(
    body={"products": [{"id": "p", "price": 1, "quantity": 1}], "voucher": "v\x00"},
    encoding="ascii",
)
@example(
    body={"products": [{"id": "p", "price": 1, "quantity": 1}], "customer": {"email": "\udfff"}},
    encoding="ascii",
)
@example(body=math.nan, encoding="ascii")
@example(body={"order_id": "\x00", "signature_key": "\ud800"}, encoding="utf-8")
def test_malformed_bodies_are_4xx_never_2xx_or_5xx(
    system: System, buyers: Buyers, http: httpx.Client, body: Any, encoding: str
) -> None:
    content = encode(body, encoding)
    note(f"wire: {content[:300]!r}")
    reply = buyers.post(http, content)
    assert reply.status_code < 500, (reply.status_code, reply.text)
    if not might_be_a_checkout(body):
        assert 400 <= reply.status_code < 500, (reply.status_code, reply.text)
    if reply.status_code >= 400:
        assert_problem(reply)
    # Nothing here carries a valid signature: the listener records none of it.
    listener = http.post(system.listener, content=content, headers=JSON)
    assert 400 <= listener.status_code < 500, (listener.status_code, listener.text)
    assert_problem(listener)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(body=ACCOUNT | PRODUCT | JSON_VALUES, encoding=ENCODING)
@example(body={"username": "abcde", "email": "a@b.co", "password": "\ud800" * 9}, encoding="ascii")
@example(body={"name": "teh\x00", "price": 1, "stock": 1}, encoding="ascii")
@example(body={"name": "teh", "price": math.nan, "stock": 1}, encoding="ascii")
@example(body={"name": "teh", "price": 0, "stock": 1}, encoding="ascii")
def test_user_and_product_bodies_are_never_5xx_and_refusals_are_problems(
    system: System, owner: dict[str, str], http: httpx.Client, body: Any, encoding: str
) -> None:
    content = encode(body, encoding)
    note(f"wire: {content[:300]!r}")
    for url, headers in (
        (f"{system.users}/users", JSON),
        (f"{system.users}/auth/login", JSON),
        (f"{system.products}/products", {**owner, **JSON}),
    ):
        reply = http.post(url, content=content, headers=headers)
        assert reply.status_code < 500, (url, reply.status_code, reply.text)
        if reply.status_code >= 400:
            assert_problem(reply)


def assert_problem(reply: httpx.Response) -> None:
    """An RFC 9457 problem document with its reason code."""
    assert reply.headers["content-type"] == "application/problem+json", reply.text
    problem = reply.json()
    assert problem["status"] == reply.status_code, problem
    assert {"type", "title", "detail", "instance", "reason"} <= set(problem), problem
