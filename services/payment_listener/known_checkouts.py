"""What the listener knows of the Checkouts from its watch, so that a paid notification
costs no apiserver read.

Only a hint: the settlement is a compare-and-swap on the resourceVersion the listener
decided on, so a body older than the apiserver's makes the write fail with a
conflict, never a wrong write. On a conflict the entry is forgotten and the checkout
read again from the apiserver; a checkout the watch has not shown yet is read too.

Kept per checkout: what the settlement rule and the status patch read (metadata's
identity and generation, ``spec.currency``, the whole ``status``), not the items or managedFields.
An ended checkout keeps only its phase until it is deleted: its phase never changes
again (the CRD's rules), so a repeated notification for it needs no read either.
"""

from __future__ import annotations

import sys
from collections.abc import Iterable, Mapping
from typing import Any, Protocol

from saga_kit.checkout_resource import Phase
from saga_kit.checkout_store import Conflict

Body = dict[str, Any]

_IDENTITY = ("name", "namespace", "uid", "resourceVersion")


def slim(body: Mapping[str, Any]) -> Body:
    """What is kept of ``body`` (kept again, it stays the same)."""
    meta = body.get("metadata") or {}
    status = body.get("status") or {}
    kept: Body = {k: sys.intern(str(meta[k])) for k in _IDENTITY if k in meta}
    if "generation" in meta:
        kept["generation"] = meta["generation"]
    kept_body: Body = {"metadata": kept}
    if status.get("phase") == Phase.AWAITING_PAYMENT.value:
        currency = (body.get("spec") or {}).get("currency")
        kept_body["spec"] = {"currency": currency} if currency is not None else {}
        kept_body["status"] = status
    else:
        kept_body["status"] = {"phase": status.get("phase")}
    return kept_body


class KnownCheckouts:
    """The watch's latest view of each Checkout, by namespace and name."""

    def __init__(self) -> None:
        self._bodies: dict[tuple[str, str], Body] = {}
        self.synced = False  # a full list has been seen since the watch (re)started

    def __len__(self) -> int:
        return len(self._bodies)

    def replace(self, bodies: Iterable[Mapping[str, Any]]) -> None:
        """A fresh LIST: exactly these exist now."""
        self._bodies = {}
        for body in bodies:
            self.seen("MODIFIED", body)
        self.synced = True

    def seen(self, kind: str, body: Mapping[str, Any]) -> None:
        """A watch event (ADDED, MODIFIED, DELETED) about ``body``."""
        meta = body.get("metadata") or {}
        key = (str(meta.get("namespace", "")), str(meta.get("name", "")))
        if kind == "DELETED":
            self._bodies.pop(key, None)
        elif kind in ("ADDED", "MODIFIED"):
            self._bodies[key] = slim(body)

    def forget(self, namespace: str, name: str) -> None:
        """The apiserver said this entry is old: read it there next time."""
        self._bodies.pop((namespace, name), None)

    def lost(self) -> None:
        """The watch broke: nothing here is trusted until the next LIST."""
        self.synced = False
        self._bodies = {}

    def get(self, namespace: str, name: str) -> Body | None:
        return self._bodies.get((namespace, name))

    def named(self, name: str) -> list[Body]:
        return [body for (_, n), body in self._bodies.items() if n == name]


class Reader(Protocol):
    async def get(self, namespace: str, name: str) -> Body | None: ...

    async def find(self, name: str) -> list[Body]: ...

    async def patch_status(self, body: Body, status: Body) -> Body: ...


class CachedCheckouts:
    """The settler's Checkouts: the watch's view first, the apiserver when the view has
    no entry (not synced yet, not seen yet) or an entry proved old."""

    def __init__(self, known: KnownCheckouts, apiserver: Reader) -> None:
        self._known = known
        self._apiserver = apiserver
        self.reads = 0  # apiserver reads: the ones the view could not answer

    async def get(self, namespace: str, name: str) -> Body | None:
        body = self._known.get(namespace, name) if self._known.synced else None
        if body is not None:
            return body
        self.reads += 1
        return await self._apiserver.get(namespace, name)

    async def find(self, name: str) -> list[Body]:
        found = self._known.named(name) if self._known.synced else []
        if found:
            return found
        self.reads += 1
        return await self._apiserver.find(name)

    async def patch_status(self, body: Body, status: Body) -> Body:
        meta = body["metadata"]
        try:
            updated = await self._apiserver.patch_status(body, status)
        except Conflict:
            self._known.forget(meta["namespace"], meta["name"])
            raise
        self._known.seen("MODIFIED", updated)
        return updated
