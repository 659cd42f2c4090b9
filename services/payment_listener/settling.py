"""The listener settles a paid Checkout itself, once Midtrans confirms the payment.

A notification is a hint: Midtrans signs only order id, status code and amount. So
for a notification that says "paid" the listener asks Midtrans' status API (server to
server, with the server key) and writes the Checkout ``Settled`` only if the answer
is paid, for the checkout's own payment page, with its total and currency
(``saga_kit.payment_rules``), and only while the checkout awaits payment. The write is
a compare-and-swap on the resourceVersion it decided on: an expiry or a cancel that
got there first wins, and the listener leaves that payment to the operator (which
gives it back). The operator checks the settlement again against its journal before
the goods are sold.

Anything else (not paid, an ended or unknown checkout, Midtrans or the apiserver out
of reach) is not written here: the notification is recorded for the operator, which
applies it with its own compensations.
"""

from __future__ import annotations

import datetime as dt
import enum
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Protocol

from midtrans import MidtransError, TransactionStatus
from saga_kit.checkout_resource import Phase
from saga_kit.checkout_status import settlement_patch
from saga_kit.checkout_store import Conflict
from saga_kit.payment_rules import PaymentState, payment_fields, payment_state, why_not_settled_by

log = logging.getLogger(__name__)

ATTEMPTS = 3  # compare-and-swap rounds before leaving it to the operator


class Checkouts(Protocol):
    async def get(self, namespace: str, name: str) -> dict[str, Any] | None: ...

    async def find(self, name: str) -> list[dict[str, Any]]: ...

    async def patch_status(
        self, body: dict[str, Any], status: dict[str, Any]
    ) -> dict[str, Any]: ...


class Outcome(enum.Enum):
    SETTLED = "settled"  # written: the Checkout is Settled
    LEFT = "left"  # nothing for the listener to write; the operator applies the notification
    UNREACHABLE = "unreachable"  # Midtrans or the apiserver could not be asked


@dataclass(frozen=True)
class Result:
    outcome: Outcome
    why: str = ""


def claims_payment(notification: TransactionStatus) -> bool:
    """Whether a notification says paid (only those make the listener ask Midtrans)."""
    return payment_state(notification.transaction_status, notification.fraud_status) is (
        PaymentState.PAID
    )


class Settler:
    def __init__(
        self,
        checkouts: Checkouts,
        status_of: Callable[[str], Awaitable[TransactionStatus | None]],
        namespace: str = "",
        clock: Callable[[], dt.datetime] = lambda: dt.datetime.now(dt.UTC),
    ) -> None:
        self._checkouts = checkouts
        self._status_of = status_of  # Midtrans' status API
        self._namespace = namespace  # where the operator's Checkouts live ("" all)
        self._clock = clock

    async def settle(self, midtrans_order: str) -> Result:
        """Settle the checkout paid by ``midtrans_order`` if Midtrans confirms it."""
        name = midtrans_order.split("~", 1)[0]  # <order>~<n>: a later page of the same
        ts: TransactionStatus | None = None
        for _ in range(ATTEMPTS):
            try:
                resource = await self._checkout(name)
            except Exception as exc:  # the apiserver out of reach
                return Result(Outcome.UNREACHABLE, f"apiserver: {exc!r}"[:300])
            if resource is None:
                return Result(Outcome.LEFT, "no single Checkout by that name")
            phase = (resource.get("status") or {}).get("phase")
            if phase != Phase.AWAITING_PAYMENT.value:
                return Result(Outcome.LEFT, f"the checkout is {phase}")
            if ts is None:
                try:
                    ts = await self._status_of(midtrans_order)
                except MidtransError as exc:
                    return Result(Outcome.UNREACHABLE, f"Midtrans status: {exc}")
                if ts is None:
                    return Result(Outcome.LEFT, "Midtrans knows no payment on it")
            if why := why_not_settled_by(resource, ts):
                return Result(Outcome.LEFT, why)
            patch = settlement_patch(resource, self._clock(), payment_fields(ts))
            try:
                await self._checkouts.patch_status(resource, patch)
            except Conflict:
                continue  # changed since it was read: read it again and decide again
            except Exception as exc:
                return Result(Outcome.UNREACHABLE, f"apiserver: {exc!r}"[:300])
            return Result(Outcome.SETTLED)
        return Result(Outcome.LEFT, f"the checkout kept changing ({ATTEMPTS} tries)")

    async def _checkout(self, name: str) -> dict[str, Any] | None:
        if self._namespace:
            return await self._checkouts.get(self._namespace, name)
        found = await self._checkouts.find(name)
        # The same name in two namespaces: only the operator's journal knows which one
        # owns the order id.
        return found[0] if len(found) == 1 else None
