"""The checkout saga as data: phases, transitions, failures and their compensations.

Pure: no I/O, no clock (``now`` is passed in), no Kubernetes client. Everything
the operator, the expiry worker and the webhook listener decide about a checkout
is decided here and unit-tested without a server; the rest of the operator only
carries these decisions out. The payment rules and the shape of a status write live
in the shared kit (``saga_kit.payment_rules``, ``saga_kit.checkout_status``) because
the webhook listener, another service, writes a verified settlement itself; they are
re-exported here.

    Pending -> Authorized -> Reserved -> AwaitingPayment -> Settled
       |            |            |              |--------> Expired
       |            |            |              '--------> Cancelled
       |            |            '--(payment setup fails)-> Cancelled
       '------------'--(refused before stock is held)-----> Rejected

Pending, Authorized and Reserved are passed through in one reconciliation and
written to the apiserver once, together with AwaitingPayment (they appear in
``status.history``); terminal phases never change.
"""

from __future__ import annotations

import datetime as dt
import enum
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from saga_kit.checkout_bounds import (
    ID_MAX_LENGTH,
    MAX_ITEMS,
    MAX_QUANTITY,
    MAX_UNIT_PRICE,
    MIN_UNIT_PRICE,
    possible_id,
    whole_number,
)
from saga_kit.checkout_resource import TERMINAL, Phase
from saga_kit.checkout_status import (
    HISTORY_LIMIT,
    parse_timestamp,
    timestamp,
    with_condition,
    with_history,
)
from saga_kit.payment_rules import PaymentState, payment_state, supersedes

# The shared vocabulary and the rules the webhook listener applies too (saga_kit),
# also read from here.
__all__ = [
    "HISTORY_LIMIT",
    "TERMINAL",
    "PaymentState",
    "Phase",
    "parse_timestamp",
    "payment_state",
    "supersedes",
    "timestamp",
    "with_condition",
    "with_history",
]


TRANSITIONS: Mapping[Phase, frozenset[Phase]] = {
    Phase.PENDING: frozenset({Phase.AUTHORIZED, Phase.REJECTED, Phase.CANCELLED}),
    Phase.AUTHORIZED: frozenset({Phase.RESERVED, Phase.REJECTED, Phase.CANCELLED}),
    Phase.RESERVED: frozenset({Phase.AWAITING_PAYMENT, Phase.CANCELLED}),
    Phase.AWAITING_PAYMENT: frozenset({Phase.SETTLED, Phase.EXPIRED, Phase.CANCELLED}),
    **{terminal: frozenset() for terminal in TERMINAL},
}


def can_transition(current: Phase, target: Phase) -> bool:
    return target in TRANSITIONS[current]


def can_reach(current: Phase, target: Phase) -> bool:
    """Whether ``target`` follows ``current`` through allowed transitions.

    One status write may pass several phases (Pending -> ... -> AwaitingPayment).
    """
    seen, frontier = {current}, [current]
    while frontier:
        for nxt in TRANSITIONS[frontier.pop()]:
            if nxt not in seen:
                seen.add(nxt)
                frontier.append(nxt)
    return target in seen - {current}


class Compensation(enum.Enum):
    NONE = "none"  # nothing was held
    RELEASE_STOCK = "release_stock"  # publish `cancelled`: the product side restores stock
    CANCEL_PAYMENT = "cancel_payment"  # cancel at Midtrans, then release the stock
    EXPIRE_PAYMENT = "expire_payment"  # expire at Midtrans, then `expired` restores stock
    REFUND = "refund"  # money arrived after the checkout ended: give it back


class Reason(enum.StrEnum):
    """Why a checkout ended the way it did (``status.failure.reason``)."""

    UNAUTHORIZED = "Unauthorized"
    PRODUCT_NOT_FOUND = "ProductNotFound"
    OUT_OF_STOCK = "OutOfStock"
    INSUFFICIENT_STOCK = "InsufficientStock"
    PRICE_MISMATCH = "PriceMismatch"
    INVALID_VOUCHER = "InvalidVoucher"
    INVALID_REQUEST = "InvalidRequest"
    DUPLICATE_ORDER_ID = "DuplicateOrderId"
    PAYMENT_SETUP_FAILED = "PaymentSetupFailed"
    CANCEL_REQUESTED = "CancelRequested"
    PAYMENT_EXPIRED = "PaymentExpired"
    PAYMENT_FAILED = "PaymentFailed"
    DELETED = "Deleted"


