"""The rules against stock hoarding, without servers: TTL cap, open-checkout count, refusals."""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import given
from hypothesis import strategies as st

from checkout_api import limits
from checkout_api.config import CheckoutApiConfig
from checkout_api.limits import Limits, Refused
from checkout_operator import settings as operator_settings
from checkout_operator.settings import OperatorSettings
from saga_kit.settings import ConfigError, Secret

ROOT = Path(__file__).resolve().parents[2]
NOW = dt.datetime(2025, 1, 15, 12, 0, 0, tzinfo=dt.UTC)
CAPS = st.integers(1, limits.CRD_MAX_PAYMENT_TTL_SECONDS)
TTLS = st.integers(1, 2**31 - 1)


@given(cap=CAPS, asked=TTLS)
def test_the_api_keeps_a_ttl_within_the_cap_and_refuses_one_above(cap: int, asked: int) -> None:
    rules = Limits(max_payment_ttl_seconds=cap, default_payment_ttl_seconds=1)
    if asked <= cap:
        assert limits.payment_ttl(asked, rules) == asked
    else:
        with pytest.raises(Refused) as refused:
            limits.payment_ttl(asked, rules)
        assert (refused.value.status, refused.value.reason) == (422, "PaymentTTLTooLong")
        assert f"limit of {cap} seconds" in refused.value.message


def test_the_api_default_ttl_is_used_when_none_is_asked() -> None:
    assert limits.payment_ttl(None, Limits()) == 900


@given(cap=CAPS, asked=st.none() | TTLS)
def test_the_operator_never_uses_a_ttl_above_the_cap(cap: int, asked: int | None) -> None:
    rules = OperatorSettings(database_url=Secret(""), max_payment_ttl_seconds=cap)
    spec: dict[str, Any] = {} if asked is None else {"paymentTTLSeconds": asked}
    ttl = rules.payment_ttl(spec)
    wanted = 900 if asked is None else asked
    assert ttl == min(wanted, cap)
    capped = "was capped" in rules.payment_ttl_message(spec)
    assert capped == (wanted > cap)


names = st.text("abcdef", min_size=1, max_size=3)


@given(known=st.dictionaries(names, st.booleans()), pending=st.sets(names))
def test_open_count_counts_each_open_checkout_once(
    known: dict[str, bool], pending: set[str]
) -> None:
    open_ones = {n for n, is_open in known.items() if is_open} | (pending - set(known))
    assert limits.open_count(known, pending) == len(open_ones)


def test_a_pending_checkout_the_read_model_says_finished_is_not_open() -> None:
    assert limits.open_count({"a": False, "b": True}, ["a", "c"]) == 2


def test_too_many_open_waits_for_the_soonest_expiry() -> None:
    rules = Limits(max_open_per_user=2)
    assert limits.too_many_open(1, rules, NOW, []) is None
    expiries = [NOW + dt.timedelta(seconds=300), None, NOW + dt.timedelta(seconds=90.2)]
    refused = limits.too_many_open(2, rules, NOW, expiries)
    assert refused is not None
    assert (refused.status, refused.reason, refused.retry_after) == (
        429,
        "TooManyOpenCheckouts",
        91,
    )
    assert "the limit is 2" in refused.message
    # Only just created, no payment page yet: at most the cap away.
    unknown = limits.too_many_open(3, rules, NOW, [None])
    assert unknown is not None and unknown.retry_after == 3_600
    past = limits.too_many_open(3, rules, NOW, [NOW - dt.timedelta(seconds=5)])
    assert past is not None and past.retry_after == 1


def test_rate_limited_rounds_retry_after_up_to_whole_seconds() -> None:
    refused = limits.rate_limited(1, Limits())
    assert (refused.status, refused.reason, refused.retry_after) == (429, "RateLimited", 1)
    assert limits.rate_limited(5_001, Limits()).retry_after == 6


@pytest.mark.parametrize(
    "env",
    [
        {"CHECKOUT_MAX_PAYMENT_TTL_SECONDS": "604800"},
        {"CHECKOUT_MAX_PAYMENT_TTL_SECONDS": "0"},
        {"CHECKOUT_MAX_PAYMENT_TTL_SECONDS": "600", "CHECKOUT_API_PAYMENT_TTL_SECONDS": "900"},
        {"CHECKOUT_API_MAX_OPEN_PER_USER": "0"},
        {"CHECKOUT_API_POSTS_PER_MINUTE": "0"},
    ],
)
def test_the_api_refuses_limits_that_cannot_hold(
    env: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CHECKOUT_DATABASE_URL", "postgresql://x")
    monkeypatch.setenv("SERVICE_TOKENS", "t")
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    with pytest.raises(ConfigError):
        CheckoutApiConfig.from_env()


def test_the_limits_come_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CHECKOUT_DATABASE_URL", "postgresql://x")
    monkeypatch.setenv("SERVICE_TOKENS", "t")
    monkeypatch.setenv("CHECKOUT_MAX_PAYMENT_TTL_SECONDS", "1800")
    monkeypatch.setenv("CHECKOUT_API_MAX_OPEN_PER_USER", "2")
    monkeypatch.setenv("CHECKOUT_API_POSTS_PER_MINUTE", "4")
    monkeypatch.setenv("CHECKOUT_API_POST_BURST", "3")
    assert CheckoutApiConfig.from_env().limits == Limits(900, 1800, 2, 4.0, 3)
    assert OperatorSettings.from_env().max_payment_ttl_seconds == 1800
    monkeypatch.setenv("CHECKOUT_MAX_PAYMENT_TTL_SECONDS", "86401")
    with pytest.raises(ConfigError):
        OperatorSettings.from_env()


def test_the_ttl_bounds_are_the_crds() -> None:
    for crd in ("crds/checkout.yaml", "charts/checkout-saga/crds/checkout.yaml"):
        doc = yaml.safe_load((ROOT / crd).read_text())
        (version,) = doc["spec"]["versions"]
        spec = version["schema"]["openAPIV3Schema"]["properties"]["spec"]
        ttl = spec["properties"]["paymentTTLSeconds"]
        assert ttl["maximum"] == limits.CRD_MAX_PAYMENT_TTL_SECONDS
        assert ttl["maximum"] == operator_settings.CRD_MAX_PAYMENT_TTL_SECONDS
        assert ttl["default"] == operator_settings.DEFAULT_PAYMENT_TTL_SECONDS
        assert ttl["default"] == Limits().default_payment_ttl_seconds
    # The default cap is Midtrans' usual hour at most.
    assert Limits().max_payment_ttl_seconds == 3_600
    assert OperatorSettings(database_url=Secret("")).max_payment_ttl_seconds == 3_600
