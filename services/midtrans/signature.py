"""Midtrans notification signatures.

A notification carries no credentials of its own: ``signature_key`` is the only proof that
Midtrans sent it. The signature is ``sha512_hex(order_id + status_code + gross_amount +
server_key)`` over the raw strings exactly as received: reformatting ``gross_amount``
("10000.00" vs "10000") would break it, so nothing here parses the values.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Mapping
from typing import Any

SIGNED_FIELDS = ("order_id", "status_code", "gross_amount")


def compute_signature(order_id: str, status_code: str, gross_amount: str, server_key: str) -> str:
    """The lowercase sha512 hex digest Midtrans puts into ``signature_key``."""
    if not server_key:
        # An empty key would make every signature computable by anyone.
        raise ValueError("the server key is empty")
    payload = f"{order_id}{status_code}{gross_amount}{server_key}"
    return hashlib.sha512(payload.encode("utf-8")).hexdigest()


def verify_signature(notification: Mapping[str, Any], server_key: str) -> bool:
    """True only if ``signature_key`` matches; False when a field is missing or not a string.

    Non-string values (a JSON number for gross_amount, say) are refused rather than
    converted: there is no "raw string as received" to hash for them.
    """
    values = [notification.get(name) for name in SIGNED_FIELDS]
    received = notification.get("signature_key")
    if not isinstance(received, str) or not all(isinstance(v, str) and v for v in values):
        return False
    order_id, status_code, gross_amount = (str(v) for v in values)
    expected = compute_signature(order_id, status_code, gross_amount, server_key)
    # Constant-time comparison, on bytes so that non-ASCII input cannot raise TypeError.
    return hmac.compare_digest(expected.encode("ascii"), received.encode("utf-8"))
