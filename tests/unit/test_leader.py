"""The pure parts of leader election: when a lease is free, time format, settings."""

from __future__ import annotations

import datetime as dt

import pytest
from hypothesis import given
from hypothesis import strategies as st

from checkout_operator.leader import LeaderElector, lease_is_free, micro_time, new_identity
from checkout_operator.settings import OperatorSettings
from saga_kit.apiserver import ApiClient, Connection


@given(
    unchanged=st.floats(min_value=0, max_value=1e6),
    duration=st.floats(min_value=0.1, max_value=1e5),
)
def test_a_held_lease_is_free_exactly_when_unchanged_for_its_duration(
    unchanged: float, duration: float
) -> None:
    assert lease_is_free("someone", unchanged, duration) == (unchanged >= duration)


@given(unchanged=st.floats(min_value=0, max_value=1e6))
def test_a_lease_without_holder_is_free_at_once(unchanged: float) -> None:
    assert lease_is_free(None, unchanged, 15.0)
    assert lease_is_free("", unchanged, 15.0)


def test_micro_time_always_has_six_fractional_digits_in_utc() -> None:
    whole = dt.datetime(2030, 1, 2, 3, 4, 5, tzinfo=dt.timezone(dt.timedelta(hours=7)))
    assert micro_time(whole) == "2030-01-01T20:04:05.000000Z"
    assert micro_time(whole.replace(microsecond=42)) == "2030-01-01T20:04:05.000042Z"


def test_identities_are_unique_per_process_and_name_the_host(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("POD_NAME", "checkout-operator-7d9f")
    a, b = new_identity(), new_identity()
    assert a != b
    assert a.startswith("checkout-operator-7d9f-") and b.startswith("checkout-operator-7d9f-")


async def test_the_lease_must_be_renewed_at_least_twice_per_duration() -> None:
    api = ApiClient(Connection("http://127.0.0.1:9", None))
    try:
        with pytest.raises(ValueError, match="renewed at least twice"):
            LeaderElector(api, "default", "x", duration=2.0, renew_every=1.5)
        elector = LeaderElector(api, "default", "x", duration=15.0, renew_every=5.0)
        assert elector.renew_deadline == 10.0  # gives up 5 s before others may take over
    finally:
        await api.close()


def test_lease_settings_default_to_the_watched_namespace(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CHECKOUT_DATABASE_URL", "postgresql://x")
    monkeypatch.setenv("SERVICE_TOKENS", "token")
    monkeypatch.setenv("CHECKOUT_NAMESPACE", "shop-a")
    settings = OperatorSettings.from_env()
    assert (settings.lease_namespace, settings.lease_name) == ("shop-a", "checkout-operator")
    assert (settings.lease_duration, settings.lease_renew_every) == (15.0, 5.0)
    monkeypatch.setenv("CHECKOUT_LEASE_NAMESPACE", "ops")
    monkeypatch.setenv("CHECKOUT_LEASE_NAME", "checkout-operator-shop-a")
    settings = OperatorSettings.from_env()
    assert (settings.lease_namespace, settings.lease_name) == ("ops", "checkout-operator-shop-a")
    monkeypatch.delenv("CHECKOUT_NAMESPACE")
    monkeypatch.delenv("CHECKOUT_LEASE_NAMESPACE")
    assert OperatorSettings.from_env().lease_namespace == "default"
