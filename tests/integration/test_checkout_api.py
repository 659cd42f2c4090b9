"""The checkout API in-process against the real saga: 202 on a slow saga, archived reads,
and the limits against stock hoarding (TTL cap, open checkouts per user, POST rate)."""

from __future__ import annotations

import asyncio
import datetime as dt
import uuid
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
import redis.asyncio as aioredis

from checkout.product.v1 import product_pb2_grpc
from checkout_api.admission import Admission
from checkout_api.app import READY, ApiDeps, create_app
from checkout_api.kube import Checkouts
from checkout_api.limits import Limits
from checkout_api.quota import Quota
from checkout_api.soldout import SoldOutGate
from checkout_api.watch import CheckoutWatch
from checkout_operator.app import open_database
from saga_kit.grpc_auth import authenticated_channel
from saga_kit.kube import kube_api_client
from saga_kit.user_auth import UserServiceAuthenticator
from tests.helpers.processes import free_port
from tests.helpers.waiting import eventually
from tests.integration.saga_fixtures import SagaEnv


@pytest.fixture
async def api(saga: SagaEnv) -> AsyncIterator[tuple[httpx.AsyncClient, ApiDeps]]:
    s = saga.settings
    # The read model exists before the API serves (the operator creates it at start).
    pool = await open_database(s.database_url.value, s.db_schema)
    kube = await kube_api_client()
    users = authenticated_channel(s.user_service, s.service_token)
    products = authenticated_channel(s.product_service, s.service_token)
    redis = aioredis.Redis.from_url(s.redis_url.value)
    watch_api = await kube_api_client()
    watch = CheckoutWatch(watch_api, saga.namespace, READY)
    stop = asyncio.Event()
    watching = asyncio.create_task(watch.run(stop))
    product_stub = product_pb2_grpc.ProductServiceStub(products)
    deps = ApiDeps(
        checkouts=Checkouts(kube, saga.namespace),
        readmodel=pool,
        authenticator=UserServiceAuthenticator(users),
        products=product_stub,
        wait_seconds=10,
        quota=Quota(Limits(), redis, pool),
        watch=watch,
        soldout=SoldOutGate(product_stub),
        admission=Admission(32),
    )
    transport = httpx.ASGITransport(app=create_app(deps))
    async with httpx.AsyncClient(transport=transport, base_url="http://api") as http:
        yield http, deps
    stop.set()
    await watching
    await watch_api.close()
    await redis.aclose()
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
    got: dict[str, Any] = {}

    async def waiting_for_payment() -> bool:
        got.update((await http.get(reply.json()["status_url"], headers=auth)).json())
        return bool(got["phase"] == "AwaitingPayment")

    await eventually(waiting_for_payment, within=15, interval=0.05, failure=lambda: str(got))
    assert got["snap_token"]
    assert got["id"] == cid


async def cancel_until_archived(
    saga: SagaEnv, http: httpx.AsyncClient, cid: str, auth: dict[str, str]
) -> None:
    """Cancel the checkout and wait until its Checkout is deleted (an operator with a
    short TTL after finishing): only the journal knows it then."""
    await http.post(f"/api/v1/checkouts/{cid}/cancel", headers=auth)

    async def deleted() -> bool:
        return await saga.get(cid) is None

    await eventually(deleted, within=15, interval=0.05)


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
    await cancel_until_archived(saga, http, cid, auth)
    one = await http.get(f"/api/v1/checkouts/{cid}", headers=auth)
    assert one.status_code == 200 and one.json()["phase"] == "Cancelled"
    assert one.json()["items"] == [{"product_id": product, "unit_price": 3_000, "quantity": 2}]
    listed = await http.get("/api/v1/checkouts", params={"page_size": 1}, headers=auth)
    assert [c["id"] for c in listed.json()["items"]] == [cid]
    assert listed.json()["next_page_token"] is None


