"""The Checkout resources on the apiserver as the operator uses them: read and
compare-and-swap status (``saga_kit.checkout_store``), list, delete, Events."""

from __future__ import annotations

import datetime as dt
import logging
import uuid
from typing import Any

from saga_kit.apiserver import METADATA_LIST, ApiClient, ApiError
from saga_kit.checkout_resource import GROUP, KIND, PLURAL, VERSION
from saga_kit.checkout_store import CheckoutStatusStore, Conflict, checkouts_path

__all__ = ["GROUP", "KIND", "PLURAL", "VERSION", "Conflict", "KubeCheckouts"]

log = logging.getLogger(__name__)


LIST_PAGE = 500  # a namespace of 10,000 Checkouts is 20 answers, never one of 40 MB


class KubeCheckouts(CheckoutStatusStore):
    def __init__(self, api: ApiClient, component: str = "checkout-operator") -> None:
        super().__init__(api, component)

    async def uids(self, namespace: str) -> dict[tuple[str, str], str]:
        """The uid of every Checkout in ``namespace`` ("" for all) by (namespace, name):
        a consistent LIST of their metadata only, in pages."""
        found: dict[tuple[str, str], str] = {}
        path = checkouts_path(namespace)
        async for page in self._api.pages(path, limit=LIST_PAGE, accept=METADATA_LIST):
            for item in page.get("items") or []:
                meta = item.get("metadata") or {}
                found[(meta["namespace"], meta["name"])] = meta["uid"]
        return found

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
