"""Product rules without a database: the checks and the event transition table."""

from __future__ import annotations

import itertools

import pytest

from product_service.domain import (
    ErrorKind,
    Outcome,
    ProductError,
    ProductStock,
    ReservationStatus,
    ReserveItem,
    StockEffect,
    check_items,
    decide,
    request_fingerprint,
    slugify,
    validate_reserve_request,
)
from saga_kit.events import EventType

S = ReservationStatus


def product(pid: str = "p", price: int = 100, stock: int = 5, reserved: int = 0) -> ProductStock:
    return ProductStock(id=pid, name=f"name-{pid}", price=price, stock=stock, reserved=reserved)


@pytest.mark.parametrize(
    ("item", "stock", "reason"),
    [
        (ReserveItem("missing", 100, 1), product(), "PRODUCT_NOT_FOUND"),
        (ReserveItem("p", 100, 1), product(stock=3, reserved=3), "OUT_OF_STOCK"),
        (ReserveItem("p", 100, 3), product(stock=4, reserved=2), "INSUFFICIENT_STOCK"),
        (ReserveItem("p", 99, 1), product(), "PRICE_MISMATCH"),
    ],
)
def test_checks(item: ReserveItem, stock: ProductStock, reason: str) -> None:
    with pytest.raises(ProductError) as err:
        check_items([item], {stock.id: stock})
    assert err.value.reason == reason
    assert err.value.metadata["product_id"] == item.product_id


def test_checks_pass_at_exactly_the_available_quantity() -> None:
    check_items([ReserveItem("p", 100, 2)], {"p": product(stock=4, reserved=2)})


def test_request_validation_names_every_field() -> None:
    with pytest.raises(ProductError) as err:
        validate_reserve_request(
            "x" * 51,
            "",
            [ReserveItem("a", -1, 0), ReserveItem("a", 1, 1), ReserveItem("", 1, 1)],
        )
    fields = dict(err.value.field_violations)
    assert err.value.kind is ErrorKind.INVALID
    assert set(fields) == {
        "transaction_id",
        "user_id",
        "items[0].unit_price",
        "items[0].quantity",
        "items[1].product_id",
        "items[2].product_id",
    }
    assert "items[0]" in fields["items[1].product_id"]


def test_fingerprint_ignores_item_order_but_not_content() -> None:
    a, b = ReserveItem("a", 1, 1), ReserveItem("b", 2, 2)
    assert request_fingerprint("u", [a, b]) == request_fingerprint("u", [b, a])
    assert request_fingerprint("u", [a, b]) != request_fingerprint("u", [a])
    assert request_fingerprint("u", [a]) != request_fingerprint("v", [a])


@pytest.mark.parametrize(
    ("event", "current", "outcome", "target", "effect"),
    [
        (EventType.COMMITTED, S.RESERVED, Outcome.APPLIED, S.COMMITTED, StockEffect.NONE),
        (EventType.COMMITTED, S.COMMITTED, Outcome.DUPLICATE, S.COMMITTED, StockEffect.NONE),
        (EventType.COMMITTED, S.CANCELLED, Outcome.REFUSED, S.CANCELLED, StockEffect.NONE),
        (EventType.SETTLED, S.RESERVED, Outcome.APPLIED, S.SETTLED, StockEffect.FINALIZE),
        (EventType.SETTLED, S.COMMITTED, Outcome.APPLIED, S.SETTLED, StockEffect.FINALIZE),
        (EventType.SETTLED, S.EXPIRED, Outcome.REFUSED, S.EXPIRED, StockEffect.NONE),
        (EventType.CANCELLED, S.COMMITTED, Outcome.APPLIED, S.CANCELLED, StockEffect.RELEASE),
        (EventType.CANCELLED, S.CANCELLED, Outcome.DUPLICATE, S.CANCELLED, StockEffect.NONE),
        (EventType.CANCELLED, S.SETTLED, Outcome.REFUSED, S.SETTLED, StockEffect.NONE),
        (EventType.EXPIRED, S.RESERVED, Outcome.APPLIED, S.EXPIRED, StockEffect.RELEASE),
        (EventType.EXPIRED, S.CANCELLED, Outcome.REFUSED, S.CANCELLED, StockEffect.NONE),
        (EventType.EXPIRED, None, Outcome.UNKNOWN_TRANSACTION, None, StockEffect.NONE),
    ],
)
def test_transition_table(
    event: EventType,
    current: ReservationStatus | None,
    outcome: Outcome,
    target: ReservationStatus | None,
    effect: StockEffect,
) -> None:
    decision = decide(event, current)
    assert (decision.outcome, decision.to_status, decision.effect) == (outcome, target, effect)


def test_stock_is_restored_at_most_once_along_any_event_sequence() -> None:
    """Whatever order events arrive in, at most one releases or finalizes the stock."""
    for sequence in itertools.product(list(EventType), repeat=4):
        status: ReservationStatus = S.RESERVED
        effects = []
        for event in sequence:
            d = decide(event, status)
            if d.outcome is Outcome.APPLIED:
                assert d.to_status is not None
                status = d.to_status
                if d.effect is not StockEffect.NONE:
                    effects.append(d.effect)
        assert len(effects) <= 1, sequence


def test_slugify() -> None:
    assert slugify("  Kopi Susu (Large)! ") == "kopi-susu-large"
    assert slugify("!!!") == "product"
