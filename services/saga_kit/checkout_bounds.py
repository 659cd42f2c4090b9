"""What a Checkout's spec may hold, shared by the CRD, the REST API and the Product service.

The CRD declares the same bounds (``tests/unit/test_checkout_bounds.py`` compares them with
crds/checkout.yaml), so ``kubectl apply`` and the API refuse the same things before a saga
starts: an id no store or payment provider takes (U+0000, spaces, 10,000 characters), a
price of 0 (Midtrans opens no payment page for nothing), or amounts whose total would not
fit Postgres' bigint (50 lines x 10,000 units x 10^12 IDR = 5 x 10^17 < 2^63).
"""

from __future__ import annotations

import re
from typing import TypeGuard

ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._:-]*$"  # product and user ids: uuids, slugs, "p-1"
ID_MAX_LENGTH = 64  # user ids (the CRD's userId); product ids are at most 50
PRODUCT_ID_MAX_LENGTH = 50
MIN_UNIT_PRICE = 1  # IDR; a product priced 0 is refused at creation
MAX_UNIT_PRICE = 10**12  # IDR
MAX_QUANTITY = 10_000
MAX_ITEMS = 50
# A Checkout's metadata.name: a DNS subdomain of at most 47 characters (the order id).
NAME_PATTERN = r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$"
NAME_MAX_LENGTH = 47


def whole_number(value: object) -> TypeGuard[int]:
    """An int as JSON gives it (a bool is not a number here)."""
    return isinstance(value, int) and not isinstance(value, bool)


def possible_id(value: str, max_length: int = PRODUCT_ID_MAX_LENGTH) -> bool:
    """Whether ``value`` could be a product (or user) id at all."""
    return len(value) <= max_length and re.fullmatch(ID_PATTERN, value) is not None


def possible_name(value: str) -> bool:
    """Whether ``value`` could name a Checkout (``.``, ``..`` and 10,000 characters cannot)."""
    return len(value) <= NAME_MAX_LENGTH and re.fullmatch(NAME_PATTERN, value) is not None
