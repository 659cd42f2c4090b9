"""The ledger audit: does every unit of stock and every rupiah add up?

``saga-devenv audit`` (docs/audit.md) loads a snapshot of the Product service's stock and
reservations, the operator's read model and journal, the Checkout resources and what
Midtrans' status API says about every order (``audit_sources``), and checks four
invariants over it. The checks are pure functions over that snapshot, so each rule is
unit-tested with tables of cases:

1. stock: each product's ledger sums to its stock, its ``reserved`` is what open
   reservations hold, ``stock >= reserved >= 0``, and what the ledger sold is what
   settled reservations took;
2. reservation: each checkout's reservation is settled iff it ended Settled, released
   (or never made) if it ended otherwise, open (or not yet made) while it runs, and it
   runs no longer than its journaled payment deadline; no reservation without a checkout;
3. read model: each Checkout resource has its row (same uid, same terminal phase); a
   row whose resource is gone is marked deleted;
4. money: a Settled checkout's payment is settled at Midtrans for its total and not
   refunded; money on any other order of a checkout has gone back, or is being watched
   for return (``payment_returns``) within its window: a warning, not a mismatch.

Events are asynchronous: what ended less than ``grace`` ago may still have its
reservation or payment in flight, so it is not judged yet.
"""

from __future__ import annotations

import datetime as dt
import enum
from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from checkout_operator.payments import ReturnStep, payment_problem, return_step
from checkout_operator.saga import TERMINAL, Phase, Reason, parse_timestamp
from midtrans import TransactionStatus
from product_service.domain import OUTSTANDING, ReservationStatus

RELEASED = (ReservationStatus.CANCELLED, ReservationStatus.EXPIRED)
# The journal's ending of a phase Settled that no verified payment backs (written by hand):
# the resource keeps Settled (terminal phases never change), the read model says Cancelled.
UNVERIFIED_SETTLEMENT = "UnverifiedSettlement"
WATCHING = "watching"  # payment_returns.state of an order still watched for stray money


# --- the snapshot ------------------------------------------------------------------------


@dataclass(frozen=True)
class ProductLedger:
    """A product's counters and what its ledger (``stock_movements``) says."""

    product_id: str
    stock: int
    reserved: int
    ledger: int  # sum of all its movements
    sold: Mapping[str, int] = field(default_factory=dict)  # transaction id -> units sold


@dataclass(frozen=True)
class Reservation:
    transaction_id: str
    status: str
    lines: Mapping[str, int]  # product id -> quantity


@dataclass(frozen=True)
class CheckoutRow:
    """A checkout's read-model row (``checkouts``), live or archived."""

    order_id: str
    namespace: str
    name: str
    uid: str
    phase: str
    reserve_attempted: bool
    total: int | None
    currency: str
    midtrans_order_id: str | None
    paid_order_id: str | None
    failure_reason: str | None
    created_at: dt.datetime
    finished_at: dt.datetime | None
    deleted_at: dt.datetime | None
    expires_at: dt.datetime | None = None  # the payment deadline journaled with the terms

    @property
    def key(self) -> str:
        return f"{self.namespace}/{self.name}"

    @property
    def terminal(self) -> bool:
        return self.phase in TERMINAL


@dataclass(frozen=True)
class ReturnRow:
    """A Midtrans order watched for money to give back (``payment_returns``)."""

    midtrans_order_id: str
    order_id: str
    state: str
    watch_until: dt.datetime
    attempts: int = 0
    last_error: str | None = None


@dataclass(frozen=True)
class Resource:
    """What the audit needs of a Checkout resource."""

    namespace: str
    name: str
    uid: str
    phase: str | None
    failure_reason: str | None
    created_at: dt.datetime
    ended_at: dt.datetime | None  # when it entered its terminal phase (status.history)

    @property
    def key(self) -> str:
        return f"{self.namespace}/{self.name}"

    @classmethod
    def of(cls, body: Mapping[str, Any]) -> Resource:
        meta, status = body["metadata"], body.get("status") or {}
        phase = status.get("phase")
        history = status.get("history") or []
        last = history[-1] if history and history[-1].get("phase") == phase else {}
        created = parse_timestamp(meta.get("creationTimestamp"))
        return cls(
            namespace=meta["namespace"],
            name=meta["name"],
            uid=meta["uid"],
            phase=phase,
            failure_reason=(status.get("failure") or {}).get("reason"),
            created_at=created or dt.datetime.min.replace(tzinfo=dt.UTC),
            ended_at=parse_timestamp(last.get("at")) if phase in TERMINAL else None,
        )


