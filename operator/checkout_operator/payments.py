"""What a Midtrans status proves, and what to do with money that must go back.

Pure rules, no I/O, like ``saga``. Two questions are answered here:

* ``payment_problem``: may this status settle this checkout? Only a status read
  from Midtrans' status API (server to server, with the server key) is evidence;
  a notification is a hint that makes the operator ask. Even then the status must
  be for the checkout's own payment page, its signed ``status_code`` must go with
  its ``transaction_status``, and amount and currency must equal the checkout's.
* ``return_step``: a Midtrans order whose checkout did not settle by it holds no
  goods, so whatever money reaches it goes back: a capture or a pending payment
  is voided (Midtrans refuses to refund a capture), a settlement is refunded.
"""

from __future__ import annotations

import enum

from midtrans import TransactionStatus

# Money after settlement that is already on its way back.
_RETURNED = frozenset({"refund", "chargeback", "partial_chargeback"})
# Final at Midtrans without money: nothing can be paid on this order any more.
_CLOSED = frozenset({"cancel", "expire"})
# This attempt failed, but the buyer may still pay on the same page.
_RETRYABLE = frozenset({"deny", "failure"})


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


class ReturnStep(enum.Enum):
    WAIT = "wait"  # nothing paid (yet): look again later
    VOID = "void"  # capture or pending: cancel at Midtrans
    REFUND = "refund"  # settled: refund what is left
    RETURNED = "returned"  # already refunded / charged back
    CLOSED = "closed"  # can no longer be paid, nothing was paid


def return_step(ts: TransactionStatus | None, watch_over: bool) -> ReturnStep:
    """What to do about an order whose checkout did not settle by it.

    ``ts`` None: Midtrans has no transaction yet (no payment method chosen), so the
    Snap page is still payable until its own expiry: wait, unless that is over.
    """
    if ts is None:
        return ReturnStep.CLOSED if watch_over else ReturnStep.WAIT
    status = ts.transaction_status
    if status in ("settlement", "partial_refund"):
        return ReturnStep.REFUND
    if status in ("capture", "pending", "authorize"):
        return ReturnStep.VOID
    if status in _RETURNED:
        return ReturnStep.RETURNED
    if status in _CLOSED:
        return ReturnStep.CLOSED
    if status in _RETRYABLE and not watch_over:
        return ReturnStep.WAIT
    return ReturnStep.CLOSED if watch_over else ReturnStep.WAIT


def refundable_amount(ts: TransactionStatus) -> int:
    """What is left to refund of a settled order (0 if unknown)."""
    return max(0, (ts.amount_idr or 0) - ts.refunded_idr)
