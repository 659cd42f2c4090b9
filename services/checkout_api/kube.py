"""Creating, reading and cancelling Checkout resources on the apiserver."""

from __future__ import annotations

import json
from typing import Any

from kubernetes_asyncio import client
from kubernetes_asyncio.client.exceptions import ApiException

from saga_kit.checkout_resource import GROUP, PLURAL, VERSION

__all__ = ["GROUP", "PLURAL", "VERSION", "AlreadyExists", "Checkouts", "Invalid"]


class AlreadyExists(Exception):
    pass


class Invalid(Exception):
    """The apiserver refused the object (CRD schema or CEL validation)."""


class Checkouts:
    def __init__(self, api: client.ApiClient, namespace: str) -> None:
        self._custom = client.CustomObjectsApi(api)
        self.namespace = namespace

    async def create(self, body: dict[str, Any]) -> dict[str, Any]:
        try:
            created: dict[str, Any] = await self._custom.create_namespaced_custom_object(
                GROUP, VERSION, self.namespace, PLURAL, body
            )
        except ApiException as exc:
            if exc.status == 409:
                raise AlreadyExists(body["metadata"]["name"]) from exc
            if exc.status == 422:
                raise Invalid(_message(exc)) from exc
            raise
        return created

    async def get(self, name: str) -> dict[str, Any] | None:
        try:
            body: dict[str, Any] = await self._custom.get_namespaced_custom_object(
                GROUP, VERSION, self.namespace, PLURAL, name
            )
        except ApiException as exc:
            if exc.status == 404:
                return None
            raise
        return body

    async def request_cancel(self, body: dict[str, Any]) -> dict[str, Any]:
        """Set spec.cancelRequested, only on the version we looked at."""
        meta = body["metadata"]
        patch = {
            "metadata": {"resourceVersion": meta["resourceVersion"]},
            "spec": {"cancelRequested": True},
        }
        updated: dict[str, Any] = await self._custom.patch_namespaced_custom_object(
            GROUP,
            VERSION,
            self.namespace,
            PLURAL,
            meta["name"],
            patch,
            _content_type="application/merge-patch+json",  # type: ignore[call-arg]
        )
        return updated


def _message(exc: ApiException) -> str:
    try:
        return str(json.loads(exc.body or b"{}").get("message", exc.reason))
    except (ValueError, TypeError, AttributeError):
        return str(exc.reason)
