"""What a Midtrans status means for a checkout, and whether it may settle it.

Pure rules, no I/O. The operator (``checkout_operator.saga`` re-exports them) and
the webhook listener decide with the same ones. Only a status read from Midtrans'
status API (server to server, with the server key) is evidence of money; a
notification is a hint to ask. Even then the status must be for the checkout's own
payment page, its signed ``status_code`` must go with its ``transaction_status``,
and amount and currency must equal the checkout's.
"""

from __future__ import annotations

import datetime as dt
import enum
from collections.abc import Mapping
from typing import Any

from midtrans import TransactionStatus

from .checkout_bounds import whole_number
from .checkout_resource import Phase
from .checkout_status import timestamp


class PaymentState(enum.Enum):
    NONE = "none"  # no payment method chosen yet (status API answers 404)
    PENDING = "pending"
    DENIED = "denied"  # deny/failure: this attempt failed, the buyer may try again
    PAID = "paid"
    CANCELLED = "cancelled"
    EXPIRED = "expired"
    REFUNDED = "refunded"


def payment_state(transaction_status: str | None, fraud_status: str | None) -> PaymentState:
    """Midtrans' status words, per its documentation (see docs/midtrans)."""
    if not transaction_status:
        return PaymentState.NONE
    if transaction_status == "settlement":
        return PaymentState.PAID
    if transaction_status == "capture":
        return PaymentState.PAID if fraud_status == "accept" else PaymentState.PENDING
    if transaction_status in ("deny", "failure"):
        return PaymentState.DENIED
    if transaction_status == "cancel":
        return PaymentState.CANCELLED
    if transaction_status == "expire":
        return PaymentState.EXPIRED
    if transaction_status in ("refund", "partial_refund", "chargeback", "partial_chargeback"):
        return PaymentState.REFUNDED
    return PaymentState.PENDING


# Order of Midtrans statuses for one order: a notification never moves a payment
# backwards (an old `pending` arriving after `settlement` changes nothing).
_PAYMENT_RANK = {
    PaymentState.NONE: 0,
    PaymentState.PENDING: 1,
    PaymentState.DENIED: 1,
    PaymentState.PAID: 2,
    PaymentState.CANCELLED: 2,
    PaymentState.EXPIRED: 2,
    PaymentState.REFUNDED: 3,
}


def supersedes(new: PaymentState, old: PaymentState) -> bool:
    """Whether a newly reported payment state may replace the recorded one.

    Pending and denied alternate while the buyer retries; a final state (paid,
    cancelled, expired) is only ever followed by a refund.
    """
    if new is old:
        return False
    if new is PaymentState.REFUNDED:
        return True
    final = 2
    return _PAYMENT_RANK[old] < final and _PAYMENT_RANK[new] >= _PAYMENT_RANK[old]


def payment_problem(
    ts: TransactionStatus, midtrans_order_id: str | None, total: int | None, currency: str
) -> str | None:
    """Why ``ts`` may not settle the checkout (None: it may)."""
    if midtrans_order_id is None or ts.order_id != midtrans_order_id:
        return f"status is for order {ts.order_id}, the checkout's page is {midtrans_order_id}"
    if not ts.status_code_consistent:
        return (
            f"status_code {ts.status_code} does not go with "
            f"{ts.transaction_status}/{ts.fraud_status}"
        )
    if total is None or ts.amount_idr != total:
        return f"amount {ts.gross_amount} differs from the checkout's total {total}"
    if (ts.currency or "IDR") != currency:
        return f"currency {ts.currency} differs from the checkout's {currency}"
    return None


def why_not_settled_by(resource: Mapping[str, Any], ts: TransactionStatus) -> str | None:
    """Why the status ``ts`` (read from Midtrans' status API) may not settle this
    Checkout as the resource shows it (None: it may).

    The listener's rule. The resource's own record of its page and total is what it
    checks against; the operator checks again against its journal before the goods
    are sold (``settled`` is published only for a payment the journal verified).
    """
    status = resource.get("status") or {}
    phase = status.get("phase")
    if phase != Phase.AWAITING_PAYMENT.value:
        return f"the checkout is {phase or Phase.PENDING.value}, not awaiting payment"
    if payment_state(ts.transaction_status, ts.fraud_status) is not PaymentState.PAID:
        return f"Midtrans says {ts.transaction_status}/{ts.fraud_status}: not paid"
    page = (status.get("payment") or {}).get("midtransOrderId")
    total = (status.get("amounts") or {}).get("total")
    currency = str((resource.get("spec") or {}).get("currency") or "IDR")
    page = page if isinstance(page, str) else None
    return payment_problem(ts, page, total if whole_number(total) else None, currency)


def payment_fields(ts: TransactionStatus) -> dict[str, Any]:
    """``status.payment`` as a status from Midtrans reports it."""
    fields = {
        "transactionId": ts.transaction_id,
        "transactionStatus": ts.transaction_status,
        "fraudStatus": ts.fraud_status,
    }
    if ts.is_paid:
        paid_at = _midtrans_time(ts.settlement_time or ts.transaction_time)
        fields["paidAt"] = timestamp(paid_at or dt.datetime.now(dt.UTC))
    return {k: v for k, v in fields.items() if v}


_JAKARTA = dt.timezone(dt.timedelta(hours=7))


def _midtrans_time(value: str | None) -> dt.datetime | None:
    """Midtrans reports times as ``yyyy-MM-dd HH:mm:ss`` in GMT+7."""
    if not value:
        return None
    try:
        return dt.datetime.strptime(value, "%Y-%m-%d %H:%M:%S").replace(tzinfo=_JAKARTA)
    except ValueError:
        return None
