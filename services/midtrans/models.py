"""Values exchanged with Midtrans: item lines, Snap tokens and transaction statuses.

Midtrans sends every status field as a string and adds new fields over time, so
:class:`TransactionStatus` parses leniently: unknown fields are kept in ``raw`` and ignored,
only ``order_id`` and ``transaction_status`` are required. The ``is_*`` helpers encode the
documented meaning of each status, so callers never compare status strings themselves.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from types import MappingProxyType
from typing import Any

MAX_NAME_LENGTH = 50
MAX_ID_LENGTH = 50

PAID_STATUSES = frozenset({"settlement"})
FAILED_STATUSES = frozenset({"deny", "cancel", "expire", "failure"})
# partial_chargeback is not in the reference notes but Midtrans documents it beside
# chargeback; treating it as a post-settlement status is the only sensible reading.
REFUND_STATUSES = frozenset({"refund", "partial_refund", "chargeback", "partial_chargeback"})

# The body ``status_code`` Midtrans sends with each ``transaction_status``. The signature
# covers ``status_code`` but not ``transaction_status``: a notification whose status does not
# go with its (signed) code was edited, e.g. a genuine ``pending`` (201) relabelled
# ``settlement`` (200), or a challenged capture (201) relabelled ``accept`` (200).
STATUS_CODES: Mapping[str, str] = MappingProxyType(
    {
        "pending": "201",
        "capture": "200",  # a challenged capture is 201, see expected_status_code
        "settlement": "200",
        "deny": "202",
        "cancel": "200",
        "expire": "407",
        "failure": "202",
        "refund": "200",
        "partial_refund": "200",
        "chargeback": "200",
        "partial_chargeback": "200",
        "authorize": "200",
    }
)


def expected_status_code(transaction_status: str, fraud_status: str | None) -> str | None:
    """The status_code that goes with a status (None for a status we don't know)."""
    if transaction_status == "capture" and fraud_status == "challenge":
        return "201"
    return STATUS_CODES.get(transaction_status)


@dataclass(frozen=True)
class ItemDetail:
    """One Snap line item. ``price`` is an integer amount of IDR (negative for a discount)."""

    id: str
    name: str
    price: int
    quantity: int

    def to_json(self) -> dict[str, Any]:
        """Validate and render for Midtrans; names longer than Midtrans allows are truncated."""
        if isinstance(self.price, bool) or not isinstance(self.price, int):
            raise ValueError(f"item {self.id!r}: price must be an int (IDR), got {self.price!r}")
        if isinstance(self.quantity, bool) or not isinstance(self.quantity, int):
            raise ValueError(f"item {self.id!r}: quantity must be an int, got {self.quantity!r}")
        if self.quantity < 1:
            raise ValueError(f"item {self.id!r}: quantity must be >= 1, got {self.quantity}")
        if len(self.id) > MAX_ID_LENGTH:
            # Truncating ids could merge two different products: refuse instead.
            raise ValueError(f"item id {self.id!r} is longer than {MAX_ID_LENGTH} characters")
        name = self.name.strip()
        if not name:
            raise ValueError(f"item {self.id!r}: name is required")
        return {
            "id": self.id,
            "name": name[:MAX_NAME_LENGTH],
            "price": self.price,
            "quantity": self.quantity,
        }

    @property
    def subtotal(self) -> int:
        return self.price * self.quantity


@dataclass(frozen=True)
class SnapToken:
    """A Snap payment session: the token for Snap.js and the hosted payment page URL."""

    token: str
    redirect_url: str


def _text(value: Any) -> str | None:
    if value is None:
        return None
    return value if isinstance(value, str) else str(value)


@dataclass(frozen=True)
class TransactionStatus:
    """A transaction's state, from the status API, a cancel/expire/refund answer or a webhook."""

    order_id: str
    transaction_status: str
    status_code: str | None = None
    status_message: str | None = None
    transaction_id: str | None = None
    merchant_id: str | None = None
    payment_type: str | None = None
    transaction_time: str | None = None
    fraud_status: str | None = None
    gross_amount: str | None = None
    currency: str | None = None
    signature_key: str | None = field(default=None, repr=False)
    expiry_time: str | None = None
    settlement_time: str | None = None
    raw: Mapping[str, Any] = field(default_factory=dict, repr=False, compare=False)

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> TransactionStatus:
        """Parse a status/notification body; ValueError when order_id or status is missing."""
        order_id = _text(data.get("order_id"))
        status = _text(data.get("transaction_status"))
        if not order_id or not status:
            raise ValueError("a transaction status needs order_id and transaction_status")
        return cls(
            order_id=order_id,
            transaction_status=status,
            status_code=_text(data.get("status_code")),
            status_message=_text(data.get("status_message")),
            transaction_id=_text(data.get("transaction_id")),
            merchant_id=_text(data.get("merchant_id")),
            payment_type=_text(data.get("payment_type")),
            transaction_time=_text(data.get("transaction_time")),
            fraud_status=_text(data.get("fraud_status")),
            gross_amount=_text(data.get("gross_amount")),
            currency=_text(data.get("currency")),
            signature_key=_text(data.get("signature_key")),
            expiry_time=_text(data.get("expiry_time")),
            settlement_time=_text(data.get("settlement_time")),
            raw=MappingProxyType(dict(data)),
        )

    @property
    def status_code_consistent(self) -> bool:
        """Whether the (signed) status_code goes with the (unsigned) transaction_status."""
        expected = expected_status_code(self.transaction_status, self.fraud_status)
        return expected is not None and self.status_code == expected

    @property
    def is_paid(self) -> bool:
        """Money is secured: settlement, or a card capture the fraud check accepted."""
        if self.transaction_status in PAID_STATUSES:
            return True
        return self.transaction_status == "capture" and self.fraud_status == "accept"

    @property
    def is_pending(self) -> bool:
        """Waiting for the customer, or a card capture held for fraud review (challenge)."""
        if self.transaction_status == "pending":
            return True
        return self.transaction_status == "capture" and self.fraud_status == "challenge"

    @property
    def is_failed(self) -> bool:
        """The payment will not happen: deny, cancel, expire or failure."""
        return self.transaction_status in FAILED_STATUSES

    @property
    def is_refund(self) -> bool:
        """Money went back after settlement: refund, partial refund or chargeback."""
        return self.transaction_status in REFUND_STATUSES

    @property
    def amount_idr(self) -> int | None:
        """``gross_amount`` ("30000.00") as whole IDR; None if absent or not a whole number."""
        return whole_idr(self.gross_amount)

    @property
    def refunded_idr(self) -> int:
        """``refund_amount`` of a (partially) refunded order as whole IDR; 0 if absent."""
        return whole_idr(_text(self.raw.get("refund_amount"))) or 0


def whole_idr(text: str | None) -> int | None:
    """An amount as Midtrans writes it ("30000.00") in whole IDR; None if not one."""
    if text is None:
        return None
    try:
        amount = Decimal(text)
    except InvalidOperation:
        return None
    if not amount.is_finite() or amount != amount.to_integral_value():
        return None
    return int(amount)
