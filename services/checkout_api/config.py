"""Settings of the checkout API, from the environment."""

from __future__ import annotations

from dataclasses import dataclass, field

from saga_kit.payment_ttl import DEFAULT_MAX_PAYMENT_TTL_SECONDS, DEFAULT_PAYMENT_TTL_SECONDS
from saga_kit.settings import (
    REDIS_SCHEMES,
    ConfigError,
    Secret,
    env_float,
    env_int,
    env_port,
    env_positive,
    env_secret,
    env_secret_url,
    env_service_tokens,
    env_str,
    env_target,
)

from .admission import default_floor
from .limits import Limits


@dataclass(frozen=True)
class CheckoutApiConfig:
    namespace: str
    readmodel_url: Secret
    readmodel_schema: str
    user_service: str
    product_service: str
    service_token: Secret
    redis_url: Secret = field(default_factory=lambda: Secret("redis://127.0.0.1:6379/0"))
    wait_seconds: float = 10.0
    max_in_flight: int = 32  # POSTs at once at most; more are refused 503 (admission.py)
    min_in_flight: int = 8  # the adaptive limit's floor
    admit_target_seconds: float = 0.5  # a POST slower than this lowers the limit; 0: fixed
    limits: Limits = field(default_factory=Limits)
    host: str = "127.0.0.1"
    port: int = 18080

    @classmethod
    def from_env(cls) -> CheckoutApiConfig:
        return cls(
            namespace=env_str("CHECKOUT_API_NAMESPACE", "default"),
            readmodel_url=env_secret("CHECKOUT_DATABASE_URL"),
            readmodel_schema=env_str("CHECKOUT_DB_SCHEMA", "checkouts"),
            user_service=env_target("CHECKOUT_USER_SERVICE", "127.0.0.1:18101"),
            product_service=env_target("CHECKOUT_PRODUCT_SERVICE", "127.0.0.1:18201"),
            service_token=env_service_tokens()[0],
            redis_url=env_secret_url(
                "CHECKOUT_REDIS_URL", "redis://127.0.0.1:6379/0", REDIS_SCHEMES
            ),
            wait_seconds=env_positive("CHECKOUT_API_WAIT_SECONDS", 10.0),
            max_in_flight=(ceiling := _at_least_one("CHECKOUT_API_MAX_IN_FLIGHT", 32)),
            min_in_flight=_floor(ceiling),
            admit_target_seconds=_admit_target(),
            limits=_limits(),
            host=env_str("CHECKOUT_API_HOST", "127.0.0.1"),
            port=env_port("CHECKOUT_API_PORT", 18080),
        )


def _at_least_one(name: str, default: int) -> int:
    value = env_int(name, default)
    if value < 1:
        raise ConfigError(f"{name} must be at least 1, got {value}")
    return value


def _floor(ceiling: int) -> int:
    name = "CHECKOUT_API_MIN_IN_FLIGHT"
    value = _at_least_one(name, default_floor(ceiling))
    if value > ceiling:
        raise ConfigError(
            f"{name} must be at most CHECKOUT_API_MAX_IN_FLIGHT ({ceiling}), got {value}"
        )
    return value


def _admit_target() -> float:
    name = "CHECKOUT_API_ADMIT_TARGET_SECONDS"
    value = env_float(name, 0.5)
    if value < 0:
        raise ConfigError(f"{name} must be 0 (a fixed limit) or more, got {value}")
    return value


def _limits() -> Limits:
    try:
        return Limits(
            default_payment_ttl_seconds=env_int(
                "CHECKOUT_API_PAYMENT_TTL_SECONDS", DEFAULT_PAYMENT_TTL_SECONDS
            ),
            # Shared with the operator, which caps Checkouts created with kubectl.
            max_payment_ttl_seconds=env_int(
                "CHECKOUT_MAX_PAYMENT_TTL_SECONDS", DEFAULT_MAX_PAYMENT_TTL_SECONDS
            ),
            max_open_per_user=env_int("CHECKOUT_API_MAX_OPEN_PER_USER", 5),
            posts_per_minute=env_float("CHECKOUT_API_POSTS_PER_MINUTE", 10.0),
            post_burst=env_int("CHECKOUT_API_POST_BURST", 10),
        )
    except ValueError as exc:
        raise ConfigError(str(exc)) from exc
