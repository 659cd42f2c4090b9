"""What tests make on the shared servers, checked at the end of the run to be gone.

Fixtures that create a namespace or JetStream streams note them here
(:func:`made_namespace`, :func:`made_streams`, :func:`own_topology`) and remove them
when their test ends. As the session ends the platform fixture asks what is still
there (:func:`namespaces`, :func:`leftover_streams`): that is a leak (a fixture
that forgot, or a test that failed half-way), named in the failure, and removed so
the next run starts clean. Only what this run made is
looked at: other runs may share the servers at the same time.
"""

from __future__ import annotations

import uuid

from nats.aio.client import Client as NATS
from nats.js.errors import NotFoundError

from saga_kit.events import Topology

_namespaces: set[str] = set()
_streams: set[str] = set()


def made_namespace(name: str) -> None:
    _namespaces.add(name)


def made_streams(*names: str) -> None:
    _streams.update(names)


def own_events_namespace(prefix: str) -> str:
    """An events namespace for one test (``<prefix><random>``), its streams noted as made."""
    namespace = f"{prefix}{uuid.uuid4().hex[:8]}"
    made_streams(*Topology.namespaced(namespace).streams)
    return namespace


def own_topology(prefix: str) -> Topology:
    """The topology of a test's own streams (see :func:`own_events_namespace`)."""
    return Topology.namespaced(own_events_namespace(prefix))


def namespaces() -> set[str]:
    return set(_namespaces)


async def leftover_streams(nc: NATS, *, remove: bool = True) -> list[str]:
    """The streams this run made that still exist (removed after being named)."""
    js = nc.jetstream()
    left = []
    for name in sorted(_streams):
        try:
            await js.stream_info(name)
            left.append(name)
            if remove:
                await js.delete_stream(name)
        except NotFoundError:
            continue
    return left
