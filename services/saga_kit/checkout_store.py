"""Reading a Checkout and writing its status with compare-and-swap, as every writer of
a Checkout's status (the operator, the webhook listener) does.

Every status write carries the resourceVersion the decision was made on, so two
writers racing (a settlement against an expiry or a cancel) cannot both win: the
loser gets :class:`Conflict`, re-reads, and decides again.
"""

from __future__ import annotations

from typing import Any

from kubernetes_asyncio import client
from kubernetes_asyncio.client.exceptions import ApiException

from .checkout_resource import GROUP, KIND, PLURAL, VERSION

MERGE_PATCH = "application/merge-patch+json"


def listed_items(reply: dict[str, Any]) -> list[dict[str, Any]]:
    """The Checkouts of a LIST answer, each with its kind and apiVersion (list items
    carry none of their own)."""
    items: list[dict[str, Any]] = reply.get("items") or []
    for item in items:
        item.setdefault("apiVersion", f"{GROUP}/{VERSION}")
        item.setdefault("kind", KIND)
    return items


class Conflict(Exception):
    """The resource changed (or vanished) since it was read."""


class CheckoutStatusStore:
    def __init__(self, api: client.ApiClient, component: str) -> None:
        self._custom = client.CustomObjectsApi(api)
        self._component = component  # the field manager: who wrote what, in managedFields

    async def get(self, namespace: str, name: str) -> dict[str, Any] | None:
        try:
            body: dict[str, Any] = await self._custom.get_namespaced_custom_object(
                GROUP, VERSION, namespace, PLURAL, name
            )
        except ApiException as exc:
            if exc.status == 404:
                return None
            raise
        return body

    async def find(self, name: str) -> list[dict[str, Any]]:
        """The Checkouts named ``name`` in every namespace (one LIST by field selector)."""
        reply = await self._custom.list_cluster_custom_object(
            GROUP, VERSION, PLURAL, field_selector=f"metadata.name={name}"
        )
        return listed_items(reply)

    async def patch_status(self, body: dict[str, Any], status: dict[str, Any]) -> dict[str, Any]:
        """Merge ``status`` into the resource if it is still at the version we read."""
        meta = body["metadata"]
        patch = {
            "metadata": {"resourceVersion": meta["resourceVersion"], "uid": meta["uid"]},
            "status": status,
        }
        try:
            updated: dict[str, Any] = await self._custom.patch_namespaced_custom_object_status(
                GROUP,
                VERSION,
                meta["namespace"],
                PLURAL,
                meta["name"],
                patch,
                field_manager=self._component,
                _content_type=MERGE_PATCH,  # type: ignore[call-arg]
            )
        except ApiException as exc:
            if exc.status in (404, 409):
                raise Conflict(f"{meta['namespace']}/{meta['name']} changed: {exc.reason}") from exc
            raise
        return updated