@dataclass(frozen=True)
class Snapshot:
    now: dt.datetime
    products: Sequence[ProductLedger]
    reservations: Sequence[Reservation]
    checkouts: Sequence[CheckoutRow]
    resources: Sequence[Resource]
    pages: Mapping[str, Sequence[str]]  # order id -> the Midtrans orders of payment_pages
    returns: Sequence[ReturnRow]
    payments: Mapping[str, TransactionStatus | None]  # Midtrans order -> its status
    namespaces: frozenset[str] | None = None  # the resources' namespaces; None: all
    # The Midtrans orders Midtrans made for us (its Snap token came back); None: all are.
    made: frozenset[str] | None = None


# --- findings ----------------------------------------------------------------------------


class Severity(enum.StrEnum):
    MISMATCH = "mismatch"
    WARNING = "warning"  # money on its way back (``--strict`` counts it as a mismatch)


@dataclass(frozen=True)
class Finding:
    """Two sides that disagree about one object."""

    check: str  # stock, reservation, read-model, money
    subject: str  # "product <id>", "checkout <namespace>/<name>", "reservation <id>"
    left: str
    right: str
    severity: Severity = Severity.MISMATCH

    def line(self) -> str:
        return f"{self.severity.upper()} {self.check} {self.subject}: {self.left} vs {self.right}"

    def as_json(self) -> dict[str, str]:
        return {
            "severity": self.severity.value,
            "check": self.check,
            "subject": self.subject,
            "left": self.left,
            "right": self.right,
        }


def _recent(at: dt.datetime | None, now: dt.datetime, grace: dt.timedelta) -> bool:
    return at is not None and at > now - grace


# --- 1. stock ----------------------------------------------------------------------------


def product_problems(
    p: ProductLedger, held: int, settled: Mapping[str, int]
) -> list[tuple[str, str]]:
    """The pairs of sides that disagree about one product's stock.

    ``held``: what open reservations hold of it; ``settled``: transaction id -> units
    that settled reservations took of it.
    """
    problems = []
    if p.ledger != p.stock:
        problems.append((f"products.stock={p.stock}", f"stock ledger sum={p.ledger}"))
    if p.reserved != held:
        problems.append((f"products.reserved={p.reserved}", f"open reservations hold {held}"))
    if not p.stock >= p.reserved >= 0:
        problems.append((f"products.stock={p.stock}", f"products.reserved={p.reserved}"))
    differ = sorted(t for t in set(p.sold) | set(settled) if p.sold.get(t) != settled.get(t))
    if differ:
        shown = ", ".join(f"{t}: {p.sold.get(t, 0)} vs {settled.get(t, 0)}" for t in differ[:3])
        problems.append(
            (
                f"stock ledger sold {sum(p.sold.values())}",
                f"settled reservations took {sum(settled.values())} ({shown})",
            )
        )
    return problems


def check_stock(
    products: Sequence[ProductLedger], reservations: Sequence[Reservation]
) -> list[Finding]:
    held: Counter[str] = Counter()
    settled: defaultdict[str, dict[str, int]] = defaultdict(dict)
    for r in reservations:
        for product_id, quantity in r.lines.items():
            if r.status in OUTSTANDING:
                held[product_id] += quantity
            elif r.status == ReservationStatus.SETTLED:
                settled[product_id][r.transaction_id] = quantity
    return [
        Finding("stock", f"product {p.product_id}", left, right)
        for p in products
        for left, right in product_problems(p, held[p.product_id], settled[p.product_id])
    ]


# --- 2. each checkout and its reservation ------------------------------------------------


