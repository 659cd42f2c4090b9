"""Product rules with no I/O: reservation checks and the event transition table.

The store and the transports call these functions; they are tested without a
database. Errors are :class:`ProductError` with a stable ``reason`` and metadata
naming the product, which each transport maps to its own status (gRPC code with
ErrorInfo, HTTP status with a JSON body).
"""

from __future__ import annotations

import enum
import hashlib
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from saga_kit.events import EventType

MAX_ITEMS = 50
MAX_QUANTITY = 10_000
TRANSACTION_ID_RE = re.compile(r"^[A-Za-z0-9\-_~.]{1,50}$")
TRANSACTION_ID_RULE = "1-50 characters of letters, digits, '-', '_', '~' or '.'"
SLUG_RE = re.compile(r"^[a-z0-9]+(-[a-z0-9]+)*$")


class ErrorKind(enum.Enum):
    INVALID = "invalid"  # the request itself is malformed
    NOT_FOUND = "not_found"
    PRECONDITION = "precondition"  # valid request, but the current state refuses it
    CONFLICT = "conflict"  # clashes with an existing resource
    FORBIDDEN = "forbidden"


@dataclass
class ProductError(Exception):
    kind: ErrorKind
    reason: str
    message: str
    metadata: dict[str, str] = field(default_factory=dict)
    field_violations: list[tuple[str, str]] = field(default_factory=list)

    def __str__(self) -> str:
        return self.message


class ReservationStatus(enum.StrEnum):
    RESERVED = "reserved"
    COMMITTED = "committed"
    SETTLED = "settled"
    CANCELLED = "cancelled"
    EXPIRED = "expired"


OUTSTANDING = (ReservationStatus.RESERVED, ReservationStatus.COMMITTED)


@dataclass(frozen=True)
class ReserveItem:
    product_id: str
    unit_price: int
    quantity: int


@dataclass(frozen=True)
class ProductStock:
    """What Reserve needs to know of a product, read under a row lock."""

    id: str
    name: str
    price: int
    stock: int
    reserved: int

    @property
    def available(self) -> int:
        return self.stock - self.reserved


def validate_reserve_request(
    transaction_id: str, user_id: str, items: Sequence[ReserveItem]
) -> None:
    """Refuse a malformed Reserve, naming every offending field."""
    violations: list[tuple[str, str]] = []
    if not TRANSACTION_ID_RE.fullmatch(transaction_id):
        violations.append(("transaction_id", TRANSACTION_ID_RULE))
    if not user_id:
        violations.append(("user_id", "required"))
    if not items:
        violations.append(("items", "at least one item is required"))
    if len(items) > MAX_ITEMS:
        violations.append(("items", f"at most {MAX_ITEMS} items"))
    seen: dict[str, int] = {}
    for i, item in enumerate(items):
        if not item.product_id:
            violations.append((f"items[{i}].product_id", "required"))
        elif item.product_id in seen:
            violations.append(
                (
                    f"items[{i}].product_id",
                    f"product {item.product_id} is already in items[{seen[item.product_id]}]; "
                    "send each product once with the total quantity",
                )
            )
        else:
            seen[item.product_id] = i
        if not 1 <= item.quantity <= MAX_QUANTITY:
            violations.append((f"items[{i}].quantity", f"must be 1 to {MAX_QUANTITY}"))
        if item.unit_price < 0:
            violations.append((f"items[{i}].unit_price", "must not be negative"))
    if violations:
        raise ProductError(
            ErrorKind.INVALID,
            "INVALID_RESERVE_REQUEST",
            "invalid Reserve request: " + "; ".join(f"{name}: {why}" for name, why in violations),
            field_violations=violations,
        )


MAX_ASKED = 500  # transaction ids per OpenReservations call


def validate_asked_ids(transaction_ids: Sequence[str]) -> None:
    """The ids of an OpenReservations call: at most ``MAX_ASKED``, each well formed."""
    violations: list[tuple[str, str]] = []
    if len(transaction_ids) > MAX_ASKED:
        violations.append(("transaction_ids", f"at most {MAX_ASKED} ids"))
    violations += [
        (f"transaction_ids[{i}]", TRANSACTION_ID_RULE)
        for i, tid in enumerate(transaction_ids)
        if not TRANSACTION_ID_RE.fullmatch(tid)
    ][:10]
    if violations:
        raise ProductError(
            ErrorKind.INVALID,
            "INVALID_OPEN_RESERVATIONS_REQUEST",
            "invalid OpenReservations request: "
            + "; ".join(f"{name}: {why}" for name, why in violations),
            field_violations=violations,
        )


