"""An answer the gate asks again (it may miss a reservation of ours) stays remembered,
stale, while it is asked: a buyer deciding meanwhile still counts this API's claims
against it. Dropped, the buyer saw no answer and was let in (commit 115d81c: the flash
sale's 530 503 Overloaded). Product service stand-in from test_soldout_gate, with
questions held until the test lets them be answered.
"""

from __future__ import annotations

import asyncio
from typing import Any

import grpc

from checkout.product.v1 import product_pb2
from checkout_api.soldout import Claim, SoldOutGate, Wanted
from tests.helpers.waiting import budget, eventually
from tests.unit.test_soldout_gate import Clock, Products, Unreachable


class HeldProducts(Products):
    """Questions about a product in ``held`` are answered once its event is set, with
    what was available when they were asked (read then, answered later)."""

    def __init__(self, available: dict[str, int]) -> None:
        super().__init__(available)
        self.held: dict[str, asyncio.Event] = {}
        self.asked: list[str] = []

    async def GetProduct(
        self,
        request: product_pb2.GetProductRequest,
        timeout: float,  # noqa: ASYNC109  (the gRPC stub's signature)
    ) -> Any:
        self.asked.append(request.id)
        read = self.available.get(request.id)
        if request.id in self.held:
            await self.held[request.id].wait()
        self.calls += 1
        if read is None:
            raise Unreachable(grpc.StatusCode.NOT_FOUND)
        return product_pb2.Product(id=request.id, available=read)


async def decide(gate: SoldOutGate, wanted: list[Wanted]) -> Claim:
    async with gate.claim(wanted, patience=60.0) as claim:
        claim.unused()
        return claim


async def test_a_buyer_deciding_while_an_unsure_answer_is_asked_again_still_counts_claims() -> None:
    products, clock = HeldProducts({"p": 2, "q": 5}), Clock()
    gate = SoldOutGate(products, ttl=1.0, clock=clock)
    one = [Wanted("p", 1)]
    async with gate.claim(one, patience=1.0) as held:  # in flight all along: 1 of p claimed
        assert held.refusal is None
        clock.now += 2.0
        async with gate.claim(one, patience=1.0) as reserving:
            assert reserving.refusal is None
            clock.now += 2.0
            assert await gate.refusal(one) is None  # asked while it reserves: 2 left
            products.available["p"] = 1
            reserving.reserved()
        # The gate remembers 2 of p, unsure; 1 is claimed by `held`.

        # A buyer of 2 p and a q: p answered from memory, then the q question is held.
        products.held["q"] = asyncio.Event()
        both = asyncio.create_task(decide(gate, [Wanted("p", 2), Wanted("q", 1)]))
        await eventually(lambda: "q" in products.asked)
        # Meanwhile another buyer of p makes the gate ask about p again (held too).
        products.held["p"] = asyncio.Event()
        asked = products.asked.count("p")
        other = asyncio.create_task(decide(gate, one))
        await eventually(lambda: products.asked.count("p") == asked + 1)
        # The first buyer's q is answered while p is being asked: 2 known, 1 claimed,
        # so it waits (without a remembered answer for p it was let in).
        products.held["q"].set()
        await eventually(lambda: both.done() or bool(gate._waiting.get("p")))
        products.held["p"].set()
        claim = await asyncio.wait_for(both, budget(5))
        assert claim.refusal is not None, "let in while the answer about p was asked again"
        assert claim.refusal.reason == "InsufficientStock"  # 1 left, 2 wanted
        other.cancel()


async def hold(gate: SoldOutGate, wanted: list[Wanted], end: asyncio.Event) -> Claim:
    """Pass the gate and, if let in, hold the claim until ``end``; then it reserved."""
    async with gate.claim(wanted, patience=60.0) as claim:
        if claim.refusal is None:
            await end.wait()
            claim.reserved()
        return claim


async def test_a_reservation_ending_while_the_product_is_asked_makes_the_answer_unsure() -> None:
    products, clock = HeldProducts({"p": 2}), Clock()
    gate = SoldOutGate(products, ttl=1.0, clock=clock)
    one = [Wanted("p", 1)]
    first_ends = asyncio.Event()
    first = asyncio.create_task(hold(gate, one, first_ends))
    await eventually(lambda: products.asked.count("p") == 1 and bool(gate._claimed))
    clock.now += 2.0
    # The next buyer asks about p; the Product service reads 2 (the first has not
    # reserved yet) and its answer is on the way while the first checkout reserves.
    products.held["p"] = asyncio.Event()
    second_ends = asyncio.Event()
    second = asyncio.create_task(hold(gate, one, second_ends))
    await eventually(lambda: products.asked.count("p") == 2)
    first_ends.set()
    assert (await first).refusal is None
    products.available["p"] = 1  # the truth now
    products.held["p"].set()
    await eventually(lambda: sum(gate._claimed.values()) == 1)  # the second is in

    # The answer (2) may miss the first reservation, so the second asked again before
    # going in: 1 left, claimed by the second. A third buyer is not let in on 2 - 1
    # claimed: it waits, and is refused once the second checkout has reserved it.
    third = asyncio.create_task(decide(gate, one))
    await eventually(lambda: third.done() or bool(gate._waiting.get("p")))
    assert not third.done(), "let in on an answer that missed a reservation"
    second_ends.set()
    assert (await second).refusal is None
    refused = (await asyncio.wait_for(third, budget(5))).refusal
    assert refused is not None and refused.reason == "OutOfStock"
