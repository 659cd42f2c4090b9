"""An answer of the Product service asked while one of this API's checkouts was reserving
may or may not count that reservation: the gate asks again before letting the next buyer
in on it, instead of letting in one the saga can only reject (Product service stand-in
from test_soldout_gate)."""

from __future__ import annotations

from checkout_api.soldout import SoldOutGate, Wanted
from tests.unit.test_soldout_gate import Clock, Products

ONE = [Wanted("p", 1)]


async def test_an_answer_that_may_miss_our_reservation_is_asked_again_before_admitting() -> None:
    products, clock = Products({"p": 2}), Clock()
    gate = SoldOutGate(products, ttl=1.0, clock=clock)
    async with gate.claim(ONE, patience=1.0) as first:
        assert first.refusal is None
        clock.now += 2.0  # stale: asked again while the first checkout has not reserved
        assert await gate.refusal(ONE) is None
        products.available["p"] = 1  # now it has
        first.reserved()
    async with gate.claim(ONE, patience=1.0) as second:
        assert second.refusal is None  # the last unit
        second.reserved()
    products.available["p"] = 0
    async with gate.claim(ONE, patience=1.0) as third:
        # Without asking again the gate counted 2 - 1 = 1 left and let a third buyer in,
        # whose checkout the saga rejected.
        assert third.refusal is not None and third.refusal.reason == "OutOfStock"


async def test_a_refusal_on_a_remembered_answer_costs_no_new_question() -> None:
    products, clock = Products({"p": 1}), Clock()
    gate = SoldOutGate(products, ttl=1.0, clock=clock)
    async with gate.claim(ONE, patience=1.0) as claim:
        clock.now += 2.0
        assert await gate.refusal(ONE) is None
        products.available["p"] = 0
        claim.reserved()
    assert await gate.refusal(ONE) is None  # still the remembered answer: nobody let in
    assert products.calls == 2