def request_fingerprint(user_id: str, items: Sequence[ReserveItem]) -> str:
    """Identifies what was asked, independent of item order."""
    canonical = ";".join(
        f"{i.product_id}:{i.unit_price}:{i.quantity}"
        for i in sorted(items, key=lambda i: i.product_id)
    )
    return hashlib.sha256(f"{user_id}|{canonical}".encode()).hexdigest()


def not_found(product_id: str) -> ProductError:
    return ProductError(
        ErrorKind.NOT_FOUND,
        "PRODUCT_NOT_FOUND",
        f"product {product_id} does not exist",
        {"product_id": product_id},
    )


def check_items(items: Sequence[ReserveItem], products: Mapping[str, ProductStock]) -> None:
    """The seed's four checks, in its order, each a distinct error naming the product."""
    for item in items:
        pid = item.product_id
        product = products.get(pid)
        if product is None:
            raise not_found(pid)
        if product.available <= 0:
            raise ProductError(
                ErrorKind.PRECONDITION,
                "OUT_OF_STOCK",
                f"product {pid} ({product.name}) is out of stock",
                {"product_id": pid, "available": "0"},
            )
        if item.quantity > product.available:
            raise ProductError(
                ErrorKind.PRECONDITION,
                "INSUFFICIENT_STOCK",
                f"product {pid} ({product.name}): {item.quantity} requested, "
                f"{product.available} available",
                {
                    "product_id": pid,
                    "requested": str(item.quantity),
                    "available": str(product.available),
                },
            )
        if item.unit_price != product.price:
            raise ProductError(
                ErrorKind.PRECONDITION,
                "PRICE_MISMATCH",
                f"product {pid} ({product.name}) costs {product.price}, not {item.unit_price}",
                {
                    "product_id": pid,
                    "requested_price": str(item.unit_price),
                    "current_price": str(product.price),
                },
            )


class StockEffect(enum.Enum):
    NONE = "none"
    RELEASE = "release"  # cancelled/expired: the reserved units become available again
    FINALIZE = "finalize"  # settled: the reserved units are sold


class Outcome(enum.StrEnum):
    APPLIED = "applied"
    DUPLICATE = "duplicate"
    REFUSED = "refused"
    UNKNOWN_TRANSACTION = "unknown_transaction"


# event -> (allowed from-statuses, target status, what happens to the stock)
TRANSITIONS: dict[
    EventType, tuple[tuple[ReservationStatus, ...], ReservationStatus, StockEffect]
] = {
    EventType.COMMITTED: (
        (ReservationStatus.RESERVED,),
        ReservationStatus.COMMITTED,
        StockEffect.NONE,
    ),
    EventType.SETTLED: (OUTSTANDING, ReservationStatus.SETTLED, StockEffect.FINALIZE),
    EventType.CANCELLED: (OUTSTANDING, ReservationStatus.CANCELLED, StockEffect.RELEASE),
    EventType.EXPIRED: (OUTSTANDING, ReservationStatus.EXPIRED, StockEffect.RELEASE),
}


@dataclass(frozen=True)
class Decision:
    outcome: Outcome
    to_status: ReservationStatus | None
    effect: StockEffect


def decide(event: EventType, current: ReservationStatus | None) -> Decision:
    """What an event does to a reservation in ``current`` status.

    A reservation changes only along the table above, so a duplicate changes
    nothing and a late or out-of-order event (e.g. ``cancelled`` after ``settled``)
    is refused; both are recorded by the caller.
    """
    if current is None:
        return Decision(Outcome.UNKNOWN_TRANSACTION, None, StockEffect.NONE)
    allowed, target, effect = TRANSITIONS[event]
    if current in allowed:
        return Decision(Outcome.APPLIED, target, effect)
    if current == target:
        return Decision(Outcome.DUPLICATE, current, StockEffect.NONE)
    return Decision(Outcome.REFUSED, current, StockEffect.NONE)


def event_moves_stock(event: EventType) -> bool:
    """Whether ``event``, applied, moves stock (so its reservation's lines are needed)."""
    return TRANSITIONS[event][2] is not StockEffect.NONE


def slugify(name: str) -> str:
    slug = re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")
    return slug[:100].strip("-") or "product"
