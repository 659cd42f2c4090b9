"""Buyers and their sagas, driven through the public doors only.

The REST checkout API (a user's JWT, an Idempotency-Key so every retry is the same
checkout), the payment page and the Midtrans sandbox's customer controls, kubectl. Each
saga is one kind of buyer:

* ``bank`` / ``card``: pays by bank transfer / card (a capture) while the page is open;
* ``late-bank`` / ``late-card``: a short payment TTL; pays only after the checkout
  expired, on the page that is still open at Midtrans (or, once that is closed too, a
  settlement / capture that Midtrans reports anyway);
* ``expire``: a short payment TTL, never pays (half of them choose a method first, so a
  pending payment is left at Midtrans);
* ``cancel``: cancels through the API (half of them after choosing a method);
* ``delete``: the Checkout is deleted with kubectl mid-flight: soon after the POST,
  with a pending payment, or right after paying.

Every call is retried through the faults (connection refused, 5xx, 429 with
Retry-After) within a bound. What the buyer did and saw is kept on the :class:`Saga`,
which says which ending the ledger must find (``expected``).
"""

from __future__ import annotations

import asyncio
import html
import random
import re
import subprocess
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import httpx

from checkout_api.app import checkout_name
from tests.chaos.notifications import Notifications
from tests.chaos.seeding import seeded
from tests.e2e.conftest import System
from tests.helpers.waiting import deadline

TERMINAL = frozenset({"Settled", "Expired", "Cancelled", "Rejected"})
LONG_TTL = 900  # never runs out during the run
KINDS = {"bank": 28, "card": 20, "late-bank": 8, "late-card": 7, "expire": 20, "cancel": 17}
KINDS["delete"] = 20
SAGAS_PER_BUYER = 3  # under the API's open-checkout limit (5) and POST burst (10)
REFUSALS = {403, 409, 422, 502}  # the saga's own answer (Rejected, payment setup failed)
PAGE_ORDER = re.compile(r"<h1>Order ([^<]+)</h1>")
PAYMENT_TYPE = {"bank": "bank_transfer", "card": "credit_card"}


@dataclass(frozen=True)
class Product:
    id: str
    price: int
    stock: int  # the initial stock


@dataclass(frozen=True)
class Buyer:
    user_id: str
    auth: dict[str, str]


@dataclass
class Saga:
    kind: str
    buyer: Buyer
    lines: list[tuple[Product, int]]
    ttl: int
    start_after: float
    seed: float  # the buyer's own choices
    key: str = field(default_factory=lambda: uuid.uuid4().hex)
    expected: str | None = None  # the ending the buyer's actions call for
    deleted: bool = False
    paid: list[str] = field(default_factory=list)  # Midtrans orders the buyer paid
    problems: list[str] = field(default_factory=list)  # what the buyer could not do
    seen: list[str] = field(default_factory=list)  # phases / answers, in order

    @property
    def id(self) -> str:
        """The checkout's name, from the API's naming rule for (user, Idempotency-Key)."""
        return checkout_name(self.buyer.user_id, self.key)

    def saw(self, what: str) -> None:
        if not self.seen or self.seen[-1] != what:
            self.seen.append(what)


