"""The operator's loop timings come from its settings (and the environment)."""

from __future__ import annotations

import pytest

from checkout_operator.settings import OperatorSettings
from saga_kit.settings import ConfigError

DSN = "postgresql://u:p@127.0.0.1:5432/db"


@pytest.fixture(autouse=True)
def _service_token(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SERVICE_TOKENS", "a-token")


def timings(settings: OperatorSettings) -> tuple[float, ...]:
    return (
        settings.poll_tick,
        settings.returns_tick,
        settings.final_event_tick,
        settings.final_event_grace.total_seconds(),
        settings.sweep_every,
        settings.sweep_min_age.total_seconds(),
    )


def test_loop_timings_default_for_production(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CHECKOUT_DATABASE_URL", DSN)
    assert timings(OperatorSettings.from_env()) == (0.2, 1.0, 5.0, 30.0, 60.0, 30.0)


def test_loop_timings_are_read_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in {
        "CHECKOUT_DATABASE_URL": DSN,
        "CHECKOUT_POLL_TICK_SECONDS": "0.5",
        "CHECKOUT_RETURNS_TICK_SECONDS": "2",
        "CHECKOUT_FINAL_EVENT_TICK_SECONDS": "7",
        "CHECKOUT_FINAL_EVENT_GRACE_SECONDS": "45",
        "CHECKOUT_SWEEP_SECONDS": "120",
        "CHECKOUT_SWEEP_MIN_AGE_SECONDS": "10",
    }.items():
        monkeypatch.setenv(name, value)
    assert timings(OperatorSettings.from_env()) == (0.5, 2.0, 7.0, 45.0, 120.0, 10.0)


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("CHECKOUT_POLL_TICK_SECONDS", "0"),
        ("CHECKOUT_RETURNS_TICK_SECONDS", "-1"),
        ("CHECKOUT_FINAL_EVENT_TICK_SECONDS", "0"),
        ("CHECKOUT_SWEEP_SECONDS", "0"),
        ("CHECKOUT_WORKERS", "0"),
        ("CHECKOUT_EVENTS", "some"),
    ],
)
def test_a_loop_that_would_spin_is_refused_at_start(
    monkeypatch: pytest.MonkeyPatch, variable: str, value: str
) -> None:
    monkeypatch.setenv("CHECKOUT_DATABASE_URL", DSN)
    monkeypatch.setenv(variable, value)
    with pytest.raises(ConfigError):
        OperatorSettings.from_env()
