"""Removing a test's namespace for good, with or without a namespace controller.

Deleting a namespace only marks it Terminating: the controller-manager's namespace
controller then deletes everything in it and removes the ``kubernetes`` finalizer,
and only then does the namespace go. The bare apiserver of the local platform runs
no controller-manager, so :func:`remove_namespace` does that part itself when no
controller-manager holds its lease: it deletes every namespaced kind in the
namespace (Checkouts, Leases, Events, ...), strips finalizers that nobody is left to
remove (an operator stopped mid-test), finalizes the namespace through its
``/finalize`` subresource and checks that it is gone.
"""

from __future__ import annotations

import datetime as dt
import json
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from kubernetes import client

from tests.helpers.waiting import eventually_sync

CONTROLLER_MANAGER_LEASE = (
    "/apis/coordination.k8s.io/v1/namespaces/kube-system/leases/kube-controller-manager"
)


def _request(
    api: client.ApiClient,
    method: str,
    path: str,
    body: Any = None,
    content_type: str | None = None,
) -> Any:
    """One API call; its decoded answer, or None for 404."""
    headers = {"Accept": "application/json"}
    if content_type:
        headers["Content-Type"] = content_type
    method, url, headers, data, _ = api.param_serialize(
        method, path, header_params=headers, body=body, auth_settings=["BearerToken"]
    )
    reply = api.call_api(method, url, header_params=headers, body=data)
    reply.read()  # type: ignore[no-untyped-call]
    if reply.status == 404:
        return None
    if not 200 <= reply.status < 300:
        raise client.ApiException(status=reply.status, reason=f"{method} {path}: {reply.data!r}")
    return json.loads(reply.data) if reply.data else None


def controller_manager_running(api: client.ApiClient) -> bool:
    """Whether a controller-manager leads: its lease is held and was renewed lately."""
    lease = _request(api, "GET", CONTROLLER_MANAGER_LEASE)
    spec = (lease or {}).get("spec") or {}
    renewed = spec.get("renewTime")
    if not spec.get("holderIdentity") or not renewed:
        return False
    at = dt.datetime.fromisoformat(renewed.replace("Z", "+00:00"))
    stale_after = dt.timedelta(seconds=3 * int(spec.get("leaseDurationSeconds") or 15))
    return dt.datetime.now(dt.UTC) - at < stale_after


_resources: dict[str, list[str]] = {}  # group version -> its namespaced kinds' paths


def namespaced_collections(api: client.ApiClient) -> list[str]:
    """The path prefix and plural of every namespaced kind one may delete by collection."""
    versions = ["v1"] + [
        group["preferredVersion"]["groupVersion"]
        for group in _request(api, "GET", "/apis")["groups"]
    ]
    paths = []
    for version in versions:
        if version not in _resources:
            root = "/api/v1" if version == "v1" else f"/apis/{version}"
            listing = _request(api, "GET", root) or {"resources": []}
            _resources[version] = [
                f"{root}/namespaces/{{namespace}}/{r['name']}"
                for r in listing["resources"]
                if r["namespaced"]
                and "/" not in r["name"]
                and {"deletecollection", "list"} <= set(r["verbs"])
            ]
        paths += _resources[version]
    return paths


def _empty(api: client.ApiClient, collection: str) -> None:
    """Delete the collection; take away the finalizers of what is left (nobody will)."""
    answer = _request(api, "DELETE", collection) or {}
    for item in answer.get("items") or []:
        meta = item.get("metadata") or {}
        if meta.get("finalizers"):
            _request(
                api,
                "PATCH",
                f"{collection}/{meta['name']}",
                {"metadata": {"finalizers": None}},
                "application/merge-patch+json",
            )


def remove_namespace(api: client.ApiClient, name: str, *, within: float = 60.0) -> None:
    """Delete namespace ``name`` and everything in it; return once it no longer exists."""
    core = client.CoreV1Api(api)
    path = f"/api/v1/namespaces/{name}"
    _request(api, "DELETE", path)  # Terminating: nothing new may be created in it
    if not controller_manager_running(api):
        collections = [c.format(namespace=name) for c in namespaced_collections(api)]
        with ThreadPoolExecutor(8) as pool:
            list(pool.map(lambda c: _empty(api, c), collections))
        body = _request(api, "GET", path)
        if body is not None:
            body["spec"]["finalizers"] = []
            core.replace_namespace_finalize(name, body)
            _request(api, "DELETE", path)  # in case the finalize left it for a delete
    eventually_sync(
        lambda: _request(api, "GET", path) is None,
        within=within,
        interval=0.1,
        failure=lambda: f"namespace {name} still there: {_request(api, 'GET', path)}",
    )
