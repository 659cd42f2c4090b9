"""The payment TTL's bounds, shared by the REST API (which refuses) and the operator (which clamps).

The CRD declares the same numbers for ``spec.paymentTTLSeconds`` (tests/unit/test_limits.py
compares them with crds/checkout.yaml).
"""

from __future__ import annotations

DEFAULT_PAYMENT_TTL_SECONDS = 900  # the CRD's default for spec.paymentTTLSeconds
CRD_MAX_PAYMENT_TTL_SECONDS = 86_400  # the CRD's maximum: no configured cap may exceed it
DEFAULT_MAX_PAYMENT_TTL_SECONDS = 3600  # Midtrans' usual windows are 15-60 minutes


def cap_problem(cap: int) -> str | None:
    """Why ``cap`` cannot be the payment TTL cap (None: it can)."""
    if 1 <= cap <= CRD_MAX_PAYMENT_TTL_SECONDS:
        return None
    return f"the payment TTL cap must be 1..{CRD_MAX_PAYMENT_TTL_SECONDS} s, got {cap}"