@dataclass
class Shop:
    system: System
    http: httpx.AsyncClient
    notifications: Notifications
    rng: random.Random
    owner: dict[str, str]
    products: list[Product]

    @classmethod
    async def open(
        cls, system: System, http: httpx.AsyncClient, notifications: Notifications, seed: int
    ) -> Shop:
        _, owner = await system.account(http)
        stocks = [(12_000, 400), (25_000, 400), (40_000, 400), (75_000, 400), (9_000, 12)]
        products = []
        for price, stock in stocks:  # the last one is scarce: some checkouts are refused
            made = await system.product(http, owner, price=price, stock=stock)
            products.append(Product(str(made["id"]), price, stock))
        return cls(system, http, notifications, seeded(seed, "shop"), owner, products)

    async def buyers(self, count: int) -> list[Buyer]:
        made: list[Buyer] = []
        for first in range(0, count, 8):
            batch = await asyncio.gather(
                *(self.system.account(self.http) for _ in range(first, min(count, first + 8)))
            )
            made += [Buyer(user_id, auth) for user_id, auth in batch]
        return made

    def plan(self, buyers: Sequence[Buyer], spread: float) -> list[Saga]:
        """The sagas of the run, shuffled, starting over ``spread`` seconds."""
        rng = self.rng
        kinds = [kind for kind, count in KINDS.items() for _ in range(count)]
        rng.shuffle(kinds)
        sagas = []
        for number, kind in enumerate(kinds):
            plentiful = rng.sample(self.products[:-1], rng.randint(1, 2))
            if rng.random() < 0.1:
                plentiful[-1] = self.products[-1]
            lines = [(p, rng.randint(1, 3)) for p in plentiful]
            short = kind.startswith("late") or kind == "expire"
            ttl = rng.randint(3, 7) if short else LONG_TTL
            buyer = buyers[number // SAGAS_PER_BUYER]
            sagas.append(Saga(kind, buyer, lines, ttl, rng.uniform(0.0, spread), rng.random()))
        return sagas

    # --- the doors ----------------------------------------------------------------------

    async def create(self, saga: Saga, within: float = 120.0) -> dict[str, Any] | None:
        """POST the checkout until the API answers with it (201/200/202) or refuses it."""
        body = {
            "products": [
                {"id": p.id, "price": p.price, "quantity": quantity} for p, quantity in saga.lines
            ],
            "payment_ttl_seconds": saga.ttl,
        }
        headers = {**saga.buyer.auth, "Idempotency-Key": saga.key}
        until = deadline(within)  # the suite's budget (CHECKOUT_SAGA_TEST_PATIENCE)
        while not until.passed:
            try:
                reply = await self.http.post(
                    f"{self.system.api}/api/v1/checkouts", json=body, headers=headers
                )
            except httpx.TransportError:
                await asyncio.sleep(1.0)
                continue
            if reply.status_code in (200, 201, 202):
                created: dict[str, Any] = reply.json()
                saga.saw(f"POST {reply.status_code} {created['phase']}")
                return created
            if reply.status_code in REFUSALS:
                reason = reply.json().get("reason")
                saga.saw(f"POST {reply.status_code} {reason}")
                return None
            saga.saw(f"POST {reply.status_code}")
            retry_after = float(reply.headers.get("retry-after", 1))
            await asyncio.sleep(min(max(retry_after, 0.5), 5.0))
        saga.problems.append(f"the API never took the checkout within {within:.0f}s")
        return None

    async def get(self, saga: Saga) -> dict[str, Any] | None:
        """The checkout as its buyer sees it (None: no answer now)."""
        try:
            reply = await self.http.get(
                f"{self.system.api}/api/v1/checkouts/{saga.id}", headers=saga.buyer.auth
            )
        except httpx.TransportError:
            return None
        if reply.status_code == 404:
            return {"phase": "NotFound"}
        if reply.status_code != 200:
            return None
        shown: dict[str, Any] = reply.json()
        return shown

    async def wait_for(
        self, saga: Saga, phases: frozenset[str], within: float
    ) -> dict[str, Any] | None:
        until = deadline(within)  # the suite's budget (CHECKOUT_SAGA_TEST_PATIENCE)
        while not until.passed:
            shown = await self.get(saga)
            if shown is not None:
                saga.saw(shown["phase"])
                if shown["phase"] in phases:
                    return shown
            await asyncio.sleep(0.5)
        saga.problems.append(f"never saw {'/'.join(sorted(phases))} within {within:.0f}s")
        return None

    async def page_order(self, saga: Saga, shown: dict[str, Any]) -> str:
        """The Midtrans order behind the payment link the buyer got (its page names it)."""
        url = shown.get("redirect_url")
        if url:
            try:
                page = await self.http.get(url)
                found = PAGE_ORDER.search(page.text)
                if page.status_code == 200 and found:
                    return html.unescape(found.group(1))
            except httpx.TransportError:
                pass
        return saga.id  # the first attempt's order id

    async def customer(self, saga: Saga, order: str, action: str, **body: str) -> bool:
        """A customer control at the sandbox; True if it was done. Keeps the notifications
        it made."""
        url = f"{self.system.sandbox}/_sandbox/transactions/{order}/{action}"
        for _ in range(5):  # the sandbox is never killed, but may be slow under load
            try:
                reply = await self.http.post(url, json=body)
                break
            except httpx.TransportError:
                await asyncio.sleep(1.0)
        else:
            saga.problems.append(f"the sandbox did not answer {action} {order}")
            return False
        saga.saw(f"{action} {order}: {reply.status_code}")
        if reply.status_code != 200:
            return False
        self.notifications.keep(reply.json())
        return True

    async def pay(self, saga: Saga, order: str, method: str) -> bool:
        if await self.customer(saga, order, "pay", payment_type=PAYMENT_TYPE[method]):
            saga.paid.append(order)
            return True
        return False

    async def cancel(self, saga: Saga, within: float = 60.0) -> bool:
        """Cancel through the API; True once accepted (False: it had finished already)."""
        until = deadline(within)  # the suite's budget (CHECKOUT_SAGA_TEST_PATIENCE)
        while not until.passed:
            try:
                reply = await self.http.post(
                    f"{self.system.api}/api/v1/checkouts/{saga.id}/cancel",
                    headers=saga.buyer.auth,
                )
            except httpx.TransportError:
                await asyncio.sleep(1.0)
                continue
            saga.saw(f"cancel {reply.status_code}")
            if reply.status_code == 202:
                return True
            if reply.status_code == 409 and reply.json()["reason"] == "ALREADY_FINISHED":
                return False
            await asyncio.sleep(1.0)
        saga.problems.append(f"the cancel was never accepted within {within:.0f}s")
        return False

    async def delete(
        self,
        saga: Saga,
        while_creating: asyncio.Task[Any] | None = None,
        within: float = 120.0,
    ) -> None:
        """``kubectl delete`` the Checkout. While ``while_creating`` (its POST, retried
        through the faults) runs, a Checkout not there yet is looked for again: a delete
        before the create would delete nothing."""
        until = deadline(within)  # the suite's budget (CHECKOUT_SAGA_TEST_PATIENCE)
        while not until.passed:
            created_before = while_creating is None or while_creating.done()
            try:
                result = await asyncio.to_thread(
                    self.system.platform.kubectl,
                    *("delete", "checkout", saga.id, "--wait=false"),
                    namespace="default",
                    check=False,
                )
            except subprocess.TimeoutExpired:
                continue
            if result.returncode == 0:
                saga.deleted = True
                saga.saw("deleted")
                return
            if "NotFound" in result.stderr and created_before:
                saga.saw("nothing to delete")
                return
            await asyncio.sleep(0.5)
        saga.problems.append(f"kubectl delete failed for {within:.0f}s")

    # --- the buyers ---------------------------------------------------------------------

    async def run(self, saga: Saga) -> None:
        await asyncio.sleep(saga.start_after)
        rng = seeded(saga.seed, "buyer")
        if saga.kind == "delete" and rng.random() < 0.35:
            await self._delete_soon_after_post(saga, rng)
            return
        created = await self.create(saga)
        if created is None:
            return
        shown = await self.wait_for(saga, TERMINAL | {"AwaitingPayment"}, within=120.0)
        if shown is None or shown["phase"] != "AwaitingPayment":
            return
        order = await self.page_order(saga, shown)
        method = "card" if saga.kind.endswith("card") else "bank"
        if saga.kind in ("bank", "card"):
            await asyncio.sleep(rng.uniform(0.0, 3.0))
            if await self.pay(saga, order, method):
                saga.expected = "Settled"
            else:
                saga.problems.append(f"could not pay {order}")
                await self.cancel(saga)
        elif saga.kind.startswith("late"):
            await self._pay_late(saga, order, method)
        elif saga.kind == "expire":
            saga.expected = "Expired"
            if rng.random() < 0.5:
                await self.customer(saga, order, "choose", payment_type="bank_transfer")
        elif saga.kind == "cancel":
            if rng.random() < 0.5:
                await self.customer(saga, order, "choose", payment_type="bank_transfer")
            await asyncio.sleep(rng.uniform(0.0, 3.0))
            if await self.cancel(saga):
                saga.expected = "Cancelled"
        else:  # delete, with a pending payment or right after paying
            if rng.random() < 0.5:
                await self.customer(saga, order, "choose", payment_type="bank_transfer")
            else:
                await self.pay(saga, order, "bank")
            await asyncio.sleep(rng.uniform(0.0, 1.0))
            await self.delete(saga)

    async def _delete_soon_after_post(self, saga: Saga, rng: random.Random) -> None:
        creating = asyncio.create_task(self.create(saga))
        await asyncio.sleep(rng.uniform(0.1, 2.0))
        await self.delete(saga, while_creating=creating)
        await creating

    async def _pay_late(self, saga: Saga, order: str, method: str) -> None:
        shown = await self.wait_for(saga, TERMINAL, within=saga.ttl + 120.0)
        if shown is None or shown["phase"] != "Expired":
            return
        saga.expected = "Expired"
        if await self.pay(saga, order, method):
            return
        # The page is closed at Midtrans too: money that arrives anyway.
        forced = "force-capture" if method == "card" else "force-settle"
        if await self.customer(saga, order, forced):
            saga.paid.append(order)
