"""Refusing a checkout at once when a product has nothing left to reserve.

In a flash sale most buyers come after the stock is gone. Each of them used to cost
a Checkout resource, its reconciliation and a Reserve that could only fail. The
gate asks the Product service how much of each product is available (answers kept
for a moment, so a crowd costs a few calls, not one per buyer) and refuses with the
saga's own reasons, before anything is created.

It is only a shortcut: a product that shows stock here may still be gone when the
saga reserves (the saga refuses then, as before), and an answer at most
``ttl`` seconds old may refuse a buyer just before a unit comes back. A Product
service that cannot answer never refuses anyone: the checkout goes ahead.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import grpc

from checkout.product.v1 import product_pb2

log = logging.getLogger(__name__)

MAX_REMEMBERED = 10_000  # products; the oldest answers are dropped first


@dataclass(frozen=True)
class Refusal:
    reason: str  # the saga's reason: OutOfStock, InsufficientStock, ProductNotFound
    message: str


@dataclass(frozen=True)
class Wanted:
    product_id: str
    quantity: int


class SoldOutGate:
    def __init__(
        self,
        products: Any,  # ProductServiceStub (its type exists in the stubs only)
        ttl: float = 1.0,
        timeout: float = 2.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._products = products
        self._ttl = ttl
        self._timeout = timeout
        self._clock = clock
        self._known: dict[str, tuple[float, int | None]] = {}  # id -> (when, available)
        self._asking: dict[str, asyncio.Future[int | None]] = {}

    async def refusal(self, wanted: Sequence[Wanted]) -> Refusal | None:
        """Why these items cannot be reserved now, or None when they may be."""
        for item in wanted:
            available = await self._available(item.product_id)
            if available is None:
                continue  # not known: the saga decides
            if available < 0:
                return Refusal("ProductNotFound", f"product {item.product_id} does not exist")
            if available == 0:
                return Refusal("OutOfStock", f"product {item.product_id} is out of stock")
            if item.quantity > available:
                return Refusal(
                    "InsufficientStock",
                    f"product {item.product_id}: {item.quantity} requested, {available} available",
                )
        return None

    async def _available(self, product_id: str) -> int | None:
        """Units available (-1: no such product; None: the Product service did not say)."""
        known = self._known.get(product_id)
        if known is not None and self._clock() - known[0] < self._ttl:
            return known[1]
        # Callers arriving together share one question.
        asking = self._asking.get(product_id)
        if asking is not None:
            return await asyncio.shield(asking)
        future: asyncio.Future[int | None] = asyncio.get_running_loop().create_future()
        self._asking[product_id] = future
        try:
            available = await self._ask(product_id)
            if available is not None:
                self._remember(product_id, available)
            future.set_result(available)
            return available
        except BaseException as exc:
            future.set_exception(exc)
            future.exception()  # retrieved: nobody else may be waiting
            raise
        finally:
            del self._asking[product_id]

    async def _ask(self, product_id: str) -> int | None:
        try:
            product = await self._products.GetProduct(
                product_pb2.GetProductRequest(id=product_id), timeout=self._timeout
            )
        except grpc.aio.AioRpcError as exc:
            if exc.code() == grpc.StatusCode.NOT_FOUND:
                return -1
            # Unreachable, overloaded, a bad id it refuses: never a reason to refuse here.
            log.info("sold-out gate: no answer for %s (%s)", product_id, exc.code())
            return None
        return int(product.available)

    def reserved(self, wanted: Sequence[Wanted]) -> None:
        """This API's checkout holds these units now: what is remembered shrinks with it,
        so the buyers right behind are refused without waiting for the next question."""
        for item in wanted:
            known = self._known.get(item.product_id)
            if known is not None and known[1] is not None and known[1] > 0:
                self._known[item.product_id] = (known[0], max(0, known[1] - item.quantity))

    def forget(self, wanted: Sequence[Wanted]) -> None:
        """The saga found less stock than remembered: ask again next time."""
        for item in wanted:
            self._known.pop(item.product_id, None)

    def _remember(self, product_id: str, available: int) -> None:
        if len(self._known) >= MAX_REMEMBERED:
            self._known.pop(next(iter(self._known)))
        self._known[product_id] = (self._clock(), available)