async def test_a_retry_after_the_checkout_was_archived_returns_the_original(
    saga: SagaEnv, api: tuple[httpx.AsyncClient, ApiDeps]
) -> None:
    http, _ = api
    await saga.start_operator(ttl_after_finished=dt.timedelta(seconds=1))
    _, token = await saga.users.token_for(f"b{uuid.uuid4().hex[:8]}")
    keyed = {"Authorization": f"Bearer {token}", "Idempotency-Key": "order-2026-11-28-a"}
    product = await saga.products.product(price=3_000, stock=5)
    cart = {"products": [{"id": product, "price": 3_000, "quantity": 2}]}
    first = await http.post("/api/v1/checkouts", json=cart, headers=keyed)
    assert first.status_code == 201, first.text
    cid = first.json()["id"]
    await cancel_until_archived(saga, http, cid, keyed)
    again = await http.post("/api/v1/checkouts", json=cart, headers=keyed)
    assert again.status_code == 200, again.text
    assert again.json()["id"] == cid and again.json()["phase"] == "Cancelled"
    assert again.headers["Idempotent-Replayed"] == "true"
    other = {"products": [{"id": product, "price": 3_000, "quantity": 1}]}
    reused = await http.post("/api/v1/checkouts", json=other, headers=keyed)
    assert reused.status_code == 422 and "IDEMPOTENCY_KEY_REUSED" in reused.text
    assert await saga.get(cid) is None  # no second saga under the same order id
    assert await saga.products.stock_of(product) == (5, 0)


# --- limits against stock hoarding -------------------------------------------------------


async def _buyer(saga: SagaEnv) -> dict[str, str]:
    _, token = await saga.users.token_for(f"b{uuid.uuid4().hex[:8]}")
    return {"Authorization": f"Bearer {token}"}


def _checkouts(saga: SagaEnv) -> list[str]:
    out = saga.platform.kubectl("get", "checkouts", "-o", "name", namespace=saga.namespace)
    return out.stdout.split()


def _cart(product: str, **extra: object) -> dict[str, object]:
    return {"products": [{"id": product, "price": 3_000, "quantity": 1}], **extra}


async def _limited(
    saga: SagaEnv, deps: ApiDeps, limits: Limits, stock: int
) -> tuple[dict[str, str], dict[str, str], str]:
    """These limits, no waiting for the operator (accepted checkouts stay Pending: 202),
    two buyers and a product: ``alice, bob, product``."""
    deps.wait_seconds = 0.1
    deps.quota.limits = limits
    alice, bob = await _buyer(saga), await _buyer(saga)
    product = await saga.products.product(price=3_000, stock=stock)
    return alice, bob, product


async def test_a_payment_ttl_above_the_cap_is_refused_naming_the_limit(
    saga: SagaEnv, api: tuple[httpx.AsyncClient, ApiDeps]
) -> None:
    http, deps = api
    deps.wait_seconds = 0.1  # no operator: accepted checkouts stay Pending (202)
    auth = await _buyer(saga)
    product = await saga.products.product(price=3_000, stock=5)
    for ttl in (3_601, 604_800):
        over = await http.post(
            "/api/v1/checkouts", json=_cart(product, payment_ttl_seconds=ttl), headers=auth
        )
        assert over.status_code == 422, over.text
        assert over.headers["content-type"] == "application/problem+json"
        assert (over.json()["reason"], over.json()["detail"]) == (
            "PaymentTTLTooLong",
            f"payment_ttl_seconds {ttl} exceeds the limit of 3600 seconds",
        )
    assert _checkouts(saga) == []
    at_cap = await http.post(
        "/api/v1/checkouts", json=_cart(product, payment_ttl_seconds=3_600), headers=auth
    )
    assert at_cap.status_code == 202, at_cap.text
    default = await http.post("/api/v1/checkouts", json=_cart(product), headers=auth)
    ttls = []
    for reply in (at_cap, default):
        body = await saga.get(reply.json()["id"])
        assert body is not None
        ttls.append(body["spec"]["paymentTTLSeconds"])
    assert ttls == [3_600, 900]
    # The cap is a setting.
    deps.quota.limits = Limits(max_payment_ttl_seconds=600, default_payment_ttl_seconds=300)
    over = await http.post(
        "/api/v1/checkouts", json=_cart(product, payment_ttl_seconds=601), headers=auth
    )
    assert over.status_code == 422 and "limit of 600 seconds" in over.text