def reservation_agrees(
    c: CheckoutRow, r: Reservation | None, now: dt.datetime, grace: dt.timedelta
) -> bool:
    """Whether the reservation is what the checkout's phase says it must be."""
    status = r.status if r is not None else None
    if not c.reserve_attempted:
        return status is None
    if c.phase == Phase.SETTLED:
        agrees = status == ReservationStatus.SETTLED
    elif c.terminal:
        agrees = status is None or status in RELEASED
    else:
        agrees = status is None or status in OUTSTANDING
    # The final event may be on its way: an open reservation of a fresh ending.
    in_flight = c.terminal and status in OUTSTANDING and _recent(c.finished_at, now, grace)
    return agrees or in_flight


def overdue(c: CheckoutRow, now: dt.datetime, grace: dt.timedelta) -> bool:
    """Whether a checkout still runs more than ``grace`` past its payment deadline (the
    journal's, which its Snap page lapses by): nobody can pay it, yet what it reserved
    stays held, as its resource (``status.expiresAt``, editable) may not say."""
    return not c.terminal and c.expires_at is not None and c.expires_at < now - grace


def check_reservations(
    checkouts: Sequence[CheckoutRow],
    reservations: Sequence[Reservation],
    now: dt.datetime,
    grace: dt.timedelta,
) -> list[Finding]:
    by_id = {r.transaction_id: r for r in reservations}
    findings = []
    for c in checkouts:
        r = by_id.get(c.order_id)
        held = f"reservation {c.order_id}: {r.status if r else 'none'}"
        if not reservation_agrees(c, r, now, grace):
            attempted = "" if c.reserve_attempted else " (Reserve never attempted)"
            findings.append(
                Finding(
                    "reservation", f"checkout {c.key}", f"read model: {c.phase}{attempted}", held
                )
            )
        elif overdue(c, now, grace):
            assert c.expires_at is not None
            deadline = c.expires_at.isoformat(timespec="seconds")
            findings.append(
                Finding(
                    "reservation",
                    f"checkout {c.key}",
                    f"read model: {c.phase}, payment deadline {deadline} passed",
                    held,
                )
            )
    orders = {c.order_id for c in checkouts}
    for r in reservations:
        if r.transaction_id not in orders:
            findings.append(
                Finding(
                    "reservation",
                    f"reservation {r.transaction_id}",
                    f"reservation: {r.status}",
                    "read model: no checkout",
                )
            )
    return findings


# --- 3. each resource and its read-model row ---------------------------------------------


def _phases_agree(resource_phase: str, row: CheckoutRow) -> bool:
    if row.phase == resource_phase:
        return True
    # Settled by hand without a verified payment: the journal records it Cancelled.
    return (
        resource_phase == Phase.SETTLED
        and row.phase == Phase.CANCELLED
        and row.failure_reason == UNVERIFIED_SETTLEMENT
    )


def resource_problem(
    res: Resource, row: CheckoutRow | None, now: dt.datetime, grace: dt.timedelta
) -> tuple[str, str] | None:
    """(the resource's side, the read model's side) when they disagree."""
    ours = f"resource {res.phase or 'new'} (uid {res.uid})"
    fresh = _recent(res.created_at, now, grace)  # the operator may not have seen it yet
    if row is None:
        return None if fresh else (ours, "read model: no row")
    if row.uid != res.uid:
        # Its order id belongs to another Checkout: it is refused and has no row of its own.
        duplicate = res.failure_reason == Reason.DUPLICATE_ORDER_ID
        if duplicate or fresh:
            return None
        return ours, f"read model row of {row.key} (uid {row.uid})"
    if row.deleted_at is not None:
        return ours, f"read model: deleted at {row.deleted_at.isoformat()}"
    if res.phase in TERMINAL:
        if not _phases_agree(res.phase, row) and not _recent(res.ended_at, now, grace):
            return ours, f"read model: {row.phase}"
    elif row.terminal:  # the read model is written after the resource, never before
        return ours, f"read model: {row.phase}"
    elif res.phase == Phase.AWAITING_PAYMENT and row.total is None:
        # The total a payment is judged by is journaled before anyone can pay.
        return ours, "read model: no total to judge a payment by"
    return None


