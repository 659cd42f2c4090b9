"""Validation of a Snap ``POST /snap/v1/transactions`` body, the way Midtrans validates it.

All problems are collected, not just the first, and reported as Midtrans does:
``{"error_messages": [...]}`` with HTTP 400. The sandbox is at least as strict as Midtrans
on what the reference notes document (integer IDR amounts, name/id lengths, URL-safe order
ids, exact item sum), so a request it accepts is one Midtrans accepts too.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, TypeGuard

ORDER_ID_PATTERN = re.compile(r"^[A-Za-z0-9\-_~.]+$")
MAX_ORDER_ID = 50
MAX_ITEM_ID = 50
MAX_ITEM_NAME = 50
MAX_CUSTOM_FIELD = 255
EXPIRY_START_FORMAT = "%Y-%m-%d %H:%M:%S %z"  # "yyyy-MM-dd HH:mm:ss Z", e.g. "... +0700"
# Midtrans' docs spell the unit both singular and plural in different places; accept both.
EXPIRY_UNITS = {
    "minute": timedelta(minutes=1),
    "minutes": timedelta(minutes=1),
    "hour": timedelta(hours=1),
    "hours": timedelta(hours=1),
    "day": timedelta(days=1),
    "days": timedelta(days=1),
}
DEFAULT_EXPIRY = timedelta(hours=24)
AMOUNT_MISMATCH = "transaction_details.gross_amount is not equal to the sum of item_details"


@dataclass
class SnapRequest:
    """A valid Snap request: the expiry is the unscaled Midtrans duration from ``start``."""

    order_id: str
    gross_amount: int
    item_details: list[dict[str, Any]]
    customer_details: dict[str, Any] | None
    expiry_start: datetime | None
    expiry_duration: timedelta
    custom_fields: dict[str, str] = field(default_factory=dict)


class SnapValidationError(ValueError):
    def __init__(self, messages: list[str]) -> None:
        self.messages = messages
        super().__init__("; ".join(messages))


def _is_int(value: object) -> TypeGuard[int]:
    return isinstance(value, int) and not isinstance(value, bool)


def _order(details: Any, errors: list[str]) -> tuple[str, int]:
    if not isinstance(details, dict):
        errors.append("transaction_details is required")
        return "", 0
    order_id = details.get("order_id")
    if order_id is None or order_id == "":
        errors.append("transaction_details.order_id is required")
        order_id = ""
    elif not isinstance(order_id, str):
        errors.append("transaction_details.order_id must be a string")
        order_id = ""
    elif len(order_id) > MAX_ORDER_ID:
        errors.append(f"transaction_details.order_id too long (max {MAX_ORDER_ID} characters)")
    elif not ORDER_ID_PATTERN.fullmatch(order_id):
        errors.append("transaction_details.order_id may only contain letters, digits and - _ ~ .")
    amount = details.get("gross_amount")
    if amount is None:
        errors.append("transaction_details.gross_amount is required")
        amount = 0
    elif not _is_int(amount):
        errors.append("transaction_details.gross_amount must be an integer (IDR)")
        amount = 0
    elif amount <= 0:
        errors.append("transaction_details.gross_amount must be greater than 0")
    return order_id, amount


def _items(raw: Any, errors: list[str]) -> tuple[list[dict[str, Any]], bool]:
    """The items, and whether they are all well-formed enough to sum."""
    if raw is None:
        return [], False
    if not isinstance(raw, list):
        errors.append("item_details must be an array")
        return [], False
    summable = True
    for index, item in enumerate(raw):
        where = f"item_details[{index}]"
        if not isinstance(item, dict):
            errors.append(f"{where} must be an object")
            summable = False
            continue
        item_id = item.get("id")
        if item_id is not None and (not isinstance(item_id, str) or len(item_id) > MAX_ITEM_ID):
            errors.append(f"{where}.id must be a string of at most {MAX_ITEM_ID} characters")
        name = item.get("name")
        if not isinstance(name, str) or not name:
            errors.append(f"{where}.name is required")
        elif len(name) > MAX_ITEM_NAME:
            errors.append(f"{where}.name too long (max {MAX_ITEM_NAME} characters)")
        if not _is_int(item.get("price")):
            errors.append(f"{where}.price must be an integer")
            summable = False
        quantity = item.get("quantity")
        if not _is_int(quantity) or quantity < 1:
            errors.append(f"{where}.quantity must be an integer >= 1")
            summable = False
    return list(raw), summable


def _expiry(raw: Any, errors: list[str]) -> tuple[datetime | None, timedelta]:
    if raw is None:
        return None, DEFAULT_EXPIRY
    if not isinstance(raw, dict):
        errors.append("expiry must be an object")
        return None, DEFAULT_EXPIRY
    start = None
    start_text = raw.get("start_time")
    if start_text is not None:
        try:
            start = datetime.strptime(str(start_text), EXPIRY_START_FORMAT)
        except ValueError:
            errors.append("expiry.start_time must look like 'yyyy-MM-dd HH:mm:ss Z'")
    unit = EXPIRY_UNITS.get(str(raw.get("unit", "")).lower())
    if unit is None:
        errors.append("expiry.unit must be one of minute, hour, day")
    duration = raw.get("duration")
    if not _is_int(duration) or duration <= 0:
        errors.append("expiry.duration must be a positive integer")
    if unit is None or not _is_int(duration) or duration <= 0:
        return start, DEFAULT_EXPIRY
    return start, unit * duration


def _custom_fields(body: dict[str, Any], errors: list[str]) -> dict[str, str]:
    fields: dict[str, str] = {}
    for name in ("custom_field1", "custom_field2", "custom_field3"):
        value = body.get(name)
        if value is None:
            continue
        if not isinstance(value, str) or len(value) > MAX_CUSTOM_FIELD:
            errors.append(f"{name} must be a string of at most {MAX_CUSTOM_FIELD} characters")
        else:
            fields[name] = value
    return fields


def validate_snap(body: Any) -> SnapRequest:
    """The parsed request, or :class:`SnapValidationError` listing every problem."""
    if not isinstance(body, dict):
        raise SnapValidationError(["the request body must be a JSON object"])
    errors: list[str] = []
    order_id, gross_amount = _order(body.get("transaction_details"), errors)
    items, summable = _items(body.get("item_details"), errors)
    if summable and items and gross_amount > 0:
        total = sum(item["price"] * item["quantity"] for item in items)
        if total != gross_amount:
            errors.append(AMOUNT_MISMATCH)
    customer = body.get("customer_details")
    if customer is not None and not isinstance(customer, dict):
        errors.append("customer_details must be an object")
        customer = None
    start, duration = _expiry(body.get("expiry"), errors)
    custom_fields = _custom_fields(body, errors)
    if errors:
        raise SnapValidationError(errors)
    return SnapRequest(
        order_id=order_id,
        gross_amount=gross_amount,
        item_details=items,
        customer_details=customer,
        expiry_start=start,
        expiry_duration=duration,
        custom_fields=custom_fields,
    )