async def test_a_burst_of_posts_never_opens_more_checkouts_than_the_limit(
    saga: SagaEnv, api: tuple[httpx.AsyncClient, ApiDeps]
) -> None:
    http, deps = api
    alice, bob, product = await _limited(
        saga, deps, Limits(max_open_per_user=3, post_burst=100), stock=50
    )
    keys = [uuid.uuid4().hex for _ in range(8)]
    # No operator yet: the read model knows none of these; only the API's own record counts.
    replies = await asyncio.gather(
        *(
            http.post(
                "/api/v1/checkouts", json=_cart(product), headers={**alice, "Idempotency-Key": k}
            )
            for k in keys
        )
    )
    assert sorted(r.status_code for r in replies) == [202] * 3 + [429] * 5, [
        r.text for r in replies
    ]
    refused = next(r for r in replies if r.status_code == 429)
    assert refused.json()["reason"] == "TooManyOpenCheckouts"
    assert "the limit is 3" in refused.json()["detail"]
    assert len(_checkouts(saga)) == 3
    assert (
        await http.post("/api/v1/checkouts", json=_cart(product), headers=bob)
    ).status_code == 202

    await saga.start_operator()
    accepted = [k for k, r in zip(keys, replies, strict=True) if r.status_code == 202]
    ids = [r.json()["id"] for r in replies if r.status_code == 202]
    for cid in ids:
        await saga.wait_phase(cid, "AwaitingPayment")
    # Registered by the operator now: still three open, and Retry-After says when one expires.
    full = await http.post("/api/v1/checkouts", json=_cart(product), headers=alice)
    assert full.status_code == 429 and full.json()["reason"] == "TooManyOpenCheckouts"
    assert 1 <= int(full.headers["retry-after"]) <= 900
    # A retried POST of an open checkout is no new checkout: it is answered, not refused.
    retry = await http.post(
        "/api/v1/checkouts", json=_cart(product), headers={**alice, "Idempotency-Key": accepted[0]}
    )
    assert retry.status_code == 200 and retry.json()["id"] == ids[0]
    # When one ends, there is room for one more.
    assert (await http.post(f"/api/v1/checkouts/{ids[0]}/cancel", headers=alice)).status_code == 202
    await saga.wait_phase(ids[0], "Cancelled")
    tries: list[httpx.Response] = []

    async def room() -> bool:  # the read model records the end right after the resource
        tries.append(await http.post("/api/v1/checkouts", json=_cart(product), headers=alice))
        return tries[-1].status_code != 429

    await eventually(room, within=5.0, interval=0.05)
    again = tries[-1]
    assert again.status_code in (201, 202), again.text


async def test_posts_beyond_the_rate_are_refused_with_retry_after(
    saga: SagaEnv, api: tuple[httpx.AsyncClient, ApiDeps]
) -> None:
    http, deps = api
    alice, bob, product = await _limited(
        saga, deps, Limits(post_burst=3, posts_per_minute=60), stock=5
    )
    key = {"Idempotency-Key": uuid.uuid4().hex}  # retries of one checkout count too
    for _ in range(3):
        reply = await http.post("/api/v1/checkouts", json=_cart(product), headers={**alice, **key})
        assert reply.status_code == 202, reply.text
    limited = await http.post("/api/v1/checkouts", json=_cart(product), headers={**alice, **key})
    assert limited.status_code == 429
    assert limited.json()["reason"] == "RateLimited"
    assert "at most 60 per minute" in limited.json()["detail"]
    assert limited.headers["retry-after"] == "1"
    other = await http.post("/api/v1/checkouts", json=_cart(product), headers=bob)
    assert other.status_code == 202, other.text
    await asyncio.sleep(1.0)  # one token back after a second at 60 per minute
    later = await http.post("/api/v1/checkouts", json=_cart(product), headers={**alice, **key})
    assert later.status_code == 202, later.text


async def test_without_redis_posts_fail_closed_and_reads_still_work(
    saga: SagaEnv, api: tuple[httpx.AsyncClient, ApiDeps]
) -> None:
    http, deps = api
    down = aioredis.Redis.from_url(f"redis://127.0.0.1:{free_port()}/0", socket_connect_timeout=1)
    deps.quota = Quota(Limits(), down, deps.readmodel)
    auth = await _buyer(saga)
    product = await saga.products.product(price=3_000, stock=5)
    reply = await http.post("/api/v1/checkouts", json=_cart(product), headers=auth)
    assert reply.status_code == 503, reply.text
    assert reply.json()["reason"] == "LimiterUnavailable"
    assert reply.headers["retry-after"] == "5"
    assert _checkouts(saga) == []
    assert (await http.get("/api/v1/checkouts", headers=auth)).status_code == 200
    await down.aclose()


