"""Reading a Checkout and writing its status with compare-and-swap, as every writer of
a Checkout's status (the operator, the webhook listener) does.

Every status write carries the resourceVersion the decision was made on, so two
writers racing (a settlement against an expiry or a cancel) cannot both win: the
loser gets :class:`Conflict`, re-reads, and decides again.
"""

from __future__ import annotations

from typing import Any

from .apiserver import MERGE_PATCH, ApiClient, ApiError
from .checkout_resource import GROUP, KIND, PLURAL, VERSION

__all__ = ["CheckoutStatusStore", "Conflict", "checkouts_path", "listed_items"]


def checkouts_path(namespace: str = "", name: str = "", *, status: bool = False) -> str:
    """The URL path of the Checkouts of ``namespace`` ("" for every namespace), of one
    of them, or of its status subresource."""
    path = f"/apis/{GROUP}/{VERSION}"
    if namespace:
        path += f"/namespaces/{namespace}"
    path += f"/{PLURAL}"
    if name:
        path += f"/{name}/status" if status else f"/{name}"
    return path


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
    def __init__(self, api: ApiClient, component: str) -> None:
        self._api = api
        self._component = component  # the field manager: who wrote what, in managedFields

    async def get(self, namespace: str, name: str) -> dict[str, Any] | None:
        try:
            return await self._api.request("GET", checkouts_path(namespace, name))
        except ApiError as exc:
            if exc.status == 404:
                return None
            raise

    async def find(self, name: str) -> list[dict[str, Any]]:
        """The Checkouts named ``name`` in every namespace (one LIST by field selector)."""
        reply = await self._api.request(
            "GET", checkouts_path(), params={"fieldSelector": f"metadata.name={name}"}
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
            return await self._api.request(
                "PATCH",
                checkouts_path(meta["namespace"], meta["name"], status=True),
                params={"fieldManager": self._component},
                body=patch,
                content_type=MERGE_PATCH,
            )
        except ApiError as exc:
            if exc.status in (404, 409):
                raise Conflict(f"{meta['namespace']}/{meta['name']} changed: {exc.reason}") from exc
            raise
