"""Transaction events on NATS JetStream: names, payload, publishing.

The saga publishes ``transactions.<type>`` (committed, cancelled, expired,
settled) with a message id ``<transaction_id>:<type>`` so JetStream drops a
duplicate published by a retried step. Streams are created when absent and never
deleted or recreated at start-up (the original system lost events that way).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import enum
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from nats.js import JetStreamContext
from nats.js.api import RetentionPolicy, StorageType, StreamConfig
from nats.js.errors import NotFoundError
from pydantic import BaseModel, ConfigDict, Field

log = logging.getLogger(__name__)

_DAY = 24 * 3600.0


class EventType(enum.StrEnum):
    COMMITTED = "committed"
    CANCELLED = "cancelled"
    EXPIRED = "expired"
    SETTLED = "settled"


class TransactionEvent(BaseModel):
    """The JSON payload of a transaction event (the seed's shape, extended)."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    transaction_id: str = Field(min_length=1, max_length=50)
    type: EventType
    occurred_at: dt.datetime = Field(default_factory=lambda: dt.datetime.now(dt.UTC))
    reason: str = ""

    @property
    def message_id(self) -> str:
        return f"{self.transaction_id}:{self.type.value}"


@dataclass(frozen=True)
class Topology:
    """Stream and subject names. ``namespaced`` isolates one installation (or test)
    from another on a shared NATS server."""

    stream: str = "TRANSACTIONS"
    subject_prefix: str = "transactions"
    dlq_stream: str = "TRANSACTIONS_DLQ"
    dlq_subject_prefix: str = "dlq.transactions"
    # Midtrans notifications accepted by the webhook listener, for the operator to
    # apply and for audit.
    payment_stream: str = "PAYMENT_STATUS"
    payment_subject: str = "midtrans.payment_status"

    @classmethod
    def namespaced(cls, namespace: str) -> Topology:
        if not namespace.replace("_", "").isalnum():
            raise ValueError(f"namespace must be alphanumeric, got {namespace!r}")
        return cls(
            stream=f"{namespace.upper()}_TRANSACTIONS",
            subject_prefix=f"{namespace}.transactions",
            dlq_stream=f"{namespace.upper()}_TRANSACTIONS_DLQ",
            dlq_subject_prefix=f"{namespace}.dlq.transactions",
            payment_stream=f"{namespace.upper()}_PAYMENT_STATUS",
            payment_subject=f"{namespace}.midtrans.payment_status",
        )

    @property
    def streams(self) -> tuple[str, ...]:
        return (self.stream, self.dlq_stream, self.payment_stream)

    @classmethod
    def for_namespace(cls, namespace: str) -> Topology:
        """The default names when ``namespace`` is empty, else namespaced ones."""
        return cls.namespaced(namespace) if namespace else cls()

    def subject(self, event: EventType) -> str:
        return f"{self.subject_prefix}.{event.value}"

    @property
    def all_subjects(self) -> str:
        return f"{self.subject_prefix}.*"


def stream_configs(topology: Topology) -> list[StreamConfig]:
    return [
        StreamConfig(
            name=topology.stream,
            subjects=[topology.all_subjects],
            retention=RetentionPolicy.LIMITS,
            storage=StorageType.FILE,
            max_age=7 * _DAY,
            duplicate_window=3600.0,
        ),
        StreamConfig(
            name=topology.dlq_stream,
            subjects=[f"{topology.dlq_subject_prefix}.*"],
            retention=RetentionPolicy.LIMITS,
            storage=StorageType.FILE,
            max_age=30 * _DAY,
        ),
        StreamConfig(
            name=topology.payment_stream,
            subjects=[topology.payment_subject],
            retention=RetentionPolicy.LIMITS,
            storage=StorageType.FILE,
            max_age=90 * _DAY,
            duplicate_window=3600.0,
        ),
    ]


async def ensure_streams(js: JetStreamContext, topology: Topology) -> None:
    """Create the streams that are missing; leave existing ones (and their data) alone.

    Only the operator's NATS users may (see :mod:`saga_kit.nats_access`); the
    other components :func:`wait_for_streams`.
    """
    for config in stream_configs(topology):
        assert config.name is not None
        try:
            await js.stream_info(config.name)
        except NotFoundError:
            await js.add_stream(config)


async def wait_for_streams(
    js: JetStreamContext, names: Sequence[str], interval: float = 1.0
) -> None:
    """Return once every stream in ``names`` exists (the operator creates them)."""
    for name in names:
        waited = False
        while True:
            try:
                await js.stream_info(name)
                break
            except NotFoundError:
                if not waited:
                    log.info("waiting for stream %s (the operator creates it)", name)
                    waited = True
                await asyncio.sleep(interval)


async def publish(
    js: JetStreamContext, topology: Topology, event: TransactionEvent, redo: int = 0
) -> Any:
    """Publish with a deduplicating message id; returns JetStream's ack.

    ``redo`` > 0 republishes on purpose (an earlier copy was never applied): its own
    message id, so JetStream's duplicate window does not drop it. Consumers apply each
    event once by transaction and type, whatever the message id.
    """
    message_id = event.message_id if redo <= 0 else f"{event.message_id}:redo-{redo}"
    return await js.publish(
        topology.subject(event.type),
        event.model_dump_json().encode(),
        stream=topology.stream,
        headers={"Nats-Msg-Id": message_id},
    )
