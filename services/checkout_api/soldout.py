"""Refusing a checkout at once when a product has nothing left to reserve.

In a flash sale most buyers come after the stock is gone. Each of them used to cost
a Checkout resource, its reconciliation and a Reserve that could only fail. The
gate asks the Product service how much of each product is available (answers kept
for a moment, so a crowd costs a few calls, not one per buyer) and refuses with the
saga's own reasons, before anything is created.

During the rush itself the Product service still shows stock while this API's own
checkouts are on their way to reserving it. A buyer passes the gate with a
:meth:`SoldOutGate.claim` on the units it wants; while this API's claims cover all
that is left, the next buyer waits at the gate (holding no admission place, costing
no call) until a claim ends: reserved, the buyers behind are refused at once when
nothing is left; given back (the saga refused or never answered), they may go.
When no admission place is free and the product is scarce, a buyer also queues here
for a place instead of being refused 503. So a crowd of 1,000 for 100 units is
answered about as soon as the 100 sagas are, without 900 buyers retrying 503s in
the meantime (a flash sale once took 25 s).

It is only a shortcut: a product that shows stock here may still be gone when the
saga reserves (the saga refuses then, as before), and an answer at most
``ttl`` seconds old may refuse a buyer just before a unit comes back. A Product
service that cannot answer never refuses anyone: the checkout goes ahead, and so
does a buyer that waited ``patience`` seconds for claims that did not end.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass
from typing import Any

import grpc

from checkout.product.v1 import product_pb2

from .admission import Admission

log = logging.getLogger(__name__)

MAX_REMEMBERED = 10_000  # products; the oldest answers are dropped first
STALE = float("-inf")  # when an answer to be asked again was asked
SCARCE_PLACES = 10  # fewer units left than this many admission places: buyers queue


@dataclass(frozen=True)
class Refusal:
    reason: str  # the saga's reason: OutOfStock, InsufficientStock, ProductNotFound
    message: str


@dataclass(frozen=True)
class Wanted:
    product_id: str
    quantity: int


@dataclass
class Claim:
    """A buyer's pass through the gate: why it is refused (nothing claimed then), and
    what became of its checkout, told by the caller before the claim ends."""

    refusal: Refusal | None
    since: float = 0.0
    outcome: str = "given back"  # "reserved" | "sold out" | "unused" | "given back"

    def reserved(self) -> None:
        """The checkout holds the units now (AwaitingPayment)."""
        self.outcome = "reserved"

    def sold_out(self) -> None:
        """The saga found less stock than the gate believed."""
        self.outcome = "sold out"

    def unused(self) -> None:
        """No checkout was made (the POST was not admitted): the buyers waiting learn
        nothing from it, and keep waiting rather than be let in to the same refusal."""
        self.outcome = "unused"


class SoldOutGate:
    def __init__(
        self,
        products: Any,  # ProductServiceStub (its type exists in the stubs only)
        ttl: float = 1.0,
        timeout: float = 2.0,
        clock: Callable[[], float] = time.monotonic,
        admission: Admission | None = None,
    ) -> None:
        self._products = products
        self._admission = admission  # whose places a buyer of a scarce product queues for
        self._ttl = ttl
        self._timeout = timeout
        self._clock = clock
        self._known: dict[str, tuple[float, int | None]] = {}  # id -> (when, available)
        self._asking: dict[str, asyncio.Future[int | None]] = {}
        self._claimed: dict[str, int] = {}  # units this API's checkouts in flight want
        # Products whose remembered answer may or may not count a reservation of ours:
        # asked after the claim began, before it ended. Asked again before letting a
        # buyer in on it (a flash sale once created 28 checkouts the saga then rejected).
        self._unsure: set[str] = set()
        # Products with a claim that ended reserved while they were being asked about:
        # the answer on its way may have been read before that reservation.
        self._reserved_while_asked: set[str] = set()
        self._waiting: dict[str, list[asyncio.Future[None]]] = {}

    @contextlib.asynccontextmanager
    async def claim(self, wanted: Sequence[Wanted], patience: float) -> AsyncIterator[Claim]:
        """Pass the gate: refused (``Claim.refusal``), or with the units claimed until
        the block ends. While claims cover what is left, wait (at most ``patience``
        seconds) for one to end. Tell the outcome on the claim before leaving."""
        claim = Claim(await self._decide(wanted, patience), since=self._clock())
        if claim.refusal is not None:
            yield claim
            return
        for item in wanted:
            self._claimed[item.product_id] = self._claimed.get(item.product_id, 0) + item.quantity
        try:
            yield claim
        finally:
            self._end(wanted, claim)

    async def _decide(self, wanted: Sequence[Wanted], patience: float) -> Refusal | None:
        deadline = self._clock() + patience
        while True:
            refusal = await self.refusal(wanted)
            if refusal is not None:
                return refusal  # gone even counting no claim of ours
            blocked = next((i for i in wanted if self._short(i) or self._queued(i)), None)
            left = deadline - self._clock()
            if blocked is None and self._ask_again(wanted):
                continue
            if blocked is None or left <= 0:
                return None  # room, or waited long enough: the saga decides
            future = asyncio.get_running_loop().create_future()
            self._waiting.setdefault(blocked.product_id, []).append(future)
            try:  # woken when a claim ends; looked at again after ttl anyway
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(future, min(left, self._ttl))
            finally:
                waiting = self._waiting.get(blocked.product_id, [])
                if future in waiting:
                    waiting.remove(future)
                if not waiting:
                    self._waiting.pop(blocked.product_id, None)

    def _ask_again(self, wanted: Sequence[Wanted]) -> bool:
        """Make the answers about ``wanted`` that may miss a reservation of ours stale
        (the next look asks the Product service); whether there were any. They stay
        remembered meanwhile: buyers deciding during the question still wait on them
        (dropped, they were let in and refused 503 by the hundred)."""
        unsure = [i.product_id for i in wanted if i.product_id in self._unsure]
        for product_id in unsure:
            self._unsure.discard(product_id)
            if (known := self._known.get(product_id)) is not None:
                self._known[product_id] = (STALE, known[1])
        return bool(unsure)

    def _short(self, item: Wanted) -> bool:
        """Whether this API's claims leave less of the product than the item wants."""
        known = self._known.get(item.product_id)
        if known is None or known[1] is None:
            return False
        return known[1] - self._claimed.get(item.product_id, 0) < item.quantity

    def _queued(self, item: Wanted) -> bool:
        """Whether the buyer should queue here for an admission place: none is free and
        the product is scarce (fewer units left than SCARCE_PLACES times the places).
        Most of such a crowd is refused 409 soon; letting one in now would only earn
        it a 503 and a retry. Plenty of stock and no place: 503 at once, as before."""
        if self._admission is None or self._admission.free() > 0:
            return False
        known = self._known.get(item.product_id)
        if known is None or known[1] is None:
            return False
        return known[1] < SCARCE_PLACES * self._admission.limit

    def _end(self, wanted: Sequence[Wanted], claim: Claim) -> None:
        for item in wanted:
            left = self._claimed.get(item.product_id, 0) - item.quantity
            if left > 0:
                self._claimed[item.product_id] = left
            else:
                self._claimed.pop(item.product_id, None)
        if claim.outcome == "reserved":
            # What is left shrinks with what is claimed, unless the Product service was
            # asked after the claim began (its answer may count the reservation already).
            asked_before = [i for i in wanted if self._asked_by(i.product_id, claim.since)]
            self.reserved(asked_before)
            self._unsure.update(i.product_id for i in wanted if i not in asked_before)
            self._reserved_while_asked.update(
                i.product_id for i in wanted if i.product_id in self._asking
            )
        elif claim.outcome == "sold out":
            self.forget(wanted)
        if claim.outcome == "unused":
            return  # nothing changed but a place that was not there
        places = self._admission.free() if self._admission is not None else 0
        for item in wanted:
            if item.product_id not in self._claimed:
                # No claim left: whoever waits can be answered now (refused if none is left).
                self._wake(item.product_id, None)
            else:  # a place is free again, and units too if given back
                given = item.quantity if claim.outcome == "given back" else 0
                self._wake(item.product_id, max(places, given))

    def _asked_by(self, product_id: str, moment: float) -> bool:
        """Whether what is remembered of the product was asked for by ``moment``."""
        known = self._known.get(product_id)
        return known is not None and known[0] <= moment

    def _wake(self, product_id: str, units: int | None) -> None:
        """Wake the first ``units`` buyers waiting for the product (all of them: None)."""
        for future in self._waiting.get(product_id, []):
            if units is not None and units <= 0:
                return
            if not future.done():
                future.set_result(None)
                units = None if units is None else units - 1

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
                if product_id in self._reserved_while_asked:
                    self._unsure.add(product_id)
            future.set_result(available)
            return available
        except BaseException as exc:
            future.set_exception(exc)
            future.exception()  # retrieved: nobody else may be waiting
            raise
        finally:
            del self._asking[product_id]
            self._reserved_while_asked.discard(product_id)

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
            self._unsure.discard(item.product_id)

    def _remember(self, product_id: str, available: int) -> None:
        if len(self._known) >= MAX_REMEMBERED:
            self._known.pop(next(iter(self._known)))
        self._known[product_id] = (self._clock(), available)
        self._unsure.discard(product_id)
