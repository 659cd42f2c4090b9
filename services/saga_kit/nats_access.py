"""Who may do what on NATS: one user per component, and how every process connects.

Anything on ``transactions.*`` moves stock and anything on the payment-status
stream is applied as a Midtrans status, so NATS must not be an open door. Each
component connects as its own user (``NATS_USER`` / ``NATS_PASSWORD`` or
``NATS_PASSWORD_FILE``) and the server's ``authorization`` block grants it only
the subjects it needs (:func:`permissions`, the one table; the local server and
the Helm chart are both rendered from it). Plain users with permissions in one
account, not NATS accounts: all components share the same streams, and
cross-account exports/imports of JetStream would add configuration without
narrowing anything further.

Three details carry the weight:

* Only the operator and the expiry worker may create streams. A stream's
  configuration can republish, source or mirror other subjects, so the right to
  create one is the right to publish anywhere; the others wait for the streams.
* Each user gets its own reply-inbox prefix (``_INBOX.<user>``) and may subscribe
  only there: JetStream delivers a pull consumer's messages to that inbox, so a
  shared ``_INBOX.>`` would let any user read any stream.
* Nobody may subscribe to the event subjects themselves; reading goes through
  JetStream consumers, granted per stream.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import json
import logging
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from nats.aio.client import Client as NATS
from nats.errors import AuthorizationError

from .events import Topology
from .settings import Secret, env_optional, env_secret

log = logging.getLogger(__name__)


class Role(enum.StrEnum):
    """The NATS users; the name is the component's name and its NATS user name."""

    OPERATOR = "checkout-operator"
    EXPIRY_WORKER = "expiry-worker"
    PRODUCT_SERVICE = "product-service"
    PAYMENT_LISTENER = "payment-listener"


@dataclass(frozen=True)
class NatsCredentials:
    """A user name and password; the password never prints itself."""

    user: str
    password: Secret

    @property
    def inbox_prefix(self) -> str:
        return inbox_prefix(self.user)

    def as_env(self) -> dict[str, str]:
        """The environment :meth:`from_env` reads (for starting a process)."""
        return {"NATS_USER": self.user, "NATS_PASSWORD": self.password.value}

    @classmethod
    def from_env(cls) -> NatsCredentials | None:
        """``NATS_USER`` and ``NATS_PASSWORD`` (or ``NATS_PASSWORD_FILE``); None without a user."""
        user = env_optional("NATS_USER")
        return cls(user, env_secret("NATS_PASSWORD")) if user else None


def inbox_prefix(user: str) -> str:
    return f"_INBOX.{user}"


class NatsRefused(RuntimeError):
    """The server refused this process's credentials (or their absence)."""


async def connect(url: str, credentials: NatsCredentials | None, name: str) -> NATS:
    """Connect the way every process does: as its user, with its own reply inbox.

    An unreachable server is retried for ever (it may start after us); refused
    credentials are not (they will not get better), so they fail the start-up.
    """
    refused: asyncio.Future[Exception] = asyncio.get_running_loop().create_future()

    async def on_error(exc: Exception) -> None:  # also permission violations later on
        refusal = (
            isinstance(exc, AuthorizationError) or "authorization violation" in str(exc).lower()
        )
        if refusal and not refused.done():
            refused.set_result(exc)
        log.warning("NATS (%s): %s", name, exc)

    options: dict[str, Any] = {}
    if credentials is not None:
        options = {
            "user": credentials.user,
            "password": credentials.password.value,
            "inbox_prefix": credentials.inbox_prefix,
        }
    nc = NATS()
    connecting: asyncio.Future[None] = asyncio.ensure_future(
        nc.connect(url, name=name, max_reconnect_attempts=-1, error_cb=on_error, **options)
    )
    waiting: set[asyncio.Future[Any]] = {connecting, refused}
    await asyncio.wait(waiting, return_when=asyncio.FIRST_COMPLETED)
    if connecting.done():
        connecting.result()
        return nc
    connecting.cancel()
    with contextlib.suppress(asyncio.CancelledError, Exception):
        await connecting
    with contextlib.suppress(Exception):
        await nc.close()
    who = f"user {credentials.user!r}" if credentials else "an anonymous client"
    raise NatsRefused(f"NATS at {url} refused {who} (check NATS_USER / NATS_PASSWORD)")


# --- the permission table --------------------------------------------------------------


def any_namespace() -> Topology:
    """Names that cover every :meth:`Topology.namespaced` installation (tests use those).

    Stream names are single tokens, so a prefixed one is matched only by ``*``;
    subjects keep their fixed suffix (``*.transactions.*``).
    """
    return Topology(
        stream="*",
        subject_prefix="*.transactions",
        dlq_stream="*",
        dlq_subject_prefix="*.dlq.transactions",
        payment_stream="*",
        payment_subject="*.midtrans.payment_status",
    )


def _consume(stream: str) -> list[str]:
    """Bind to (or create) a durable pull consumer on ``stream``, fetch and ack."""
    return [
        f"$JS.API.STREAM.INFO.{stream}",
        f"$JS.API.CONSUMER.INFO.{stream}.*",
        f"$JS.API.CONSUMER.CREATE.{stream}.>",
        f"$JS.API.CONSUMER.DURABLE.CREATE.{stream}.*",
        f"$JS.API.CONSUMER.MSG.NEXT.{stream}.*",
        f"$JS.ACK.{stream}.>",
    ]


def _create_streams(t: Topology) -> list[str]:
    return [f"$JS.API.STREAM.{op}.{s}" for s in t.streams for op in ("INFO", "CREATE")]


def _publish(role: Role, t: Topology) -> list[str]:
    if role is Role.OPERATOR:
        return [t.all_subjects, *_create_streams(t), *_consume(t.payment_stream)]
    if role is Role.EXPIRY_WORKER:  # expires, or settles when the payment won the race
        return [t.all_subjects, *_create_streams(t)]
    if role is Role.PRODUCT_SERVICE:  # dead letters are its only writes
        return [
            f"{t.dlq_subject_prefix}.*",
            f"$JS.API.STREAM.INFO.{t.dlq_stream}",
            *_consume(t.stream),
        ]
    return [t.payment_subject]  # the listener: verified notifications, nothing else


def _unique(items: Iterable[str]) -> list[str]:
    return list(dict.fromkeys(items))


def permissions(role: Role, topologies: Sequence[Topology]) -> dict[str, Any]:
    """What ``role`` may publish and subscribe to, for the given stream/subject names."""
    return {
        "publish": {"allow": _unique(p for t in topologies for p in _publish(role, t))},
        "subscribe": {"allow": [f"{inbox_prefix(role.value)}.>"]},
    }


def authorization(
    passwords: Mapping[str, str],
    topologies: Sequence[Topology],
    admin: str | None = None,
) -> dict[str, Any]:
    """The nats-server ``authorization`` block: each role with its password and
    permissions; ``admin`` (local development only) may do everything."""
    users: list[dict[str, Any]] = [
        {
            "user": role.value,
            "password": passwords[role.value],
            "permissions": permissions(role, topologies),
        }
        for role in Role
    ]
    if admin is not None:
        users.append({"user": "admin", "password": admin})
    return {"users": users}


def chart_permissions() -> str:
    """The table the Helm chart renders its NATS users from (default names)."""
    table = {role.value: permissions(role, [Topology()]) for role in Role}
    return json.dumps(table, indent=2) + "\n"


if __name__ == "__main__":  # python -m saga_kit.nats_access > charts/.../nats-permissions.json
    print(chart_permissions(), end="")
