"""The Helm chart lints, renders manifests the real apiserver accepts, and installs."""

from __future__ import annotations

import subprocess
from pathlib import Path

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
        # The operator's RBAC allows what it does and no more.
        sa = f"system:serviceaccount:{namespace}:checkout-operator"
        for verb, resource, allowed in [
            ("watch", "checkouts.checkout.saga.dev", "yes"),
            ("patch", "checkouts.checkout.saga.dev --subresource=status", "yes"),
            ("delete", "checkouts.checkout.saga.dev", "yes"),
            ("update", "checkouts.checkout.saga.dev", "no"),
            ("create", "secrets", "no"),
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
