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
        settings.inbox_look_after,
    )


def test_loop_timings_default_for_production(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CHECKOUT_DATABASE_URL", DSN)
    assert timings(OperatorSettings.from_env()) == (0.2, 1.0, 5.0, 30.0, 60.0, 30.0, 1.0)


def test_loop_timings_are_read_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in {
        "CHECKOUT_DATABASE_URL": DSN,
        "CHECKOUT_POLL_TICK_SECONDS": "0.5",
        "CHECKOUT_RETURNS_TICK_SECONDS": "2",
        "CHECKOUT_FINAL_EVENT_TICK_SECONDS": "7",
        "CHECKOUT_FINAL_EVENT_GRACE_SECONDS": "45",
        "CHECKOUT_SWEEP_SECONDS": "120",
        "CHECKOUT_SWEEP_MIN_AGE_SECONDS": "10",
        "CHECKOUT_INBOX_LOOK_AFTER_SECONDS": "0.25",
    }.items():
        monkeypatch.setenv(name, value)
    assert timings(OperatorSettings.from_env()) == (0.5, 2.0, 7.0, 45.0, 120.0, 10.0, 0.25)


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("CHECKOUT_POLL_TICK_SECONDS", "0"),  # a loop that would spin
        ("CHECKOUT_RETURNS_TICK_SECONDS", "-1"),
        ("CHECKOUT_FINAL_EVENT_TICK_SECONDS", "0"),
        ("CHECKOUT_SWEEP_SECONDS", "0"),
        ("CHECKOUT_WORKERS", "0"),
        ("CHECKOUT_EVENTS", "some"),
        ("CHECKOUT_POLL_RATE", "0"),
        ("CHECKOUT_POLL_RATE", "nan"),
        ("CHECKOUT_POLL_INTERVAL_SECONDS", "inf"),
        ("CHECKOUT_FEE", "-1"),
        ("CHECKOUT_VOUCHERS", '{"MINUS": {"amount": -5000}}'),
        ("CHECKOUT_VOUCHERS", '{"HUGE": {"percent": 150}}'),
        ("CHECKOUT_VOUCHERS", '{"NOTHING": {}}'),
        ("CHECKOUT_NATS_URL", "http://127.0.0.1:4222"),
        ("CHECKOUT_NATS_URL", "nats://127.0.0.1:99999"),
        ("CHECKOUT_REDIS_URL", "127.0.0.1:6379"),
        ("CHECKOUT_METRICS_PORT", "70000"),
        ("CHECKOUT_USER_SERVICE", "user-service"),
        ("CHECKOUT_PRODUCT_SERVICE", "product-service:http"),
        ("CHECKOUT_REFUND_RETRY_SECONDS", "0"),
        ("CHECKOUT_POLL_MIN_AGE_SECONDS", "-1"),
        ("CHECKOUT_INBOX_LOOK_AFTER_SECONDS", "-1"),
        ("CHECKOUT_INBOX_LOOK_AFTER_SECONDS", "31"),  # past the inbox's ack_wait's half
        ("CHECKOUT_INBOX_LOOK_AFTER_SECONDS", "nan"),
    ],
)
def test_a_bad_setting_fails_at_start_naming_its_variable(
    monkeypatch: pytest.MonkeyPatch, variable: str, value: str
) -> None:
    monkeypatch.setenv("CHECKOUT_DATABASE_URL", DSN)
    monkeypatch.setenv(variable, value)
    with pytest.raises(ConfigError, match=variable):
        OperatorSettings.from_env()


def test_a_bad_redis_url_is_named_without_its_password(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CHECKOUT_DATABASE_URL", DSN)
    monkeypatch.setenv("CHECKOUT_REDIS_URL", "http://:hunter2@redis:6379/0")
    with pytest.raises(ConfigError) as refused:
        OperatorSettings.from_env()
    assert "hunter2" not in str(refused.value) and "CHECKOUT_REDIS_URL" in str(refused.value)
