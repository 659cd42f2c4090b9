"""The Helm chart lints, and installs with the real Helm CLI on the real apiserver."""

from __future__ import annotations

import subprocess
from pathlib import Path

from tests.conftest import Platform

REPO = Path(__file__).resolve().parents[2]
CHART = REPO / "charts" / "checkout-saga"


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
    install = helm(platform, "install", "checkout-saga", str(CHART), f"--namespace={namespace}")
    assert install.returncode == 0, install.stderr
    listed = helm(platform, "list", f"--namespace={namespace}", "-o", "json")
    assert '"status":"deployed"' in listed.stdout
    version = helm(platform, "version", "--short")
    assert version.stdout.startswith(platform.cfg.helm_version)
