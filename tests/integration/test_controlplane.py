"""The local control plane is a real, secured Kubernetes API server."""

from __future__ import annotations

import json
import ssl
import urllib.error
import urllib.request

import pytest
from kubernetes import client

from saga_devenv import controlplane
from tests.conftest import Platform
from tests.helpers.audit_log import NamespaceAudit


def test_version_is_the_pinned_one(platform: Platform) -> None:
    versions = json.loads(platform.kubectl("version", "-o", "json").stdout)
    assert versions["serverVersion"]["gitVersion"] == platform.cfg.kube_version
    assert versions["clientVersion"]["gitVersion"] == platform.cfg.kube_version
    assert versions["serverVersion"]["minor"] == platform.cfg.kube_version.split(".")[1]


def test_readyz_answers_ok(platform: Platform) -> None:
    assert platform.kubectl("get", "--raw", "/readyz").stdout == "ok"


def test_serves_tls_with_the_project_ca_only(platform: Platform) -> None:
    with pytest.raises(urllib.error.URLError, match="CERTIFICATE_VERIFY_FAILED"):
        urllib.request.urlopen(f"{platform.cfg.apiserver_url}/readyz", timeout=5)  # noqa: S310


def test_anonymous_requests_are_not_authorized(platform: Platform) -> None:
    ca = ssl.create_default_context(cafile=str(controlplane.pki(platform.cfg).ca_cert))
    with pytest.raises(urllib.error.HTTPError) as err:
        urllib.request.urlopen(  # noqa: S310
            f"{platform.cfg.apiserver_url}/api/v1/namespaces", timeout=5, context=ca
        )
    assert err.value.code in (401, 403)


def test_service_account_tokens_are_signed_and_rbac_is_enforced(
    platform: Platform, namespace: str
) -> None:
    platform.kubectl("create", "serviceaccount", "reader", namespace=namespace)
    token = platform.kubectl("create", "token", "reader", namespace=namespace).stdout.strip()
    cfg = client.Configuration()
    cfg.host = platform.cfg.apiserver_url
    cfg.ssl_ca_cert = str(controlplane.pki(platform.cfg).ca_cert)
    cfg.api_key = {"authorization": f"Bearer {token}"}
    as_reader = client.CustomObjectsApi(client.ApiClient(cfg))

    def list_checkouts() -> object:
        return as_reader.list_namespaced_custom_object(
            "checkout.saga.dev", "v1alpha1", namespace, "checkouts"
        )

    with pytest.raises(client.ApiException) as denied:
        list_checkouts()
    assert denied.value.status == 403
    assert f"system:serviceaccount:{namespace}:reader" in str(denied.value.body)

    platform.kubectl(
        "create",
        "role",
        "checkout-reader",
        "--verb=list",
        "--resource=checkouts.checkout.saga.dev",
        namespace=namespace,
    )
    platform.kubectl(
        "create",
        "rolebinding",
        "checkout-reader",
        "--role=checkout-reader",
        f"--serviceaccount={namespace}:reader",
        namespace=namespace,
    )
    listed = list_checkouts()  # one call: the list's resourceVersion moves between calls
    assert listed == {
        "apiVersion": "checkout.saga.dev/v1alpha1",
        "items": [],
        "kind": "CheckoutList",
        "metadata": listed["metadata"],  # type: ignore[index]
    }


def test_writes_are_audited(platform: Platform, namespace: str) -> None:
    audit = NamespaceAudit(platform.audit_log, namespace)
    platform.kubectl("create", "configmap", "audited", namespace=namespace)
    platform.kubectl("label", "configmap", "audited", "seen=yes", namespace=namespace)
    platform.kubectl("get", "configmap", "audited", namespace=namespace)  # a read: not a write
    assert audit.writes_to("configmaps", "audited") == ["create", "patch"]
