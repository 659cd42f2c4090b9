"""Settings of the webhook listener, from the environment."""

from __future__ import annotations

from dataclasses import dataclass

from midtrans.config import SANDBOX_CORE_URL
from saga_kit.events import Topology
from saga_kit.nats_access import NatsCredentials
from saga_kit.settings import (
    NATS_SCHEMES,
    Secret,
    env_bool,
    env_optional,
    env_port,
    env_secret,
    env_str,
    env_url,
)


@dataclass(frozen=True)
class ListenerConfig:
    server_key: Secret
    nats_url: str
    nats_credentials: NatsCredentials | None = None
    events_namespace: str = ""
    host: str = "127.0.0.1"
    port: int = 18081
    # Settle a paid Checkout here once Midtrans' status API confirms it (needs the
    # apiserver: checkouts get/list, checkouts/status patch); false: record only.
    settles: bool = True
    checkout_namespace: str = ""  # where the operator's Checkouts live ("" all)
    midtrans_core_url: str = SANDBOX_CORE_URL

    @property
    def topology(self) -> Topology:
        return Topology.for_namespace(self.events_namespace)

    @classmethod
    def from_env(cls) -> ListenerConfig:
        return cls(
            server_key=env_secret("MIDTRANS_SERVER_KEY"),
            nats_url=env_url("LISTENER_NATS_URL", "nats://127.0.0.1:4222", NATS_SCHEMES),
            nats_credentials=NatsCredentials.from_env(),
            events_namespace=env_optional("EVENTS_NAMESPACE"),
            host=env_str("LISTENER_HOST", "127.0.0.1"),
            port=env_port("LISTENER_PORT", 18081),
            settles=env_bool("LISTENER_SETTLES", True),
            checkout_namespace=env_optional("CHECKOUT_NAMESPACE"),
            midtrans_core_url=env_url("MIDTRANS_CORE_URL", SANDBOX_CORE_URL, ("https", "http")),
        )