@dataclass(frozen=True)
class Outcome:
    phase: Phase
    compensation: Compensation


# What each failure ends in, and what has to be undone.
FAILURES: Mapping[Reason, Outcome] = {
    # Refused at the start step: nothing to undo, unless Reserve was already attempted
    # (a retried start after Reserve succeeded): then `cancelled` releases it.
    Reason.UNAUTHORIZED: Outcome(Phase.REJECTED, Compensation.NONE),
    Reason.PRODUCT_NOT_FOUND: Outcome(Phase.REJECTED, Compensation.NONE),
    Reason.OUT_OF_STOCK: Outcome(Phase.REJECTED, Compensation.NONE),
    Reason.INSUFFICIENT_STOCK: Outcome(Phase.REJECTED, Compensation.NONE),
    Reason.PRICE_MISMATCH: Outcome(Phase.REJECTED, Compensation.NONE),
    Reason.INVALID_VOUCHER: Outcome(Phase.REJECTED, Compensation.NONE),
    Reason.INVALID_REQUEST: Outcome(Phase.REJECTED, Compensation.NONE),
    Reason.DUPLICATE_ORDER_ID: Outcome(Phase.REJECTED, Compensation.NONE),
    # Stock is held, no payment page exists yet.
    Reason.PAYMENT_SETUP_FAILED: Outcome(Phase.CANCELLED, Compensation.RELEASE_STOCK),
    # A payment page exists.
    Reason.CANCEL_REQUESTED: Outcome(Phase.CANCELLED, Compensation.CANCEL_PAYMENT),
    Reason.PAYMENT_FAILED: Outcome(Phase.CANCELLED, Compensation.CANCEL_PAYMENT),
    Reason.PAYMENT_EXPIRED: Outcome(Phase.EXPIRED, Compensation.EXPIRE_PAYMENT),
    Reason.DELETED: Outcome(Phase.CANCELLED, Compensation.CANCEL_PAYMENT),
}

# The transaction event announcing each terminal phase to the product side.
FINAL_EVENT: Mapping[Phase, str] = {
    Phase.SETTLED: "settled",
    Phase.EXPIRED: "expired",
    Phase.CANCELLED: "cancelled",
    # Published only once Reserve was attempted (the journal says so): a start retried
    # after Reserve succeeded may still end Rejected, and its stock must come back.
    Phase.REJECTED: "cancelled",
}


# --- pricing -------------------------------------------------------------------


@dataclass(frozen=True)
class Line:
    product_id: str
    unit_price: int
    quantity: int
    name: str = ""

    @property
    def total(self) -> int:
        return self.unit_price * self.quantity


@dataclass(frozen=True)
class Voucher:
    code: str
    percent: int = 0  # discount as a percentage of the subtotal
    amount: int = 0  # or a fixed discount
    max_discount: int | None = None


@dataclass(frozen=True)
class Amounts:
    subtotal: int
    fees: int
    discount: int
    total: int

    def as_status(self) -> dict[str, int]:
        return {
            "subtotal": self.subtotal,
            "fees": self.fees,
            "discount": self.discount,
            "total": self.total,
        }


def price(lines: Sequence[Line], fee: int, voucher: Voucher | None) -> Amounts:
    """Subtotal of the lines, plus a flat fee, minus the voucher's discount (never below 0)."""
    subtotal = sum(line.total for line in lines)
    discount = 0
    if voucher is not None:
        discount = voucher.amount + subtotal * voucher.percent // 100
        if voucher.max_discount is not None:
            discount = min(discount, voucher.max_discount)
        discount = min(discount, subtotal + fee)
    return Amounts(subtotal, fee, discount, subtotal + fee - discount)


# Midtrans takes no payment below 1 IDR; a checkout is never settled without one.
MIN_PAYABLE_TOTAL = 1


def unpayable(amounts: Amounts) -> str | None:
    """Why a checkout with these amounts cannot be paid (None: it can).

    A voucher that covers the whole order would leave a total of 0, which Midtrans
    refuses: such a checkout is refused before any stock is held, not given away.
    """
    if amounts.total < MIN_PAYABLE_TOTAL:
        return (
            f"it leaves {amounts.total} IDR to pay; a checkout must leave at least "
            f"{MIN_PAYABLE_TOTAL} IDR (free orders are not supported)"
        )
    return None


