"""The Checkout resources on the apiserver as the operator uses them: read and
compare-and-swap status (``saga_kit.checkout_store``), list, delete, Events."""

from __future__ import annotations

import datetime as dt
import logging
import uuid
from typing import Any

from saga_kit.apiserver import ApiClient, ApiError
from saga_kit.checkout_resource import GROUP, KIND, PLURAL, VERSION
from saga_kit.checkout_store import CheckoutStatusStore, Conflict, checkouts_path, listed_items

__all__ = ["GROUP", "KIND", "PLURAL", "VERSION", "Conflict", "KubeCheckouts"]

log = logging.getLogger(__name__)


LIST_PAGE = 500  # a namespace of 10,000 Checkouts is 20 answers, never one of 40 MB


class KubeCheckouts(CheckoutStatusStore):
    def __init__(self, api: ApiClient, component: str = "checkout-operator") -> None:
        super().__init__(api, component)

    async def list(self, namespace: str) -> list[dict[str, Any]]:
        """Every Checkout in ``namespace`` ("" for all), read from etcd (not a cache)."""
        items: list[dict[str, Any]] = []
        async for page in self._api.pages(checkouts_path(namespace), limit=LIST_PAGE):
            items.extend(listed_items(page))
        return items

    async def delete(self, body: dict[str, Any]) -> bool:
        """Delete this very version of the resource; False if it changed or is gone."""
        meta = body["metadata"]
        options = {
            "apiVersion": "v1",
            "kind": "DeleteOptions",
            "preconditions": {"uid": meta["uid"], "resourceVersion": meta["resourceVersion"]},
        }
        try:
            await self._api.send(
                "DELETE", checkouts_path(meta["namespace"], meta["name"]), body=options
            )
        except ApiError as exc:
            if exc.status in (404, 409):
                return False
            raise
        return True

    async def event(self, body: dict[str, Any], type_: str, reason: str, message: str) -> None:
        """A Kubernetes Event on the checkout, so `kubectl describe` reads as a timeline.

        Best effort: an Event that cannot be posted is logged, never fatal.
        """
        meta = body["metadata"]
        namespace = meta["namespace"]
        now = dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        event = {
            "apiVersion": "v1",
            "kind": "Event",
            "metadata": {"name": f"{meta['name']}.{uuid.uuid4().hex[:12]}", "namespace": namespace},
            "involvedObject": {
                "apiVersion": f"{GROUP}/{VERSION}",
                "kind": KIND,
                "name": meta["name"],
                "namespace": namespace,
                "uid": meta["uid"],
                **(
                    {"resourceVersion": meta["resourceVersion"]}
                    if "resourceVersion" in meta
                    else {}
                ),
            },
            "type": type_,
            "reason": reason,
            "message": message[:1024],
            "source": {"component": self._component},
            "firstTimestamp": now,
            "lastTimestamp": now,
            "count": 1,
            "reportingComponent": self._component,
            "reportingInstance": self._component,
        }
        try:
            await self._api.send("POST", f"/api/v1/namespaces/{namespace}/events", body=event)
        except ApiError as exc:
            log.warning("could not post event %s on %s: %s", reason, meta["name"], exc.reason)