async def _post_counting_gets(
    saga: SagaEnv, http: httpx.AsyncClient, deps: ApiDeps, monkeypatch: pytest.MonkeyPatch
) -> tuple[httpx.Response, list[str]]:
    _, token = await saga.users.token_for(f"b{uuid.uuid4().hex[:8]}")
    product = await saga.products.product(price=3_000, stock=5)
    body = {"products": [{"id": product, "price": 3_000, "quantity": 1}]}
    reads: list[str] = []
    get = deps.checkouts.get

    async def counted(name: str) -> dict[str, Any] | None:
        reads.append(name)
        return await get(name)

    monkeypatch.setattr(deps.checkouts, "get", counted)
    reply = await http.post(
        "/api/v1/checkouts", json=body, headers={"Authorization": f"Bearer {token}"}
    )
    return reply, reads


async def test_a_post_waits_on_the_watch_without_reading_the_checkout(
    saga: SagaEnv, api: tuple[httpx.AsyncClient, ApiDeps], monkeypatch: pytest.MonkeyPatch
) -> None:
    http, deps = api
    await saga.start_operator()
    await eventually(lambda: deps.watch.connected)
    reply, reads = await _post_counting_gets(saga, http, deps, monkeypatch)
    assert reply.status_code == 201, reply.text
    assert reply.json()["phase"] == "AwaitingPayment" and reply.json()["redirect_url"]
    assert reads == []  # woken by the watch: no GET of the Checkout


async def test_without_the_watch_a_post_still_gets_its_answer(
    saga: SagaEnv, api: tuple[httpx.AsyncClient, ApiDeps], monkeypatch: pytest.MonkeyPatch
) -> None:
    http, deps = api
    await saga.start_operator()
    # A watch that never connects (the apiserver refusing watches, say): the POST looks
    # for itself, as it did before the watch.
    kube = await kube_api_client()
    try:
        monkeypatch.setattr(deps, "watch", CheckoutWatch(kube, saga.namespace, READY))
        reply, reads = await _post_counting_gets(saga, http, deps, monkeypatch)
    finally:
        await kube.close()
    assert reply.status_code == 201, reply.text
    assert reply.json()["phase"] == "AwaitingPayment"
    assert reads  # it polled


async def test_a_sold_out_product_is_refused_without_creating_a_checkout(
    saga: SagaEnv, api: tuple[httpx.AsyncClient, ApiDeps]
) -> None:
    http, _ = api
    await saga.start_operator()
    _, token = await saga.users.token_for(f"b{uuid.uuid4().hex[:8]}")
    auth = {"Authorization": f"Bearer {token}"}
    product = await saga.products.product(price=3_000, stock=1)
    body = {"products": [{"id": product, "price": 3_000, "quantity": 1}]}
    first = await http.post(
        "/api/v1/checkouts", json=body, headers={**auth, "Idempotency-Key": "k1"}
    )
    assert first.status_code == 201, first.text  # holds the only unit now

    def checkouts() -> int:
        listed = saga.platform.kubectl("get", "checkouts", "-o", "name", namespace=saga.namespace)
        return len(listed.stdout.split())

    assert checkouts() == 1
    for attempt in range(3):
        late = await http.post("/api/v1/checkouts", json=body, headers=auth)
        assert late.status_code == 409, late.text
        assert late.json()["reason"] == "OutOfStock", attempt
        assert product in late.json()["detail"]
    assert checkouts() == 1  # nothing was created for the late buyers
    # The first buyer retrying its POST gets its checkout back, sold out or not.
    again = await http.post(
        "/api/v1/checkouts", json=body, headers={**auth, "Idempotency-Key": "k1"}
    )
    assert again.status_code == 200, again.text
    assert again.json()["id"] == first.json()["id"]
    assert again.headers["Idempotent-Replayed"] == "true"


async def test_a_post_beyond_the_in_flight_limit_is_refused_at_once(
    saga: SagaEnv, api: tuple[httpx.AsyncClient, ApiDeps], monkeypatch: pytest.MonkeyPatch
) -> None:
    http, deps = api
    _, token = await saga.users.token_for(f"b{uuid.uuid4().hex[:8]}")
    product = await saga.products.product(price=3_000, stock=5)
    body = {"products": [{"id": product, "price": 3_000, "quantity": 1}]}
    monkeypatch.setattr(deps, "admission", Admission(1))
    with deps.admission.admit():  # another POST is being served
        reply = await http.post(
            "/api/v1/checkouts", json=body, headers={"Authorization": f"Bearer {token}"}
        )
    assert reply.status_code == 503, reply.text
    assert reply.json()["reason"] == "Overloaded"
    assert reply.headers["Retry-After"] == "1"
    listed = saga.platform.kubectl("get", "checkouts", "-o", "name", namespace=saga.namespace)
    assert listed.stdout.split() == []  # nothing was created
