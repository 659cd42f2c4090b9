"""Reserve on the real Postgres through the real gRPC server: rules and concurrency."""

from __future__ import annotations

import asyncio
import uuid

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from checkout.product.v1 import product_pb2, product_pb2_grpc
from product_service import store
from product_service.domain import ProductError
from saga_kit.events import EventType
from saga_kit.grpc_auth import ServiceTokenClientInterceptor
from saga_kit.grpc_errors import error_details
from saga_kit.settings import Secret
from tests.integration.product_fixtures import ProductEnv

pytestmark = pytest.mark.asyncio


def txid() -> str:
    return f"order-{uuid.uuid4().hex[:12]}"


async def failure(coro: object) -> grpc.aio.AioRpcError:
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await coro  # type: ignore[misc]
    return err.value


async def test_reserve_holds_stock_and_reports_lines(product_env: ProductEnv) -> None:
    a = await product_env.product(price=10_000, stock=5)
    b = await product_env.product(price=2_500, stock=3)
    reply = await product_env.reserve(txid(), (a, 10_000, 2), (b, 2_500, 3))
    r = reply.reservation
    assert r.status == product_pb2.RESERVATION_STATUS_RESERVED
    assert r.subtotal == 2 * 10_000 + 3 * 2_500
    assert sorted((line.product_id, line.quantity) for line in r.lines) == sorted([(a, 2), (b, 3)])
    assert not reply.replayed
    assert await product_env.stock_of(a) == (5, 2)
    assert await product_env.stock_of(b) == (3, 3)
    product = await product_env.stub.GetProduct(product_pb2.GetProductRequest(id=b))
    assert (product.stock, product.reserved, product.available) == (3, 3, 0)


@pytest.mark.parametrize(
    ("case", "code", "reason"),
    [
        ("unknown", grpc.StatusCode.NOT_FOUND, "PRODUCT_NOT_FOUND"),
        ("stock-0", grpc.StatusCode.FAILED_PRECONDITION, "OUT_OF_STOCK"),
        ("too-many", grpc.StatusCode.FAILED_PRECONDITION, "INSUFFICIENT_STOCK"),
        ("price", grpc.StatusCode.FAILED_PRECONDITION, "PRICE_MISMATCH"),
    ],
)
async def test_the_four_validations_are_distinct_errors_naming_the_product(
    product_env: ProductEnv, case: str, code: grpc.StatusCode, reason: str
) -> None:
    ok = await product_env.product(price=100, stock=10)
    bad = await product_env.product(price=500, stock=0 if case == "stock-0" else 2)
    if case == "unknown":
        bad = "no-such-product"
    quantity = 3 if case == "too-many" else 1
    price = 499 if case == "price" else 500
    err = await failure(product_env.reserve(txid(), (ok, 100, 1), (bad, price, quantity)))
    details = error_details(err)
    assert (details.code, details.reason) == (code, reason)
    assert details.domain == "product.checkout.saga.dev"
    assert details.metadata["product_id"] == bad
    assert bad in details.message
    if case == "too-many":
        assert details.metadata["available"] == "2" and details.metadata["requested"] == "3"
    if case == "price":
        assert details.metadata["current_price"] == "500"
    # All or nothing: the valid line holds nothing either.
    assert await product_env.stock_of(ok) == (10, 0)


async def test_bad_requests_are_invalid_argument_naming_fields(product_env: ProductEnv) -> None:
    p = await product_env.product()
    cases = {
        "items[1].product_id": [(p, 10_000, 1), (p, 10_000, 2)],  # the same product twice
        "items[0].quantity": [(p, 10_000, 0)],
        "items[0].unit_price": [(p, -1, 1)],
        "items": [],
    }
    for field, items in cases.items():
        err = await failure(product_env.reserve(txid(), *items))
        details = error_details(err)
        assert details.code == grpc.StatusCode.INVALID_ARGUMENT
        assert field in details.field_violations, (field, details.field_violations)
    err = await failure(product_env.reserve("bad id/with slash", (p, 10_000, 1)))
    assert "transaction_id" in error_details(err).field_violations
    assert await product_env.stock_of(p) == (10, 0)


async def test_reserve_is_idempotent_per_transaction_id(product_env: ProductEnv) -> None:
    p = await product_env.product(stock=10)
    tx = txid()
    first = await product_env.reserve(tx, (p, 10_000, 4))
    again = await product_env.reserve(tx, (p, 10_000, 4))
    assert again.replayed and not first.replayed
    assert again.reservation.lines == first.reservation.lines
    assert again.reservation.subtotal == first.reservation.subtotal
    assert await product_env.stock_of(p) == (10, 4)

    concurrent_tx = txid()
    replies = await asyncio.gather(
        *(product_env.reserve(concurrent_tx, (p, 10_000, 1)) for _ in range(10))
    )
    assert sum(not r.replayed for r in replies) == 1
    assert await product_env.stock_of(p) == (10, 5)

    reused = await failure(product_env.reserve(tx, (p, 10_000, 5)))
    details = error_details(reused)
    assert (details.code, details.reason) == (
        grpc.StatusCode.ALREADY_EXISTS,
        "TRANSACTION_ID_REUSED",
    )


async def test_a_failed_reserve_can_be_retried_with_the_same_id(product_env: ProductEnv) -> None:
    p = await product_env.product(price=100, stock=1)
    tx = txid()
    await failure(product_env.reserve(tx, (p, 100, 2)))
    reply = await product_env.reserve(tx, (p, 100, 1))
    assert not reply.replayed
    assert await product_env.stock_of(p) == (1, 1)


