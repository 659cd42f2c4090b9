"""The kopf side: watch Checkouts and hand every event to the reconciler.

Only ``@kopf.on.event`` is used. It keeps no progress on the resource (no
annotations, no status.kopf) and needs no finalizer, so kopf itself never
writes to a Checkout: the saga's own status writes are the only ones.
"""

from __future__ import annotations

from typing import Any

import kopf

from .clients.kube import GROUP, PLURAL, VERSION
from .reconciler import Reconciler


def register(registry: kopf.OperatorRegistry, reconciler: Reconciler) -> None:
    @kopf.on.login(registry=registry)
    def login(**kwargs: Any) -> kopf.ConnectionInfo | None:
        return kopf.login_with_service_account(**kwargs) or kopf.login_with_kubeconfig(**kwargs)

    @kopf.on.event(GROUP, VERSION, PLURAL, registry=registry)
    async def checkout_event(event: kopf.RawEvent, **_: Any) -> None:
        body: Any = event.get("object")
        if isinstance(body, dict) and body.get("metadata", {}).get("uid"):
            reconciler.observe(event.get("type"), body)
