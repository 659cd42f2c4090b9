"""The Helm chart lints, renders manifests the real apiserver accepts, and installs."""

from __future__ import annotations

import base64
import json
import subprocess
from pathlib import Path
from typing import Any

import yaml

from saga_kit.events import Topology
from saga_kit.nats_access import Role, chart_permissions, permissions
from tests.conftest import Platform

REPO = Path(__file__).resolve().parents[2]
CHART = REPO / "charts" / "checkout-saga"
WORKLOADS = (
    "checkout-operator",
    "expiry-worker",
    "user-service",
    "product-service",
    "checkout-api",
    "payment-listener",
)


def helm(platform: Platform, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(platform.cfg.binary("helm")), f"--kubeconfig={platform.kubeconfig}", *args],
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
        env={"HOME": str(platform.cfg.run_dir / "helm-home"), "PATH": "/usr/bin:/bin"},
    )


def test_chart_crd_is_the_repository_crd() -> None:
    assert (CHART / "crds" / "checkout.yaml").read_text() == (
        REPO / "crds" / "checkout.yaml"
    ).read_text()


def nats_passwords(platform: Platform, namespace: str) -> dict[str, str]:
    raw = platform.kubectl(
        "get", "secret", "checkout-saga-nats-users", "-o", "json", namespace=namespace
    ).stdout
    return {k: base64.b64decode(v).decode() for k, v in json.loads(raw)["data"].items()}


def render(platform: Platform, *args: str) -> list[dict[str, Any]]:
    rendered = helm(
        platform, "template", "cs", str(CHART), f"--kube-version={platform.cfg.kube_version}", *args
    )
    assert rendered.returncode == 0, rendered.stderr
    return [doc for doc in yaml.safe_load_all(rendered.stdout) if doc]


def nats_env(deployment: dict[str, Any]) -> tuple[str | None, list[tuple[str, str]]]:
    """A Deployment's NATS_USER and every (Secret, key) its NATS_PASSWORD may come from."""
    env = deployment["spec"]["template"]["spec"]["containers"][0]["env"]
    user = next((e["value"] for e in env if e["name"] == "NATS_USER"), None)
    refs = [
        (ref["name"], ref["key"])
        for e in env
        if (ref := (e.get("valueFrom") or {}).get("secretKeyRef")) and "nats" in ref["name"]
    ]
    return user, refs


def test_chart_passes_the_notification_url_to_the_operator(platform: Platform) -> None:
    def operator_env(*args: str) -> dict[str, str]:
        (deployment,) = [
            d
            for d in render(platform, *args)
            if d["kind"] == "Deployment" and d["metadata"]["name"].endswith("checkout-operator")
        ]
        env = deployment["spec"]["template"]["spec"]["containers"][0]["env"]
        return {e["name"]: e.get("value", "") for e in env}

    url = "https://shop.example/midtrans/notifications"
    assert operator_env(f"--set=midtrans.notificationUrl={url}")["MIDTRANS_NOTIFICATION_URL"] == url
    assert "MIDTRANS_NOTIFICATION_URL" not in operator_env()


def test_chart_nats_permissions_are_saga_kits() -> None:
    """The chart's NATS users are rendered from the same table as the local server's."""
    assert (CHART / "files" / "nats-permissions.json").read_text() == chart_permissions()


def test_chart_nats_users_and_each_workload_only_its_own_password(platform: Platform) -> None:
    docs = render(platform)
    secrets = {d["metadata"]["name"]: d for d in docs if d["kind"] == "Secret"}
    passwords = secrets["checkout-saga-nats-users"]["stringData"]
    config = json.loads(secrets["checkout-saga-nats-config"]["stringData"]["nats.conf"])
    users = {u["user"]: u for u in config["authorization"]["users"]}
    assert set(users) == set(passwords) == {role.value for role in Role}
    for role in Role:
        assert users[role.value]["permissions"] == permissions(role, [Topology()])
        assert users[role.value]["password"] == passwords[role.value]
    nats = next(
        d
        for d in docs
        if d["kind"] == "Deployment" and d["metadata"]["name"] == "checkout-saga-nats"
    )
    assert nats["spec"]["template"]["spec"]["containers"][0]["args"] == [
        "--config",
        "/etc/nats/nats.conf",
    ]
    deployments = {d["metadata"]["name"]: d for d in docs if d["kind"] == "Deployment"}
    for name in WORKLOADS:
        user, refs = nats_env(deployments[name])
        if name in {role.value for role in Role}:
            assert user == name and refs == [("checkout-saga-nats-users", name)], (name, refs)
        else:
            assert user is None and refs == [], name  # no NATS at all

    # An external NATS: the users' passwords come from the Secret named in the values.
    docs = render(platform, "--set=dev.enabled=false,nats.existingSecret=their-nats")
    assert not [d for d in docs if d["kind"] == "Secret" and "nats" in d["metadata"]["name"]]
    listener = next(
        d for d in docs if d["kind"] == "Deployment" and d["metadata"]["name"] == "payment-listener"
    )
    assert nats_env(listener) == ("payment-listener", [("their-nats", "payment-listener")])
    refused = helm(
        platform,
        "template",
        "cs",
        str(CHART),
        f"--kube-version={platform.cfg.kube_version}",
        "--set=nats.existingSecret=x",
    )
    assert refused.returncode != 0 and "external NATS" in refused.stderr


