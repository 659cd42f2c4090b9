"""The rule the webhook listener settles by (``saga_kit.payment_rules.why_not_settled_by``):
only a paid status from Midtrans for the checkout's own page, total and currency, and
only while the checkout awaits payment."""

from __future__ import annotations

from typing import Any

import pytest

from midtrans import TransactionStatus
from saga_kit.payment_rules import why_not_settled_by


def resource(**status: Any) -> dict[str, Any]:
    return {
        "metadata": {"name": "order-1"},
        "spec": {"currency": "IDR"},
        "status": {
            "phase": "AwaitingPayment",
            "amounts": {"total": 21_000},
            "payment": {"midtransOrderId": "order-1~2"},
            **status,
        },
    }


def paid(**fields: Any) -> TransactionStatus:
    values: dict[str, Any] = {
        "order_id": "order-1~2",
        "transaction_status": "settlement",
        "status_code": "200",
        "gross_amount": "21000.00",
        "currency": "IDR",
        **fields,
    }
    return TransactionStatus(**values)


def test_a_confirmed_payment_for_the_page_and_total_settles() -> None:
    assert why_not_settled_by(resource(), paid()) is None
    accepted = paid(transaction_status="capture", fraud_status="accept")
    assert why_not_settled_by(resource(), accepted) is None


@pytest.mark.parametrize(
    ("ts", "status", "why"),
    [
        (paid(), {"phase": "Expired"}, "the checkout is Expired"),
        (paid(), {"phase": "Settled"}, "the checkout is Settled"),
        (paid(transaction_status="pending", status_code="201"), {}, "not paid"),
        (paid(transaction_status="capture", fraud_status="challenge"), {}, "not paid"),
        (paid(order_id="order-1"), {}, "the checkout's page is order-1~2"),
        (paid(), {"payment": {}}, "the checkout's page is None"),
        (paid(gross_amount="1000.00"), {}, "differs from the checkout's total 21000"),
        (paid(), {"amounts": {"total": "21000"}}, "differs from the checkout's total None"),
        (paid(currency="USD"), {}, "currency USD"),
        (paid(status_code="201"), {}, "does not go with"),
    ],
)
def test_anything_else_settles_nothing(
    ts: TransactionStatus, status: dict[str, Any], why: str
) -> None:
    problem = why_not_settled_by(resource(**status), ts)
    assert problem is not None and why in problem
