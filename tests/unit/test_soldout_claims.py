"""The sold-out gate in a rush: buyers wait while this API's own checkouts claim what is
left, and are answered as those checkouts end (Product service stand-in from
test_soldout_gate)."""

from __future__ import annotations

import asyncio

from checkout_api.admission import Admission
from checkout_api.soldout import Claim, SoldOutGate, Wanted
from tests.helpers.waiting import eventually
from tests.unit.test_soldout_gate import Clock, Products

HOT = [Wanted("hot", 1)]


async def _buyer(gate: SoldOutGate, passed: asyncio.Queue[Claim], finish: asyncio.Event) -> Claim:
    """Pass the gate and, if let in, hold the claim until told how it ended."""
    async with gate.claim(HOT, patience=60.0) as claim:
        if claim.refusal is None:
            await passed.put(claim)
            await finish.wait()
        return claim


async def test_a_crowd_waits_while_claims_cover_the_stock_and_is_refused_once_reserved() -> None:
    products, clock = Products({"hot": 3}), Clock()
    gate = SoldOutGate(products, ttl=60.0, clock=clock)
    passed: asyncio.Queue[Claim] = asyncio.Queue()
    finish = asyncio.Event()
    crowd = [asyncio.create_task(_buyer(gate, passed, finish)) for _ in range(10)]
    await eventually(lambda: passed.qsize() == 3)
    await asyncio.sleep(0.05)
    assert passed.qsize() == 3  # the other seven wait: neither let in nor refused
    assert not any(task.done() for task in crowd)
    while not passed.empty():
        passed.get_nowait().reserved()
    finish.set()
    claims = await asyncio.gather(*crowd)
    refused = [c.refusal.reason for c in claims if c.refusal is not None]
    assert refused == ["OutOfStock"] * 7
    assert products.calls == 1  # answered from what the claims told, not by asking again


async def _one_in_one_waiting(
    gate: SoldOutGate, passed: asyncio.Queue[Claim], second_done: asyncio.Event, outcome: str
) -> asyncio.Task[Claim]:
    """One unit: a first buyer in, a second waiting behind it; the first's checkout
    ends with ``outcome`` (a Claim method, or "given back"). Returns the second."""
    first_done = asyncio.Event()
    first = asyncio.create_task(_buyer(gate, passed, first_done))
    await eventually(lambda: passed.qsize() == 1)
    second = asyncio.create_task(_buyer(gate, passed, second_done))
    await asyncio.sleep(0.05)
    assert passed.qsize() == 1 and not second.done()
    claim = passed.get_nowait()
    if outcome != "given back":
        getattr(claim, outcome)()
    first_done.set()
    await first
    return second


async def test_a_claim_given_back_lets_a_waiting_buyer_in() -> None:
    gate = SoldOutGate(Products({"hot": 1}), ttl=60.0, clock=Clock())
    passed: asyncio.Queue[Claim] = asyncio.Queue()
    second_done = asyncio.Event()
    # The first checkout failed without reserving: its unit is free again.
    second = await _one_in_one_waiting(gate, passed, second_done, "given back")
    await eventually(lambda: passed.qsize() == 1)  # the waiting buyer goes ahead
    passed.get_nowait().reserved()
    second_done.set()
    assert (await second).refusal is None


async def test_a_buyer_not_admitted_does_not_let_the_next_one_in() -> None:
    gate = SoldOutGate(Products({"hot": 1}), ttl=60.0, clock=Clock())
    passed: asyncio.Queue[Claim] = asyncio.Queue()
    # The first was refused 503 Overloaded: no checkout was made.
    second = await _one_in_one_waiting(gate, passed, asyncio.Event(), "unused")
    await asyncio.sleep(0.05)
    assert passed.empty() and not second.done()  # still waits (until its ttl look)
    second.cancel()


async def test_a_buyer_waits_no_longer_than_its_patience() -> None:
    products = Products({"hot": 1})
    gate = SoldOutGate(products, ttl=60.0)
    async with gate.claim(HOT, patience=60.0) as first:
        assert first.refusal is None
        async with gate.claim(HOT, patience=0.05) as second:
            assert second.refusal is None  # the saga decides


async def test_a_fresh_answer_is_not_shrunk_again_by_a_claim_it_already_counts() -> None:
    products, clock = Products({"p": 2}), Clock()
    gate = SoldOutGate(products, ttl=1.0, clock=clock)
    async with gate.claim([Wanted("p", 1)], patience=1.0) as claim:
        clock.now += 2.0  # stale: the next buyer asks again and sees 1 left
        products.available["p"] = 1
        assert await gate.refusal([Wanted("p", 1)]) is None
        claim.reserved()
    # The reservation was in the fresh answer already: one unit is still there.
    assert await gate.refusal([Wanted("p", 1)]) is None
    assert products.calls == 2


async def _admitted_buyer(
    gate: SoldOutGate, admission: Admission, passed: asyncio.Queue[Claim], finish: asyncio.Event
) -> Claim:
    """As the API does: the gate, then an admission place (Refused: 503) for the saga."""
    async with gate.claim(HOT, patience=60.0) as claim:
        if claim.refusal is None:
            with admission.admit():
                await passed.put(claim)
                await finish.wait()
        return claim


async def test_with_no_place_free_a_buyer_of_a_scarce_product_queues_instead_of_a_503() -> None:
    admission = Admission(1)
    gate = SoldOutGate(Products({"hot": 3}), ttl=60.0, clock=Clock(), admission=admission)
    passed: asyncio.Queue[Claim] = asyncio.Queue()
    finish = [asyncio.Event() for _ in range(4)]
    buyers = [asyncio.create_task(_admitted_buyer(gate, admission, passed, f)) for f in finish]
    for served in range(3):  # one at a time through the one place, none refused 503
        await eventually(lambda: passed.qsize() == 1)
        await asyncio.sleep(0.05)
        assert passed.qsize() == 1 and admission.refused == 0
        passed.get_nowait().reserved()
        finish[served].set()
    last = await buyers[3]
    assert last.refusal is not None and last.refusal.reason == "OutOfStock"
    assert admission.refused == 0


async def test_with_plenty_of_stock_and_no_place_nobody_queues() -> None:
    admission = Admission(1)
    gate = SoldOutGate(Products({"p": 100}), ttl=60.0, clock=Clock(), admission=admission)
    with admission.admit():
        async with gate.claim([Wanted("p", 1)], patience=60.0) as claim:
            assert claim.refusal is None  # on to admission, refused 503 at once
            claim.unused()
