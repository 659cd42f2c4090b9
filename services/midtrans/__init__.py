"""The project's asyncio Midtrans client (Snap, Core API status/cancel/expire/refund, signatures).

The official ``midtransclient`` package is synchronous and does not verify notification
signatures, so the operator and the webhook listener use this small client instead. It talks
to real Midtrans or to the local ``midtrans_sandbox`` unchanged: only the base URLs and the
server key differ (:class:`MidtransConfig`).
"""

from midtrans.client import MidtransClient
from midtrans.config import MidtransConfig
from midtrans.errors import (
    MidtransClientError,
    MidtransConflict,
    MidtransError,
    MidtransServerError,
)
from midtrans.models import ItemDetail, SnapToken, TransactionStatus
from midtrans.signature import compute_signature, verify_signature

__all__ = [
    "ItemDetail",
    "MidtransClient",
    "MidtransClientError",
    "MidtransConfig",
    "MidtransConflict",
    "MidtransError",
    "MidtransServerError",
    "SnapToken",
    "TransactionStatus",
    "compute_signature",
    "verify_signature",
]
