"""Notification signatures: the documented formula over the raw strings, constant-time check."""

from __future__ import annotations

import hashlib
from typing import Any

import pytest

from midtrans import compute_signature, verify_signature

KEY = "SB-Mid-server-abc123"


def reference(order_id: str, status_code: str, gross_amount: str, key: str) -> str:
    # Written out independently of the code under test: sha512 hex of the concatenation.
    return hashlib.sha512((order_id + status_code + gross_amount + key).encode()).hexdigest()


def notification(**overrides: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "order_id": "order-1",
        "status_code": "200",
        "gross_amount": "30000.00",
        "transaction_status": "settlement",
    }
    body["signature_key"] = reference("order-1", "200", "30000.00", KEY)
    body.update(overrides)
    return body


def test_compute_matches_the_documented_formula() -> None:
    assert compute_signature("order-1", "200", "30000.00", KEY) == reference(
        "order-1", "200", "30000.00", KEY
    )
    # The raw strings count: "30000" and "30000.00" sign differently.
    assert compute_signature("order-1", "200", "30000", KEY) != compute_signature(
        "order-1", "200", "30000.00", KEY
    )


def test_a_genuine_notification_verifies() -> None:
    assert verify_signature(notification(), KEY) is True


@pytest.mark.parametrize(
    "overrides",
    [
        {"gross_amount": "30000"},  # reformatted amount
        {"gross_amount": "300000.00"},  # tampered amount
        {"status_code": "201"},
        {"order_id": "order-2"},
        {"signature_key": "0" * 128},
        {"signature_key": reference("order-1", "200", "30000.00", KEY).upper()},
        {"signature_key": "ü" * 128},  # non-ASCII must not raise
        {"signature_key": None},
        {"gross_amount": 30000.0},  # not a raw string: refused, not reformatted
    ],
)
def test_a_changed_or_malformed_notification_fails(overrides: dict[str, Any]) -> None:
    assert verify_signature(notification(**overrides), KEY) is False


@pytest.mark.parametrize("missing", ["order_id", "status_code", "gross_amount", "signature_key"])
def test_a_missing_field_fails(missing: str) -> None:
    body = notification()
    del body[missing]
    assert verify_signature(body, KEY) is False


def test_another_key_fails() -> None:
    assert verify_signature(notification(), KEY + "x") is False


def test_an_empty_server_key_is_a_configuration_error() -> None:
    with pytest.raises(ValueError, match="empty"):
        verify_signature(notification(), "")
    with pytest.raises(ValueError, match="empty"):
        compute_signature("o", "200", "1.00", "")
