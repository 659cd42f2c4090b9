"""The User service's settings: defaults, secrets from files, and nothing secret in repr."""

from __future__ import annotations

from pathlib import Path

import pytest

from saga_kit.access_tokens import load_signing_keys, new_private_key_pem
from saga_kit.settings import ConfigError
from user_service.config import UserServiceConfig

DSN = "postgresql://saga:dsn-password@127.0.0.1:15432/checkout"
SIGNING_KEY = new_private_key_pem()
OLD_KEY = new_private_key_pem()


@pytest.fixture
def env(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    for name in [
        "USER_DB_SCHEMA",
        "USER_TOKEN_TTL_SECONDS",
        "USER_HTTP_HOST",
        "USER_HTTP_PORT",
        "USER_GRPC_HOST",
        "USER_GRPC_PORT",
        "USER_SIGNING_KEYS_FILE",
        "USER_LOG_LEVEL",
    ]:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("USER_DATABASE_URL", DSN)
    monkeypatch.setenv("USER_REDIS_URL", "redis://:redis-password@127.0.0.1:16379/0")
    monkeypatch.setenv("USER_SIGNING_KEYS", SIGNING_KEY)
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
    key_body = SIGNING_KEY.splitlines()[1]
    for secret in ["dsn-password", "redis-password", key_body, "tok-new", "tok-old"]:
        assert secret not in text
    assert "users" in text  # the rest is still there to debug with


def test_signing_keys_from_a_file_the_first_signs(env: pytest.MonkeyPatch, tmp_path: Path) -> None:
    (tmp_path / "keys").write_text(f"{SIGNING_KEY}\n{OLD_KEY}\n")
    env.delenv("USER_SIGNING_KEYS")
    env.setenv("USER_SIGNING_KEYS_FILE", str(tmp_path / "keys"))
    (new,), (old,) = load_signing_keys(SIGNING_KEY), load_signing_keys(OLD_KEY)
    assert [k.kid for k in UserServiceConfig.from_env().load_keys()] == [new.kid, old.kid]


@pytest.mark.parametrize(
    ("name", "value", "message"),
    [
        ("USER_SIGNING_KEYS", "j" * 40, "holds no PEM private key"),
        ("USER_SIGNING_KEYS", SIGNING_KEY.replace("A", "B"), "key 1 is not a readable"),
        ("USER_SIGNING_KEYS", SIGNING_KEY + SIGNING_KEY, "the same key twice"),
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