def payment_items(lines: Sequence[Line], amounts: Amounts) -> list[dict[str, Any]]:
    """Midtrans item_details whose sum equals the total, as Midtrans requires."""
    items = [
        {
            "id": line.product_id[:50],
            "price": line.unit_price,
            "quantity": line.quantity,
            "name": (line.name or line.product_id)[:50],
        }
        for line in lines
    ]
    if amounts.fees:
        items.append({"id": "fee", "price": amounts.fees, "quantity": 1, "name": "Service fee"})
    if amounts.discount:
        items.append(
            {"id": "discount", "price": -amounts.discount, "quantity": 1, "name": "Voucher"}
        )
    return items


# --- the payment page ------------------------------------------------------------

_NO_WAIT = dt.timedelta(0)


def payment_setup_over(since_first_snap: dt.timedelta | None, deadline: dt.timedelta) -> bool:
    """Whether a Snap call that failed (an error answer, a timeout, no connection) ends
    the checkout PaymentSetupFailed: only once its first Snap order was journaled
    ``deadline`` or longer ago (``since_first_snap``; None: none was).

    The deadline is Midtrans': time before the first Snap call (waiting for the User or
    Product service, the journal, the apiserver, an operator restart) does not count.
    Nor does a call the open circuit kept from Midtrans end anything: it failed nothing,
    so its caller just retries (the circuit's trial call, or a later one, tells).
    """
    return since_first_snap is not None and since_first_snap >= deadline


def snap_order_gap(attempt: int, max_attempts: int, deadline: dt.timedelta) -> dt.timedelta:
    """How long after a checkout's previous Snap order its ``attempt``-th may be made.

    The second follows at once (one answer lost is the common case: the buyer waits for
    nothing); from the third the gaps double up to half the setup deadline (``D/2^(N-2)``
    ... ``D/4``, ``D/2`` for ``N`` attempts), so the ``N`` orders a checkout may make
    span ``1 - 2^-(N-2)`` of the deadline: a gateway that keeps losing Midtrans' answers
    uses them up over the deadline, not in the seconds the reconciler's backoff takes.
    """
    if attempt <= 2:
        return _NO_WAIT
    return deadline / (1 << max(1, max_attempts - attempt + 1))


def new_snap_order_wait(
    attempt: int,
    max_attempts: int,
    deadline: dt.timedelta,
    ages: tuple[dt.timedelta, dt.timedelta] | None,
) -> dt.timedelta | None:
    """How long before a checkout may make its ``attempt``-th Snap order, a new Midtrans
    order id (zero: now); None when it may make none, ever: the cap is reached and the
    setup deadline is over, so it ends PaymentSetupFailed.

    ``ages``: how long ago its first and its latest Snap order were journaled (None:
    none yet). Reaching the cap ends nothing by itself: until the deadline is over the
    checkout keeps asking Midtrans for its last order (it may have been made after all).
    """
    if ages is None:  # its first Snap order (or none was ever journaled)
        return _NO_WAIT if attempt <= max_attempts else None
    since_first, since_last = ages
    if attempt > max_attempts:
        return None if payment_setup_over(since_first, deadline) else deadline - since_first
    return max(_NO_WAIT, snap_order_gap(attempt, max_attempts, deadline) - since_last)


# --- what can be checked out ---------------------------------------------------


def spec_problem(spec: Mapping[str, Any]) -> str | None:
    """Why this spec can never be checked out (None: it may be).

    The CRD refuses such specs today; Checkouts stored before it did (a NUL in a
    product id, a price of 0 or beyond what Postgres holds) must end Rejected at once
    rather than be retried for ever by the journal or the Product service.
    """
    user = spec.get("userId")
    if not isinstance(user, str) or not possible_id(user, ID_MAX_LENGTH):
        return "userId is not a possible user id"
    items = spec.get("items")
    if not isinstance(items, list) or not 1 <= len(items) <= MAX_ITEMS:
        return f"a checkout has 1..{MAX_ITEMS} items"
    for n, item in enumerate(items):
        product, price, quantity = (
            item.get("productId"),
            item.get("unitPrice"),
            item.get("quantity"),
        )
        if not isinstance(product, str) or not possible_id(product):
            return f"items[{n}].productId is not a possible product id"
        if not whole_number(price) or not MIN_UNIT_PRICE <= price <= MAX_UNIT_PRICE:
            return f"items[{n}].unitPrice must be {MIN_UNIT_PRICE}..{MAX_UNIT_PRICE} IDR"
        if not whole_number(quantity) or not 1 <= quantity <= MAX_QUANTITY:
            return f"items[{n}].quantity must be 1..{MAX_QUANTITY}"
    return None


# --- what to do next -------------------------------------------------------------