def check_resources(
    resources: Sequence[Resource],
    checkouts: Sequence[CheckoutRow],
    namespaces: frozenset[str] | None,
    now: dt.datetime,
    grace: dt.timedelta,
) -> list[Finding]:
    rows = {c.order_id: c for c in checkouts}
    findings = []
    for res in resources:
        problem = resource_problem(res, rows.get(res.name), now, grace)
        if problem is not None:
            findings.append(Finding("read-model", f"checkout {res.key}", *problem))
    live = {res.uid for res in resources}
    for c in checkouts:
        watched = namespaces is None or c.namespace in namespaces
        # A row newer than the list of resources may belong to a resource made since.
        gone = c.uid not in live and not _recent(c.created_at, now, grace)
        if watched and gone and c.deleted_at is None:
            findings.append(
                Finding(
                    "read-model",
                    f"checkout {c.key}",
                    f"read model: {c.phase}, not deleted (uid {c.uid})",
                    "resource: gone",
                )
            )
    return findings


# --- 4. money ----------------------------------------------------------------------------


def orders_of(
    c: CheckoutRow, pages: Mapping[str, Sequence[str]], returns: Iterable[ReturnRow]
) -> set[str]:
    """Every Midtrans order of a checkout whose money the audit must see (``returns``: the
    checkout's rows of payment_returns). The page of a running checkout is left out: its
    buyer may be paying right now."""
    orders = {c.midtrans_order_id, c.paid_order_id, *pages.get(c.order_id, ())}
    orders.update(r.midtrans_order_id for r in returns)
    if not c.terminal:
        orders.discard(c.midtrans_order_id)
    return {o for o in orders if o}


def _returns_by_checkout(returns: Iterable[ReturnRow]) -> defaultdict[str, list[ReturnRow]]:
    by_checkout: defaultdict[str, list[ReturnRow]] = defaultdict(list)
    for r in returns:
        by_checkout[r.order_id].append(r)
    return by_checkout


def orders_to_ask(
    checkouts: Sequence[CheckoutRow],
    pages: Mapping[str, Sequence[str]],
    returns: Sequence[ReturnRow],
) -> list[str]:
    by_checkout = _returns_by_checkout(returns)
    asked: set[str] = set()
    for c in checkouts:
        asked |= orders_of(c, pages, by_checkout[c.order_id])
    return sorted(asked)


def describe(ts: TransactionStatus | None) -> str:
    if ts is None:
        return "no transaction"
    text = f"{ts.transaction_status} {ts.gross_amount or '?'} {ts.currency or 'IDR'}"
    if ts.fraud_status:
        text += f" (fraud {ts.fraud_status})"
    if ts.refunded_idr:
        text += f", {ts.refunded_idr} refunded"
    return text


def sale_problem(c: CheckoutRow, ts: TransactionStatus | None) -> str | None:
    """Why the order a Settled checkout was sold by is not money kept at Midtrans."""
    if ts is None or not ts.is_paid:
        return "not paid"
    return payment_problem(ts, c.paid_order_id, c.total, c.currency)


def return_severity(
    c: CheckoutRow,
    ts: TransactionStatus | None,
    watched: ReturnRow | None,
    now: dt.datetime,
    grace: dt.timedelta,
) -> Severity | None:
    """Money on an order that bought nothing: a mismatch unless it has gone back (None) or
    is watched within its window (a warning)."""
    if return_step(ts, watch_over=True) not in (ReturnStep.VOID, ReturnStep.REFUND):
        return None  # no money on it (or it went back)
    if _recent(c.finished_at, now, grace):
        return None  # the ending's cancel or expiry at Midtrans may be in flight
    if watched is not None and watched.state == WATCHING and now <= watched.watch_until:
        return Severity.WARNING
    return Severity.MISMATCH


