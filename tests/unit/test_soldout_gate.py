"""The sold-out gate's rules, with a Product service stand-in that counts its calls."""

from __future__ import annotations

import asyncio
from typing import Any

import grpc
import pytest

from checkout.product.v1 import product_pb2
from checkout_api.soldout import SoldOutGate, Wanted


class Unreachable(grpc.aio.AioRpcError):
    def __init__(self, code: grpc.StatusCode) -> None:
        super().__init__(code, grpc.aio.Metadata(), grpc.aio.Metadata(), details=code.name)


class Products:
    def __init__(self, available: dict[str, int]) -> None:
        self.available = available
        self.calls = 0
        self.down = False

    async def GetProduct(
        self,
        request: product_pb2.GetProductRequest,
        timeout: float,  # noqa: ASYNC109  (the gRPC stub's signature)
    ) -> Any:
        self.calls += 1
        await asyncio.sleep(0.01)
        if self.down:
            raise Unreachable(grpc.StatusCode.UNAVAILABLE)
        if request.id not in self.available:
            raise Unreachable(grpc.StatusCode.NOT_FOUND)
        return product_pb2.Product(id=request.id, available=self.available[request.id])


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


@pytest.mark.parametrize(
    ("available", "quantity", "reason"),
    [(0, 1, "OutOfStock"), (2, 3, "InsufficientStock"), (3, 3, None), (None, 1, "ProductNotFound")],
)
async def test_refuses_what_the_saga_would_reject(
    available: int | None, quantity: int, reason: str | None
) -> None:
    products = Products({} if available is None else {"p": available})
    refusal = await SoldOutGate(products).refusal([Wanted("p", quantity)])
    assert (refusal.reason if refusal else None) == reason
    if refusal:
        assert "p" in refusal.message


async def test_a_crowd_shares_one_question_and_answers_are_kept_for_the_ttl() -> None:
    products, clock = Products({"hot": 0}), Clock()
    gate = SoldOutGate(products, ttl=1.0, clock=clock)
    answers = await asyncio.gather(*(gate.refusal([Wanted("hot", 1)]) for _ in range(50)))
    assert all(a is not None and a.reason == "OutOfStock" for a in answers)
    assert products.calls == 1
    clock.now += 0.5
    await gate.refusal([Wanted("hot", 1)])
    assert products.calls == 1
    clock.now += 1.0  # stale: asked again, and the restock is seen
    products.available["hot"] = 4
    assert await gate.refusal([Wanted("hot", 1)]) is None
    assert products.calls == 2


async def test_a_product_service_that_cannot_answer_refuses_nobody() -> None:
    products = Products({"p": 0})
    products.down = True
    gate = SoldOutGate(products)
    assert await gate.refusal([Wanted("p", 1)]) is None
    products.down = False  # nothing was remembered from the failure
    refusal = await gate.refusal([Wanted("p", 1)])
    assert refusal is not None and refusal.reason == "OutOfStock"


async def test_what_this_api_reserves_or_the_saga_refuses_updates_the_answer() -> None:
    products, clock = Products({"p": 2}), Clock()
    gate = SoldOutGate(products, ttl=60.0, clock=clock)
    assert await gate.refusal([Wanted("p", 1)]) is None
    gate.reserved([Wanted("p", 2)])  # our own checkout took the last two
    refusal = await gate.refusal([Wanted("p", 1)])
    assert refusal is not None and refusal.reason == "OutOfStock" and products.calls == 1
    products.available["p"] = 1  # released elsewhere; the saga refused someone meanwhile
    gate.forget([Wanted("p", 1)])
    assert await gate.refusal([Wanted("p", 1)]) is None and products.calls == 2