def test_chart_lints_and_installs(platform: Platform, namespace: str) -> None:
    lint = helm(platform, "lint", str(CHART))
    assert lint.returncode == 0, lint.stdout + lint.stderr
    assert helm(platform, "version", "--short").stdout.startswith(platform.cfg.helm_version)
    release = f"cs-{namespace[-8:]}"  # cluster-scoped RBAC names include the release
    # NodePorts are cluster-wide: this install goes without; the dry run below checks them.
    install = helm(
        platform,
        "install",
        release,
        str(CHART),
        f"--namespace={namespace}",
        "--set=api.nodePort=0,listener.nodePort=0",
    )
    assert install.returncode == 0, install.stderr
    try:
        listed = helm(platform, "list", f"--namespace={namespace}", "-o", "json")
        assert '"status":"deployed"' in listed.stdout
        deployments = platform.kubectl(
            "get", "deployments", "-o", "jsonpath={.items[*].metadata.name}", namespace=namespace
        ).stdout.split()
        assert set(WORKLOADS) <= set(deployments)
        # The generated NATS passwords survive an upgrade (the running pods keep theirs).
        before = nats_passwords(platform, namespace)
        upgrade = helm(
            platform,
            "upgrade",
            release,
            str(CHART),
            f"--namespace={namespace}",
            "--set=api.nodePort=0,listener.nodePort=0",
        )
        assert upgrade.returncode == 0, upgrade.stderr
        assert nats_passwords(platform, namespace) == before
        assert set(before) == {role.value for role in Role}
        # The operator's RBAC allows what it does and no more.
        sa = f"system:serviceaccount:{namespace}:checkout-operator"
        for verb, resource, allowed in [
            ("watch", "checkouts.checkout.saga.dev", "yes"),
            ("patch", "checkouts.checkout.saga.dev --subresource=status", "yes"),
            ("delete", "checkouts.checkout.saga.dev", "yes"),
            ("update", "checkouts.checkout.saga.dev", "no"),
            ("create", "secrets", "no"),
            # Leader election: its Lease in the release namespace only, never deleted.
            *[
                (verb, f"leases.coordination.k8s.io --namespace={namespace}", "yes")
                for verb in ("get", "create", "update")
            ],
            ("delete", f"leases.coordination.k8s.io --namespace={namespace}", "no"),
            ("update", "leases.coordination.k8s.io --namespace=kube-system", "no"),
        ]:
            result = platform.kubectl(
                "auth", "can-i", verb, *resource.split(), f"--as={sa}", check=False
            )
            assert result.stdout.strip() == allowed, (verb, resource, result.stdout)
    finally:
        helm(platform, "uninstall", release, f"--namespace={namespace}")


def test_rendered_chart_is_valid_for_the_real_apiserver(platform: Platform, namespace: str) -> None:
    rendered = helm(
        platform,
        "template",
        "cs",
        str(CHART),
        f"--namespace={namespace}",
        f"--kube-version={platform.cfg.kube_version}",
    )
    assert rendered.returncode == 0, rendered.stderr
    # The NodePorts kind-config.yaml maps to localhost:8080 and :8081.
    assert "nodePort: 30080" in rendered.stdout and "nodePort: 30081" in rendered.stdout
    applied = platform.kubectl(
        "apply", "--dry-run=server", "-f", "-", namespace=namespace, stdin=rendered.stdout
    )
    for name in WORKLOADS:
        assert f"deployment.apps/{name} created (server dry run)" in applied.stdout

    production = helm(
        platform,
        "template",
        "cs",
        str(CHART),
        f"--kube-version={platform.cfg.kube_version}",
        "--set=midtrans.sandbox.enabled=false,dev.enabled=false,secrets.existingSecret=mine,"
        "nats.existingSecret=mine-nats",
    )
    assert production.returncode == 0, production.stderr
    assert "name: checkout-saga-midtrans-sandbox" not in production.stdout
    assert "kind: Secret" not in production.stdout
    assert "name: checkout-saga-postgres" not in production.stdout
