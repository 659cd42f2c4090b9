"""Creating, reading and cancelling Checkout resources on the apiserver."""

from __future__ import annotations

from typing import Any

from saga_kit.apiserver import MERGE_PATCH, ApiClient, ApiError
from saga_kit.checkout_resource import GROUP, PLURAL, VERSION
from saga_kit.checkout_store import checkouts_path

__all__ = ["GROUP", "PLURAL", "VERSION", "AlreadyExists", "Checkouts", "Invalid"]


class AlreadyExists(Exception):
    pass


class Invalid(Exception):
    """The apiserver refused the object (CRD schema or CEL validation)."""


class Checkouts:
    def __init__(self, api: ApiClient, namespace: str) -> None:
        self._api = api
        self.namespace = namespace

    async def create(self, body: dict[str, Any]) -> dict[str, Any]:
        try:
            return await self._api.request("POST", checkouts_path(self.namespace), body=body)
        except ApiError as exc:
            if exc.status == 409:
                raise AlreadyExists(body["metadata"]["name"]) from exc
            if exc.status == 422:
                raise Invalid(exc.message or exc.reason) from exc
            raise

    async def get(self, name: str) -> dict[str, Any] | None:
        try:
            return await self._api.request("GET", checkouts_path(self.namespace, name))
        except ApiError as exc:
            if exc.status == 404:
                return None
            raise

    async def request_cancel(self, body: dict[str, Any]) -> dict[str, Any]:
        """Set spec.cancelRequested, only on the version we looked at."""
        meta = body["metadata"]
        patch = {
            "metadata": {"resourceVersion": meta["resourceVersion"]},
            "spec": {"cancelRequested": True},
        }
        return await self._api.request(
            "PATCH",
            checkouts_path(self.namespace, meta["name"]),
            body=patch,
            content_type=MERGE_PATCH,
        )
