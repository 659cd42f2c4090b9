"""What a Midtrans status proves, and what to do with money that must go back.

Pure rules, no I/O, like ``saga``. Two questions are answered here:

* ``payment_problem`` (shared with the webhook listener: ``saga_kit.payment_rules``):
  may this status settle this checkout?
* ``return_step``: a Midtrans order whose checkout did not settle by it holds no
  goods, so whatever money reaches it goes back: a capture or a pending payment
  is voided (Midtrans refuses to refund a capture), a settlement is refunded.
"""

from __future__ import annotations

import enum

from midtrans import TransactionStatus
from saga_kit.payment_rules import payment_problem

__all__ = ["ReturnStep", "payment_problem", "refundable_amount", "return_step"]

# Money after settlement that is already on its way back.
_RETURNED = frozenset({"refund", "chargeback", "partial_chargeback"})
# Final at Midtrans without money: nothing can be paid on this order any more.
_CLOSED = frozenset({"cancel", "expire"})
# This attempt failed, but the buyer may still pay on the same page.
_RETRYABLE = frozenset({"deny", "failure"})


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
