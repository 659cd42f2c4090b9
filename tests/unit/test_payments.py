"""The operator's payment rules: what may settle a checkout, and what money goes back."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from checkout_operator.payments import (
    ReturnStep,
    payment_problem,
    refundable_amount,
    return_step,
)
from midtrans import TransactionStatus


def status(
    status: str = "settlement",
    code: str = "200",
    gross: str = "25000.00",
    order: str = "order-1",
    fraud: str = "accept",
    currency: str = "IDR",
    **extra: str,
) -> TransactionStatus:
    return TransactionStatus.from_json(
        {
            "order_id": order,
            "transaction_status": status,
            "status_code": code,
            "gross_amount": gross,
            "fraud_status": fraud,
            "currency": currency,
            **extra,
        }
    )


def test_a_matching_settlement_may_settle() -> None:
    assert payment_problem(status(), "order-1", 25_000, "IDR") is None


@pytest.mark.parametrize(
    ("ts", "why"),
    [
        (status(gross="1.00"), "amount"),  # a smaller, validly signed amount
        (status(gross="25000.50"), "amount"),
        (status(order="order-1~2"), "order"),  # another page of the checkout
        (status(code="201"), "status_code"),  # a relabelled pending
        (status("capture", code="201", fraud="accept"), "status_code"),  # relabelled challenge
        (status(currency="USD"), "currency"),
    ],
)
def test_anything_else_may_not(ts: TransactionStatus, why: str) -> None:
    problem = payment_problem(ts, "order-1", 25_000, "IDR")
    assert problem is not None and why in problem


@given(st.integers(min_value=1, max_value=10**12), st.integers(min_value=1, max_value=10**12))
def test_only_the_exact_total_settles(paid: int, total: int) -> None:
    problem = payment_problem(status(gross=f"{paid}.00"), "order-1", total, "IDR")
    assert (problem is None) == (paid == total)


@pytest.mark.parametrize(
    ("ts", "over", "step"),
    [
        (None, False, ReturnStep.WAIT),  # no method chosen: the page is still payable
        (None, True, ReturnStep.CLOSED),
        (status("pending", "201"), False, ReturnStep.VOID),
        (status("capture"), False, ReturnStep.VOID),  # Midtrans refuses to refund a capture
        (status("capture", "201", fraud="challenge"), True, ReturnStep.VOID),
        (status("settlement"), True, ReturnStep.REFUND),  # late money is refunded, always
        (status("partial_refund"), False, ReturnStep.REFUND),
        (status("refund"), False, ReturnStep.RETURNED),
        (status("chargeback"), False, ReturnStep.RETURNED),
        (status("cancel"), False, ReturnStep.CLOSED),
        (status("expire", "407"), False, ReturnStep.CLOSED),
        (status("deny", "202"), False, ReturnStep.WAIT),  # the buyer may pay again
        (status("deny", "202"), True, ReturnStep.CLOSED),
    ],
)
def test_what_goes_back_and_how(ts: TransactionStatus | None, over: bool, step: ReturnStep) -> None:
    assert return_step(ts, over) is step


def test_only_what_is_left_is_refunded() -> None:
    assert refundable_amount(status()) == 25_000
    assert refundable_amount(status("partial_refund", refund_amount="10000.00")) == 15_000