class Action(enum.Enum):
    START = "start"  # authorize, reserve, price, payment page, announce: -> AwaitingPayment
    # AwaitingPayment written by someone else before the start step's own write: show the
    # journal's page and deadline (none journaled: no page was ever offered, cancel)
    OFFER = "offer"
    SETTLE = "settle"
    CANCEL = "cancel"
    EXPIRE = "expire"
    WAIT = "wait"  # nothing to do until `at` (or an event)
    FINISH = "finish"  # terminal: make sure the final event is out, then wait for the TTL
    DELETE = "delete"  # terminal and past its TTL


@dataclass(frozen=True)
class Plan:
    action: Action
    at: dt.datetime | None = None  # when to look again


# What of the payment page the start step writes into ``status.payment``.
PAGE_FIELDS = ("snapToken", "redirectUrl", "midtransOrderId")


@dataclass(frozen=True)
class View:
    """What the saga needs to know of a Checkout resource."""

    phase: Phase
    cancel_requested: bool
    expires_at: dt.datetime | None  # as the resource shows it: a view of the journal's
    payment: PaymentState
    finished_at: dt.datetime | None
    # The resource shows the payment page and its deadline, as the start step writes them.
    offered: bool = False

    @classmethod
    def of(cls, body: Mapping[str, Any]) -> View:
        spec = body.get("spec") or {}
        status = body.get("status") or {}
        payment = status.get("payment") or {}
        history = status.get("history") or []
        phase = Phase(status.get("phase") or Phase.PENDING.value)
        finished = None
        if phase in TERMINAL and history:
            finished = parse_timestamp(history[-1].get("at"))
        return cls(
            phase=phase,
            cancel_requested=bool(spec.get("cancelRequested")),
            expires_at=parse_timestamp(status.get("expiresAt")),
            payment=payment_state(payment.get("transactionStatus"), payment.get("fraudStatus")),
            finished_at=finished,
            offered=bool(status.get("expiresAt")) and all(payment.get(k) for k in PAGE_FIELDS),
        )


def payment_deadline(
    shown: dt.datetime | None, journaled: dt.datetime | None
) -> dt.datetime | None:
    """When an unpaid checkout expires.

    ``journaled``: the deadline the journal recorded with the terms before anyone could
    pay, the payment TTL after the Snap page was made; the page itself lapses the TTL
    rounded up to whole minutes after Midtrans made it, so under a minute past this
    deadline (the late-payment watch covers that minute).
    ``shown``: the resource's ``status.expiresAt``, a view of it that anyone with
    ``checkouts/status`` may edit. The earlier of the two: moved later, it must not hold
    the stock past a page that has lapsed; moved earlier, the page is expired at Midtrans
    then, as at any expiry. The view alone only for a row journaled without a deadline.
    """
    known = [at for at in (shown, journaled) if at is not None]
    return min(known) if known else None


def plan(
    view: View,
    now: dt.datetime,
    ttl_after_finished: dt.timedelta | None,
    deadline: dt.datetime | None = None,
) -> Plan:
    """The next step for a checkout in ``view`` at ``now``.

    ``deadline``: the payment deadline its journal recorded with the terms, if any (see
    ``payment_deadline``); the resource's ``expiresAt`` is only a view of it.
    """
    if view.phase in TERMINAL:
        if ttl_after_finished is None or view.finished_at is None:
            return Plan(Action.FINISH)
        delete_at = view.finished_at + ttl_after_finished
        return Plan(Action.DELETE) if delete_at <= now else Plan(Action.FINISH, at=delete_at)
    if view.phase is not Phase.AWAITING_PAYMENT:
        return Plan(Action.START)
    # AwaitingPayment: money first. A payment that is recorded wins over a cancel
    # request or an expiry that comes later in the same look.
    if view.payment is PaymentState.PAID:
        return Plan(Action.SETTLE)
    if view.cancel_requested:
        return Plan(Action.CANCEL)
    if view.payment is PaymentState.CANCELLED:
        return Plan(Action.CANCEL)
    due = payment_deadline(view.expires_at, deadline)
    if view.payment is PaymentState.EXPIRED or (due is not None and due <= now):
        return Plan(Action.EXPIRE)
    if not view.offered:
        # Its phase was written ahead of the start step's write (the CRD lets a phase move
        # forward by hand), or the page was removed: the buyer has no link, the poller
        # does not ask about it. The journal's page and deadline are written again.
        return Plan(Action.OFFER, at=due)
    return Plan(Action.WAIT, at=due)