async def test_200_concurrent_reserves_for_50_units_never_oversell(
    product_env: ProductEnv,
) -> None:
    p = await product_env.product(price=1_000, stock=50)

    async def attempt() -> str:
        try:
            await product_env.reserve(txid(), (p, 1_000, 1))
            return "ok"
        except grpc.aio.AioRpcError as exc:
            return error_details(exc).reason

    outcomes = await asyncio.gather(*(attempt() for _ in range(200)))
    assert outcomes.count("ok") == 50
    assert set(outcomes) == {"ok", "OUT_OF_STOCK"}
    stock, reserved = await product_env.stock_of(p)
    assert (stock, reserved) == (50, 50)
    held = await product_env.pool.fetchval(
        "SELECT sum(quantity) FROM reservation_lines WHERE product_id = $1", p
    )
    assert held == 50


async def test_opposite_orders_do_not_deadlock(product_env: ProductEnv) -> None:
    a = await product_env.product(price=100, stock=1000)
    b = await product_env.product(price=200, stock=1000)
    c = await product_env.product(price=300, stock=1000)

    async def checkout(i: int) -> None:
        items = [(a, 100, 1), (b, 200, 1), (c, 300, 1)]
        if i % 2:
            items.reverse()
        await product_env.reserve(txid(), *items)

    await asyncio.wait_for(asyncio.gather(*(checkout(i) for i in range(120))), timeout=120)
    for p in (a, b, c):
        assert await product_env.stock_of(p) == (1000, 120)


async def test_owner_edits_never_break_outstanding_reservations(product_env: ProductEnv) -> None:
    p = await product_env.product(price=100, stock=10)
    await product_env.reserve(txid(), (p, 100, 6))
    with pytest.raises(ProductError) as refused:
        await store.update_product(product_env.pool, p, "owner-1", {"stock": 5})
    assert refused.value.reason == "STOCK_BELOW_RESERVED"
    updated = await store.update_product(product_env.pool, p, "owner-1", {"stock": 6})
    assert (updated.stock, updated.reserved, updated.available) == (6, 6, 0)
    # A price change applies to new checkouts only.
    await store.update_product(product_env.pool, p, "owner-1", {"price": 150, "stock": 8})
    err = await failure(product_env.reserve(txid(), (p, 100, 1)))
    assert error_details(err).reason == "PRICE_MISMATCH"
    await product_env.reserve(txid(), (p, 150, 2))
    assert await product_env.stock_of(p) == (8, 8)


async def test_get_reservation_and_list_products(product_env: ProductEnv) -> None:
    ids = [await product_env.product(owner="owner-x") for _ in range(5)]
    await product_env.product(owner="someone-else")
    seen: list[str] = []
    token = ""
    while True:
        page = await product_env.stub.ListProducts(
            product_pb2.ListProductsRequest(owner_id="owner-x", page_size=2, page_token=token)
        )
        seen += [p.id for p in page.products]
        token = page.next_page_token
        if not token:
            break
    assert seen == ids
    err = await failure(
        product_env.stub.GetReservation(product_pb2.GetReservationRequest(transaction_id="nope"))
    )
    assert error_details(err).reason == "RESERVATION_NOT_FOUND"
    err = await failure(
        product_env.stub.ListProducts(product_pb2.ListProductsRequest(page_token="garbage!"))
    )
    assert error_details(err).code == grpc.StatusCode.INVALID_ARGUMENT


async def test_open_reservations_names_those_still_holding_stock(
    product_env: ProductEnv,
) -> None:
    p = await product_env.product(stock=10)
    held, committed, cancelled, settled = txid(), txid(), txid(), txid()
    for order in (held, committed, cancelled, settled):
        await product_env.reserve(order, (p, 10_000, 1))
    for order, event in (
        (committed, EventType.COMMITTED),
        (cancelled, EventType.CANCELLED),
        (settled, EventType.COMMITTED),
        (settled, EventType.SETTLED),
    ):
        await store.apply_event(product_env.pool, order, event)
    asked = [held, committed, cancelled, settled, "never-reserved"]
    reply = await product_env.stub.OpenReservations(
        product_pb2.OpenReservationsRequest(transaction_ids=asked)
    )
    assert sorted(reply.transaction_ids) == sorted([held, committed])
    empty = await product_env.stub.OpenReservations(product_pb2.OpenReservationsRequest())
    assert list(empty.transaction_ids) == []

    for bad, field in (
        ([txid() for _ in range(501)], "transaction_ids"),
        ([held, "a b"], "transaction_ids[1]"),
    ):
        err = await failure(
            product_env.stub.OpenReservations(
                product_pb2.OpenReservationsRequest(transaction_ids=bad)
            )
        )
        details = error_details(err)
        assert details.code == grpc.StatusCode.INVALID_ARGUMENT
        assert field in details.field_violations, details


async def test_callers_without_the_service_token_are_refused(product_env: ProductEnv) -> None:
    for channel in (
        grpc.aio.insecure_channel(product_env.target),
        grpc.aio.insecure_channel(
            product_env.target,
            interceptors=[ServiceTokenClientInterceptor(Secret("wrong"))],
        ),
    ):
        stub = product_pb2_grpc.ProductServiceStub(channel)
        err = await failure(stub.GetProduct(product_pb2.GetProductRequest(id="x")))
        assert err.code() == grpc.StatusCode.UNAUTHENTICATED
        health = health_pb2_grpc.HealthStub(channel)
        reply = await health.Check(health_pb2.HealthCheckRequest(service=""))  # type: ignore[attr-defined]
        assert reply.status == health_pb2.HealthCheckResponse.SERVING
        await channel.close()
