"""Settings of the User service, read once from the environment.

Secrets (the database DSN, which carries a password, the Redis URL, which may,
the token signing keys and the accepted service tokens) are held as
:class:`saga_kit.settings.Secret` so that printing or logging the config cannot
leak them, and each of them may be mounted as a file (``NAME_FILE``).
"""

from __future__ import annotations

from dataclasses import dataclass

from saga_kit.access_tokens import SigningKey, load_signing_keys
from saga_kit.db import check_schema_name
from saga_kit.settings import (
    REDIS_SCHEMES,
    ConfigError,
    Secret,
    env_int,
    env_secret,
    env_secret_url,
    env_service_tokens,
    env_str,
)


def _port(name: str, default: int) -> int:
    port = env_int(name, default)
    if not 0 <= port <= 65535:
        raise ConfigError(f"{name} must be a TCP port (0-65535), got {port}")
    return port


@dataclass(frozen=True)
class UserServiceConfig:
    database_url: Secret
    db_schema: str
    redis_url: Secret
    # PEM Ed25519 private keys: the first signs, the others still verify (rotation).
    signing_keys: Secret
    token_ttl_seconds: int
    http_host: str
    http_port: int
    grpc_host: str
    grpc_port: int
    service_tokens: tuple[Secret, ...]
    log_level: str = "INFO"

    def __post_init__(self) -> None:
        try:
            check_schema_name(self.db_schema)
        except ValueError as exc:
            raise ConfigError(f"USER_DB_SCHEMA: {exc}") from exc
        try:
            load_signing_keys(self.signing_keys.value)
        except ValueError as exc:  # the message never quotes the key
            raise ConfigError(f"USER_SIGNING_KEYS {exc}") from exc
        if self.token_ttl_seconds <= 0:
            raise ConfigError("USER_TOKEN_TTL_SECONDS must be positive")
        if not self.service_tokens:
            raise ConfigError("SERVICE_TOKENS must list at least one non-empty token")

    def load_keys(self) -> tuple[SigningKey, ...]:
        return load_signing_keys(self.signing_keys.value)

    @classmethod
    def from_env(cls) -> UserServiceConfig:
        return cls(
            database_url=env_secret("USER_DATABASE_URL"),
            db_schema=env_str("USER_DB_SCHEMA", "users"),
            redis_url=env_secret_url("USER_REDIS_URL", None, REDIS_SCHEMES),
            signing_keys=env_secret("USER_SIGNING_KEYS"),
            token_ttl_seconds=env_int("USER_TOKEN_TTL_SECONDS", 3600),
            http_host=env_str("USER_HTTP_HOST", "127.0.0.1"),
            http_port=_port("USER_HTTP_PORT", 18100),
            grpc_host=env_str("USER_GRPC_HOST", "127.0.0.1"),
            grpc_port=_port("USER_GRPC_PORT", 18101),
            service_tokens=env_service_tokens(),
            log_level=env_str("USER_LOG_LEVEL", "INFO"),
        )
