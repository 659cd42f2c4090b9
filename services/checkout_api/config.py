"""Settings of the checkout API, from the environment."""

from __future__ import annotations

from dataclasses import dataclass

from saga_kit.settings import (
    Secret,
    env_float,
    env_int,
    env_secret,
    env_service_tokens,
    env_str,
)


@dataclass(frozen=True)
class CheckoutApiConfig:
    namespace: str
    readmodel_url: Secret
    readmodel_schema: str
    user_service: str
    product_service: str
    service_token: Secret
    wait_seconds: float = 10.0
    default_ttl_seconds: int = 900
    host: str = "127.0.0.1"
    port: int = 18080

    @classmethod
    def from_env(cls) -> CheckoutApiConfig:
        return cls(
            namespace=env_str("CHECKOUT_API_NAMESPACE", "default"),
            readmodel_url=env_secret("CHECKOUT_DATABASE_URL"),
            readmodel_schema=env_str("CHECKOUT_DB_SCHEMA", "checkouts"),
            user_service=env_str("CHECKOUT_USER_SERVICE", "127.0.0.1:18101"),
            product_service=env_str("CHECKOUT_PRODUCT_SERVICE", "127.0.0.1:18201"),
            service_token=env_service_tokens()[0],
            wait_seconds=env_float("CHECKOUT_API_WAIT_SECONDS", 10.0),
            default_ttl_seconds=env_int("CHECKOUT_API_PAYMENT_TTL_SECONDS", 900),
            host=env_str("CHECKOUT_API_HOST", "127.0.0.1"),
            port=env_int("CHECKOUT_API_PORT", 18080),
        )
