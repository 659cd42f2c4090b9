"""Settings of the Product service, from the environment."""

from __future__ import annotations

from dataclasses import dataclass

from saga_kit.events import Topology
from saga_kit.nats_access import NatsCredentials
from saga_kit.settings import (
    NATS_SCHEMES,
    Secret,
    env_optional,
    env_port,
    env_positive,
    env_secret,
    env_service_tokens,
    env_str,
    env_target,
    env_url,
)


@dataclass(frozen=True)
class ProductServiceConfig:
    database_url: Secret
    db_schema: str
    nats_url: str
    user_service_target: str
    service_token: Secret  # presented to the User service
    accepted_service_tokens: tuple[Secret, ...]  # accepted from our own callers
    http_host: str
    http_port: int
    grpc_host: str
    grpc_port: int
    consumer_name: str
    consumer_backoff_scale: float
    events_namespace: str  # "" for the default stream names
    nats_credentials: NatsCredentials | None = None

    @property
    def topology(self) -> Topology:
        return Topology.for_namespace(self.events_namespace)

    @classmethod
    def from_env(cls) -> ProductServiceConfig:
        accepted = env_service_tokens()
        return cls(
            database_url=env_secret("PRODUCT_DATABASE_URL"),
            db_schema=env_str("PRODUCT_DB_SCHEMA", "products"),
            nats_url=env_url("PRODUCT_NATS_URL", "nats://127.0.0.1:4222", NATS_SCHEMES),
            user_service_target=env_target("PRODUCT_USER_SERVICE", "127.0.0.1:18101"),
            service_token=accepted[0],
            accepted_service_tokens=accepted,
            http_host=env_str("PRODUCT_HTTP_HOST", "127.0.0.1"),
            http_port=env_port("PRODUCT_HTTP_PORT", 18200),
            grpc_host=env_str("PRODUCT_GRPC_HOST", "127.0.0.1"),
            grpc_port=env_port("PRODUCT_GRPC_PORT", 18201),
            consumer_name=env_str("PRODUCT_CONSUMER_NAME", "product-service"),
            consumer_backoff_scale=env_positive("PRODUCT_CONSUMER_BACKOFF_SCALE", 1.0),
            events_namespace=env_optional("EVENTS_NAMESPACE"),
            nats_credentials=NatsCredentials.from_env(),
        )
