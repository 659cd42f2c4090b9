"""Every service refuses a bad setting at start, naming the variable."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from checkout_api.config import CheckoutApiConfig
from payment_listener.config import ListenerConfig
from product_service.config import ProductServiceConfig
from saga_kit.settings import ConfigError

BASE = {
    "SERVICE_TOKENS": "a-token",
    "CHECKOUT_DATABASE_URL": "postgresql://u:p@127.0.0.1:5432/db",
    "PRODUCT_DATABASE_URL": "postgresql://u:p@127.0.0.1:5432/db",
    "MIDTRANS_SERVER_KEY": "SB-Mid-server-x",
}
LOADERS: dict[str, Callable[[], object]] = {
    "CHECKOUT_API": CheckoutApiConfig.from_env,
    "PRODUCT": ProductServiceConfig.from_env,
    "LISTENER": ListenerConfig.from_env,
}


@pytest.fixture(autouse=True)
def _required(monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in BASE.items():
        monkeypatch.setenv(name, value)


@pytest.mark.parametrize("loader", LOADERS.values(), ids=list(LOADERS))
def test_the_defaults_load(loader: Callable[[], object]) -> None:
    loader()


@pytest.mark.parametrize(
    ("service", "variable", "value"),
    [
        ("CHECKOUT_API", "CHECKOUT_API_PORT", "0"),
        ("CHECKOUT_API", "CHECKOUT_API_PORT", "65536"),
        ("CHECKOUT_API", "CHECKOUT_USER_SERVICE", "user-service"),
        ("CHECKOUT_API", "CHECKOUT_PRODUCT_SERVICE", "host:port"),
        ("CHECKOUT_API", "CHECKOUT_REDIS_URL", "localhost:6379"),
        ("CHECKOUT_API", "CHECKOUT_API_WAIT_SECONDS", "0"),
        ("CHECKOUT_API", "CHECKOUT_API_WAIT_SECONDS", "nan"),
        ("CHECKOUT_API", "CHECKOUT_API_MAX_IN_FLIGHT", "0"),
        ("CHECKOUT_API", "CHECKOUT_API_MIN_IN_FLIGHT", "0"),
        ("CHECKOUT_API", "CHECKOUT_API_MIN_IN_FLIGHT", "33"),
        ("CHECKOUT_API", "CHECKOUT_API_ADMIT_TARGET_SECONDS", "-1"),
        ("CHECKOUT_API", "CHECKOUT_API_ADMIT_TARGET_SECONDS", "soon"),
        ("PRODUCT", "PRODUCT_HTTP_PORT", "-1"),
        ("PRODUCT", "PRODUCT_GRPC_PORT", "http"),
        ("PRODUCT", "PRODUCT_NATS_URL", "http://127.0.0.1:4222"),
        ("PRODUCT", "PRODUCT_USER_SERVICE", ":18101"),
        ("PRODUCT", "PRODUCT_CONSUMER_BACKOFF_SCALE", "-2"),
        ("LISTENER", "LISTENER_PORT", "99999"),
        ("LISTENER", "LISTENER_NATS_URL", "nats://"),
    ],
)
def test_a_bad_setting_stops_the_start_naming_its_variable(
    monkeypatch: pytest.MonkeyPatch, service: str, variable: str, value: str
) -> None:
    monkeypatch.setenv(variable, value)
    with pytest.raises(ConfigError, match=variable):
        LOADERS[service]()
