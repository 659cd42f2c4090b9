"""Limits against stock hoarding: the rules, without I/O.

A Checkout holds its stock until it is paid or expires, so whoever may create
many, or long-lived, checkouts can take a product off the shelf for everyone
else. Three limits close that door, each refused with a clear 4xx:

* the payment TTL is capped (Midtrans' usual 15-60 minutes; default 3600 s): a
  request above the cap is refused (422 ``PaymentTTLTooLong``), never shortened
  silently, since the buyer asked for a window we will not give;
* a user may have only so many open (unfinished) checkouts (429
  ``TooManyOpenCheckouts``), with ``Retry-After`` = when the soonest one expires;
* POSTs are rate limited per user by a token bucket (429 ``RateLimited`` with
  ``Retry-After``).

429 rather than 409 for the open-checkout limit: the request is fine and will
succeed later without change, once one of the user's checkouts ends; that is
what 429 + Retry-After tells a client (409 says the request itself conflicts).
"""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from saga_kit.payment_ttl import (
    CRD_MAX_PAYMENT_TTL_SECONDS,
    DEFAULT_MAX_PAYMENT_TTL_SECONDS,
    DEFAULT_PAYMENT_TTL_SECONDS,
    cap_problem,
)

__all__ = ["CRD_MAX_PAYMENT_TTL_SECONDS", "Limits", "Refused"]


@dataclass(frozen=True)
class Limits:
    default_payment_ttl_seconds: int = DEFAULT_PAYMENT_TTL_SECONDS
    max_payment_ttl_seconds: int = DEFAULT_MAX_PAYMENT_TTL_SECONDS
    max_open_per_user: int = 5
    posts_per_minute: float = 10.0  # token-bucket refill
    post_burst: int = 10  # token-bucket size

    def __post_init__(self) -> None:
        if problem := cap_problem(self.max_payment_ttl_seconds):
            raise ValueError(problem)
        if not 1 <= self.default_payment_ttl_seconds <= self.max_payment_ttl_seconds:
            raise ValueError(
                f"the default payment TTL ({self.default_payment_ttl_seconds} s) must be"
                f" 1..{self.max_payment_ttl_seconds} s (the cap)"
            )
        if self.max_open_per_user < 1 or self.post_burst < 1 or self.posts_per_minute <= 0:
            raise ValueError("open-checkout and rate limits must be positive")


class Refused(Exception):
    """A request the limits refuse: HTTP status, reason code, message, Retry-After."""

    def __init__(
        self, status: int, reason: str, message: str, retry_after: int | None = None
    ) -> None:
        super().__init__(message)
        self.status = status
        self.reason = reason
        self.message = message
        self.retry_after = retry_after


def payment_ttl(requested: int | None, limits: Limits) -> int:
    """The TTL to put in the Checkout's spec, or :class:`Refused` (422) above the cap."""
    if requested is None:
        return limits.default_payment_ttl_seconds
    cap = limits.max_payment_ttl_seconds
    if requested > cap:
        raise Refused(
            422,
            "PaymentTTLTooLong",
            f"payment_ttl_seconds {requested} exceeds the limit of {cap} seconds",
        )
    return requested


def open_count(known: Mapping[str, bool], pending: Iterable[str]) -> int:
    """How many of a user's checkouts are open.

    ``known`` is what the read model says (order id -> still open); ``pending``
    are checkouts the API created that the operator may not have registered yet.
    A pending one counts unless the read model already knows it (then its own
    answer counts).
    """
    return sum(known.values()) + len(set(pending) - set(known))


def too_many_open(
    count: int, limits: Limits, now: dt.datetime, expiries: Iterable[dt.datetime | None]
) -> Refused | None:
    """The refusal when ``count`` open checkouts leave no room for one more.

    Retry-After: when the soonest known expiry passes (a cancel or payment may free
    room earlier).
    """
    if count < limits.max_open_per_user:
        return None
    soonest = min((e for e in expiries if e is not None), default=None)
    # None has a payment page yet (all just created): none lasts longer than the cap.
    wait = limits.max_payment_ttl_seconds
    if soonest is not None:
        wait = max(1, math.ceil((soonest - now).total_seconds()))
    return Refused(
        429,
        "TooManyOpenCheckouts",
        f"you have {count} open checkouts (the limit is {limits.max_open_per_user});"
        " pay or cancel one, or wait until one expires",
        wait,
    )


def rate_limited(wait_ms: int, limits: Limits) -> Refused:
    return Refused(
        429,
        "RateLimited",
        f"too many checkouts started: at most {limits.posts_per_minute:g} per minute"
        f" (bursts of {limits.post_burst}); retry later",
        max(1, math.ceil(wait_ms / 1000)),
    )
