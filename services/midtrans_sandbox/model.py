"""One sandbox transaction and how Midtrans would render it.

Midtrans renders every field as a string: amounts with two decimals ("30000.00"), times in
GMT+7 as "yyyy-MM-dd HH:mm:ss". The signature is computed over exactly those strings with
the documented formula, using :func:`midtrans.signature.compute_signature`, the same code
the project's receivers verify with (the tests recompute it independently with hashlib).
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

from midtrans.models import expected_status_code
from midtrans.signature import compute_signature

WIB = timezone(timedelta(hours=7), "WIB")  # Midtrans reports times in GMT+7 (Jakarta)
TIME_FORMAT = "%Y-%m-%d %H:%M:%S"


def now_utc() -> datetime:
    return datetime.now(UTC)


def wib(moment: datetime) -> str:
    return moment.astimezone(WIB).strftime(TIME_FORMAT)


def amount_text(amount: int) -> str:
    return f"{amount}.00"


@dataclass
class Attempt:
    """One delivery attempt of a notification; ``finished_at`` is None while it is in flight."""

    number: int
    at: datetime
    http_status: int | None = None
    error: str | None = None
    finished_at: datetime | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "number": self.number,
            "at": self.at.isoformat(),
            "finished_at": self.finished_at and self.finished_at.isoformat(),
            "http_status": self.http_status,
            "error": self.error,
        }


@dataclass
class Notification:
    """A signed status notification and what became of its delivery."""

    id: int
    order_id: str
    payload: dict[str, str]
    created_at: datetime
    url: str | None = None  # where it goes; None when nowhere is configured
    attempts: list[Attempt] = field(default_factory=list)
    # queued -> delivered | retrying -> delivered | failed; "unsent" without a notification URL
    state: str = "queued"

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "transaction_status": self.payload["transaction_status"],
            "status_code": self.payload["status_code"],
            "created_at": self.created_at.isoformat(),
            "state": self.state,
            "url": self.url,
            "payload": self.payload,
            "attempts": [a.to_json() for a in self.attempts],
        }


@dataclass
class Transaction:
    """A Snap order: ``transaction_status`` is None until the customer picks a payment method."""

    order_id: str
    gross_amount: int
    token: str
    created_at: datetime
    expires_at: datetime  # when the (scaled) Snap expiry passes
    item_details: list[dict[str, Any]]
    customer_details: dict[str, Any] | None = None
    custom_fields: dict[str, str] = field(default_factory=dict)
    transaction_id: str = field(default_factory=lambda: str(uuid.uuid4()))
    payment_type: str | None = None
    transaction_status: str | None = None
    fraud_status: str | None = None
    transaction_time: datetime | None = None
    settlement_time: datetime | None = None
    # The Snap session expired before a payment method was chosen: Midtrans never creates a
    # transaction then, so the status API keeps answering 404 and nothing is notified.
    token_expired: bool = False
    refunded_amount: int = 0
    # Set by the control API: refunds are refused, as Midtrans does for payment methods
    # that cannot be refunded (a person must act then).
    refunds_refused: bool = False
    refunds: list[dict[str, Any]] = field(default_factory=list)
    notifications: list[Notification] = field(default_factory=list)
    # From the Snap request's X-Override/X-Append-Notification headers and the dashboard
    # URL (the sandbox's setting); empty: notifications are recorded "unsent".
    notification_urls: tuple[str, ...] = ()

    @property
    def chosen(self) -> bool:
        return self.transaction_status is not None

    @property
    def status_code(self) -> str:
        assert self.transaction_status is not None
        code = expected_status_code(self.transaction_status, self.fraud_status)
        assert code is not None, self.transaction_status
        return code

    def status_json(self, *, merchant_id: str, server_key: str, message: str) -> dict[str, str]:
        """The status API / notification body: all strings, signed like Midtrans signs it."""
        assert self.transaction_status is not None and self.transaction_time is not None
        gross = amount_text(self.gross_amount)
        body = {
            "status_code": self.status_code,
            "status_message": message,
            "transaction_id": self.transaction_id,
            "order_id": self.order_id,
            "merchant_id": merchant_id,
            "payment_type": self.payment_type or "",
            "transaction_time": wib(self.transaction_time),
            "transaction_status": self.transaction_status,
            "fraud_status": self.fraud_status or "accept",
            "gross_amount": gross,
            "currency": "IDR",
            "expiry_time": wib(self.expires_at),
            "signature_key": compute_signature(self.order_id, self.status_code, gross, server_key),
        }
        if self.settlement_time is not None:
            body["settlement_time"] = wib(self.settlement_time)
        if self.refunded_amount:
            body["refund_amount"] = amount_text(self.refunded_amount)
        for name, value in self.custom_fields.items():
            body[name] = value
        return body

    def to_json(self) -> dict[str, Any]:
        """The raw state for the control API (not a Midtrans format)."""
        return {
            "order_id": self.order_id,
            "token": self.token,
            "gross_amount": self.gross_amount,
            "transaction_id": self.transaction_id,
            "transaction_status": self.transaction_status,
            "payment_type": self.payment_type,
            "fraud_status": self.fraud_status,
            "token_expired": self.token_expired,
            "created_at": self.created_at.isoformat(),
            "expires_at": self.expires_at.isoformat(),
            "transaction_time": self.transaction_time and self.transaction_time.isoformat(),
            "settlement_time": self.settlement_time and self.settlement_time.isoformat(),
            "refunded_amount": self.refunded_amount,
            "refunds_refused": self.refunds_refused,
            "refunds": self.refunds,
            "item_details": self.item_details,
            "customer_details": self.customer_details,
            "custom_fields": self.custom_fields,
            "notifications": [n.to_json() for n in self.notifications],
        }
