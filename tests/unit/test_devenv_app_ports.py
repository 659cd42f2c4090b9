"""The apps' local ports move with ``CHECKOUT_SAGA_<APP>_PORT``, and so does every address
the apps are given of one another; a value that is not a port is refused by name."""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TypeVar

import pytest

from checkout_api.config import CheckoutApiConfig
from checkout_operator.settings import OperatorSettings
from midtrans.config import MidtransConfig
from midtrans_sandbox.settings import SandboxSettings
from payment_listener.config import ListenerConfig
from product_service.config import ProductServiceConfig
from saga_devenv import apps, cli
from saga_devenv.config import PORTS, DevConfig, port_variable
from saga_kit.settings import ConfigError
from user_service.config import UserServiceConfig

T = TypeVar("T")

APP_PORTS = [
    "sandbox_port",
    "listener_port",
    "user_http_port",
    "user_grpc_port",
    "product_http_port",
    "product_grpc_port",
    "operator_metrics_port",
    "api_port",
]


@pytest.fixture
def moved(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[DevConfig]:
    """Every app port overridden (default + 20000), in a run folder of its own."""
    # The database password is made by Postgres' start; it is not what is tested here.
    monkeypatch.setattr(
        apps, "postgres_dsn", lambda cfg: f"postgresql://saga:pw@127.0.0.1:{cfg.postgres_port}/db"
    )
    for field in APP_PORTS:
        monkeypatch.setenv(port_variable(field), str(PORTS[field][1] + 20000))
    cfg = dataclasses.replace(DevConfig.from_env(), run_dir=tmp_path)
    for field in APP_PORTS:
        assert getattr(cfg, field) == PORTS[field][1] + 20000
    yield cfg


def _env_of(cfg: DevConfig) -> dict[str, dict[str, str]]:
    return {d.name: d.env for d in apps._configured(cfg, "code")}


def _load(monkeypatch: pytest.MonkeyPatch, env: dict[str, str], loader: Callable[[], T]) -> T:
    """What the app reads from ``env`` alone, with its own config loader."""
    with monkeypatch.context() as patch:
        for key in list(os.environ):
            patch.delenv(key)
        for key, value in env.items():
            patch.setenv(key, value)
        return loader()


def test_no_app_is_started_or_reached_on_a_default_port(moved: DevConfig) -> None:
    defaults = {str(PORTS[field][1]) for field in APP_PORTS}
    for name, env in _env_of(moved).items():
        for key, value in env.items():
            assert not any(port in value for port in defaults), (name, key, value)
    assert {d.name: d.port for d in apps.daemons(moved)} == {
        "midtrans-sandbox": moved.sandbox_port,
        "payment-listener": moved.listener_port,
        "user-service": moved.user_http_port,
        "product-service": moved.product_http_port,
        "checkout-operator": moved.operator_metrics_port,
        "checkout-api": moved.api_port,
        "expiry-worker": 0,
    }


def test_each_app_reads_its_own_port_and_the_others_addresses(
    moved: DevConfig, monkeypatch: pytest.MonkeyPatch
) -> None:
    env = _env_of(moved)
    users, products = f"127.0.0.1:{moved.user_grpc_port}", f"127.0.0.1:{moved.product_grpc_port}"
    sandbox_url = apps.url(moved.sandbox_port)

    sandbox = SandboxSettings.from_env(env["midtrans-sandbox"])
    assert sandbox.port == moved.sandbox_port
    assert sandbox.notification_url == apps.url(moved.listener_port, apps.NOTIFICATIONS_PATH)
    # Its orders outlive a restart, in the run directory (`saga-devenv clean` deletes it).
    assert sandbox.state_file == str(moved.run_dir / "midtrans-sandbox.sqlite3")

    listener = _load(monkeypatch, env["payment-listener"], ListenerConfig.from_env)
    assert listener.port == moved.listener_port

    user = _load(monkeypatch, env["user-service"], UserServiceConfig.from_env)
    assert (user.http_port, user.grpc_port) == (moved.user_http_port, moved.user_grpc_port)

    product = _load(monkeypatch, env["product-service"], ProductServiceConfig.from_env)
    assert (product.http_port, product.grpc_port) == (
        moved.product_http_port,
        moved.product_grpc_port,
    )
    assert product.user_service_target == users

    for name in ("checkout-operator", "expiry-worker"):
        operator = _load(monkeypatch, env[name], OperatorSettings.from_env)
        assert (operator.user_service, operator.product_service) == (users, products)
        midtrans = MidtransConfig.from_env(env[name])
        assert (midtrans.snap_base_url, midtrans.core_base_url) == (sandbox_url, sandbox_url)
    operator = _load(monkeypatch, env["checkout-operator"], OperatorSettings.from_env)
    assert operator.metrics_port == moved.operator_metrics_port

    api = _load(monkeypatch, env["checkout-api"], CheckoutApiConfig.from_env)
    assert (api.port, api.user_service, api.product_service) == (moved.api_port, users, products)


def test_scripts_using_the_old_names_follow_the_override(moved: DevConfig) -> None:
    old_names = (apps.CHECKOUT_API, apps.LISTENER, apps.SANDBOX_URL)
    assert old_names == (moved.api_port, moved.listener_port, apps.url(moved.sandbox_port))
    assert [app.port for app in apps.APPS] == [app.port for app in apps.table(moved)]


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("CHECKOUT_SAGA_API_PORT", "http"),
        ("CHECKOUT_SAGA_LISTENER_PORT", "0"),
        ("CHECKOUT_SAGA_SANDBOX_PORT", "65536"),
        ("CHECKOUT_SAGA_USER_GRPC_PORT", "-1"),
        ("CHECKOUT_SAGA_OPERATOR_METRICS_PORT", "18300.5"),
        ("CHECKOUT_SAGA_POSTGRES_PORT", "99999"),
    ],
)
def test_a_value_that_is_not_a_port_is_refused_by_name(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], variable: str, value: str
) -> None:
    monkeypatch.setenv(variable, value)
    with pytest.raises(ConfigError, match=variable):
        DevConfig.from_env()
    # `scripts/up` (and every saga-devenv command) says so in one line, no traceback.
    assert cli.main(["status"]) == 1
    error = capsys.readouterr().err
    assert error.startswith(f"error: {variable} ") and "Traceback" not in error


def test_a_port_given_to_two_things_is_refused_naming_both(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for field in PORTS:  # the defaults, whatever this shell moved
        monkeypatch.delenv(port_variable(field), raising=False)
    monkeypatch.setenv("CHECKOUT_SAGA_API_PORT", "18081")  # the listener's default
    with pytest.raises(ConfigError) as refused:
        DevConfig.from_env()
    assert str(refused.value) == (
        "CHECKOUT_SAGA_LISTENER_PORT and CHECKOUT_SAGA_API_PORT are both 18081"
    )