def order_finding(
    c: CheckoutRow,
    order: str,
    ts: TransactionStatus | None,
    watched: ReturnRow | None,
    now: dt.datetime,
    grace: dt.timedelta,
    made: frozenset[str] | None = None,
) -> Finding | None:
    """What is wrong with the money on one order of a checkout, if anything.

    ``made``: the orders Midtrans made for us. Money on another one (refused to us as
    taken: another release's checkout of the same name on one merchant account) is its
    maker's, which the operator leaves alone: a warning for a person, not a mismatch."""
    subject = f"checkout {c.key} order {order}"
    if c.phase == Phase.SETTLED and order == c.paid_order_id:
        problem = sale_problem(c, ts)
        if problem is None:
            return None
        return Finding(
            "money",
            subject,
            f"read model: Settled by it for {c.total} {c.currency}",
            f"Midtrans: {describe(ts)} ({problem})",
        )
    severity = return_severity(c, ts, watched, now, grace)
    if severity is None:
        return None
    if made is not None and order not in made:
        journal = "an order Midtrans gave it no Snap page for (taken, or answer lost)"
        return Finding(
            "money",
            subject,
            f"read model: {c.phase}, {journal}",
            f"Midtrans: {describe(ts)}",
            Severity.WARNING,
        )
    journal = "not watched for return"
    if watched is not None:
        journal = f"payment_returns {watched.state} until {watched.watch_until.isoformat()}"
        if watched.last_error:
            journal += f" ({watched.attempts} tries: {watched.last_error})"
    return Finding(
        "money", subject, f"read model: {c.phase}, {journal}", f"Midtrans: {describe(ts)}", severity
    )


def check_money(
    checkouts: Sequence[CheckoutRow],
    pages: Mapping[str, Sequence[str]],
    returns: Sequence[ReturnRow],
    payments: Mapping[str, TransactionStatus | None],
    now: dt.datetime,
    grace: dt.timedelta,
    made: frozenset[str] | None = None,
) -> list[Finding]:
    """``payments``: Midtrans' answers for (at least) :func:`orders_to_ask`; ``made``: see
    :func:`order_finding`."""
    watched = {r.midtrans_order_id: r for r in returns}
    by_checkout = _returns_by_checkout(returns)
    findings = []
    for c in checkouts:
        if c.phase == Phase.SETTLED and c.paid_order_id is None:
            findings.append(
                Finding("money", f"checkout {c.key}", "read model: Settled", "no verified payment")
            )
        for order in sorted(orders_of(c, pages, by_checkout[c.order_id]) & payments.keys()):
            found = order_finding(c, order, payments[order], watched.get(order), now, grace, made)
            if found is not None:
                findings.append(found)
    return findings


# --- the report --------------------------------------------------------------------------


@dataclass(frozen=True)
class Report:
    findings: Sequence[Finding]
    counts: Mapping[str, int]

    def mismatches(self, strict: bool) -> list[Finding]:
        return [f for f in self.findings if strict or f.severity is Severity.MISMATCH]

    def warnings(self, strict: bool) -> list[Finding]:
        return [] if strict else [f for f in self.findings if f.severity is Severity.WARNING]

    def exit_code(self, strict: bool) -> int:
        return 1 if self.mismatches(strict) else 0

    def text(self, strict: bool) -> str:
        lines = [f.line() for f in self.findings]
        checked = ", ".join(f"{n} {what}" for what, n in self.counts.items())
        lines.append(
            f"checked {checked}: {len(self.mismatches(strict))} mismatches, "
            f"{len(self.warnings(strict))} warnings"
        )
        return "\n".join(lines)

    def as_json(self, strict: bool) -> dict[str, Any]:
        return {
            "ok": self.exit_code(strict) == 0,
            "exit_code": self.exit_code(strict),
            "checked": dict(self.counts),
            "mismatches": [f.as_json() for f in self.mismatches(strict)],
            "warnings": [f.as_json() for f in self.warnings(strict)],
        }


def audit(snapshot: Snapshot, grace: dt.timedelta) -> Report:
    s, now = snapshot, snapshot.now
    findings = [
        *check_stock(s.products, s.reservations),
        *check_reservations(s.checkouts, s.reservations, now, grace),
        *check_resources(s.resources, s.checkouts, s.namespaces, now, grace),
        *check_money(s.checkouts, s.pages, s.returns, s.payments, now, grace, s.made),
    ]
    counts = {
        "products": len(s.products),
        "reservations": len(s.reservations),
        "checkouts": len(s.checkouts),
        "resources": len(s.resources),
        "payments": len(s.payments),
    }
    return Report(findings, counts)
