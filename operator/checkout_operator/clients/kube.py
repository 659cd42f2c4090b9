"""The Checkout resources on the apiserver as the operator uses them: read and
compare-and-swap status (``saga_kit.checkout_store``), list, delete, Events."""

from __future__ import annotations

import datetime as dt
import logging
import uuid
from typing import Any

from kubernetes_asyncio import client
from kubernetes_asyncio.client.exceptions import ApiException

from saga_kit.checkout_resource import GROUP, KIND, PLURAL, VERSION
from saga_kit.checkout_store import CheckoutStatusStore, Conflict, listed_items

__all__ = ["GROUP", "KIND", "PLURAL", "VERSION", "Conflict", "KubeCheckouts"]

log = logging.getLogger(__name__)


class KubeCheckouts(CheckoutStatusStore):
    def __init__(self, api: client.ApiClient, component: str = "checkout-operator") -> None:
        super().__init__(api, component)
        self._core = client.CoreV1Api(api)

    async def list(self, namespace: str) -> list[dict[str, Any]]:
        """Every Checkout in ``namespace`` ("" for all), read from etcd (not a cache)."""
        if namespace:
            reply = await self._custom.list_namespaced_custom_object(
                GROUP, VERSION, namespace, PLURAL
            )
        else:
            reply = await self._custom.list_cluster_custom_object(GROUP, VERSION, PLURAL)
        return listed_items(reply)

    async def delete(self, body: dict[str, Any]) -> bool:
        """Delete this very version of the resource; False if it changed or is gone."""
        meta = body["metadata"]
        try:
            await self._custom.delete_namespaced_custom_object(
                GROUP,
                VERSION,
                meta["namespace"],
                PLURAL,
                meta["name"],
                body=client.V1DeleteOptions(
                    preconditions=client.V1Preconditions(
                        uid=meta["uid"], resource_version=meta["resourceVersion"]
                    )
                ),
            )
        except ApiException as exc:
            if exc.status in (404, 409):
                return False
            raise
        return True

    async def event(self, body: dict[str, Any], type_: str, reason: str, message: str) -> None:
        """A Kubernetes Event on the checkout, so `kubectl describe` reads as a timeline.

        Best effort: an Event that cannot be posted is logged, never fatal.
        """
        meta = body["metadata"]
        now = dt.datetime.now(dt.UTC)
        event = client.CoreV1Event(
            metadata=client.V1ObjectMeta(
                name=f"{meta['name']}.{uuid.uuid4().hex[:12]}", namespace=meta["namespace"]
            ),
            involved_object=client.V1ObjectReference(
                api_version=f"{GROUP}/{VERSION}",
                kind=KIND,
                name=meta["name"],
                namespace=meta["namespace"],
                uid=meta["uid"],
                resource_version=meta.get("resourceVersion"),
            ),
            type=type_,
            reason=reason,
            message=message[:1024],
            source=client.V1EventSource(component=self._component),
            first_timestamp=now,
            last_timestamp=now,
            count=1,
            reporting_component=self._component,
            reporting_instance=self._component,
        )
        try:
            await self._core.create_namespaced_event(meta["namespace"], event)
        except ApiException as exc:
            log.warning("could not post event %s on %s: %s", reason, meta["name"], exc.reason)
