"""The User service's settings: defaults, secrets from files, and nothing secret in repr."""

from __future__ import annotations

from pathlib import Path

import pytest

from saga_kit.settings import ConfigError
from user_service.config import UserServiceConfig

DSN = "postgresql://saga:dsn-password@127.0.0.1:15432/checkout"
JWT_KEY = "j" * 40


@pytest.fixture
def env(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    for name in [
        "USER_DB_SCHEMA",
        "USER_TOKEN_TTL_SECONDS",
        "USER_HTTP_HOST",
        "USER_HTTP_PORT",
        "USER_GRPC_HOST",
        "USER_GRPC_PORT",
        "USER_JWT_SECRET_FILE",
        "USER_LOG_LEVEL",
    ]:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("USER_DATABASE_URL", DSN)
    monkeypatch.setenv("USER_REDIS_URL", "redis://:redis-password@127.0.0.1:16379/0")
    monkeypatch.setenv("USER_JWT_SECRET", JWT_KEY)
    monkeypatch.setenv("SERVICE_TOKENS", " tok-new , tok-old,")
    return monkeypatch


def test_defaults_and_token_list(env: pytest.MonkeyPatch) -> None:
    config = UserServiceConfig.from_env()
    assert config.database_url.value == DSN
    assert config.db_schema == "users"
    assert config.token_ttl_seconds == 3600
    assert (config.http_host, config.http_port) == ("127.0.0.1", 18100)
    assert (config.grpc_host, config.grpc_port) == ("127.0.0.1", 18101)
    assert [t.value for t in config.service_tokens] == ["tok-new", "tok-old"]


def test_repr_shows_no_secret(env: pytest.MonkeyPatch) -> None:
    text = repr(UserServiceConfig.from_env())
    for secret in ["dsn-password", "redis-password", JWT_KEY, "tok-new", "tok-old"]:
        assert secret not in text
    assert "users" in text  # the rest is still there to debug with


def test_jwt_secret_from_a_file(env: pytest.MonkeyPatch, tmp_path: Path) -> None:
    (tmp_path / "jwt").write_text("f" * 48 + "\n")
    env.delenv("USER_JWT_SECRET")
    env.setenv("USER_JWT_SECRET_FILE", str(tmp_path / "jwt"))
    assert UserServiceConfig.from_env().jwt_secret.value == "f" * 48


@pytest.mark.parametrize(
    ("name", "value", "message"),
    [
        ("USER_JWT_SECRET", "short", "at least 32"),
        ("USER_TOKEN_TTL_SECONDS", "0", "positive"),
        ("USER_TOKEN_TTL_SECONDS", "soon", "integer"),
        ("USER_HTTP_PORT", "70000", "TCP port"),
        ("USER_DB_SCHEMA", "Users; DROP", "USER_DB_SCHEMA"),
        ("USER_REDIS_URL", "127.0.0.1:6379", "USER_REDIS_URL"),
        ("SERVICE_TOKENS", " , ", "at least one"),
        ("USER_DATABASE_URL", "", "USER_DATABASE_URL is required"),
    ],
)
def test_bad_settings_are_refused_at_start(
    env: pytest.MonkeyPatch, name: str, value: str, message: str
) -> None:
    env.setenv(name, value)
    with pytest.raises(ConfigError, match=message):
        UserServiceConfig.from_env()
