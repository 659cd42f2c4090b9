"""Configuration of the local platform and the kind config stay in step with the pins."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from saga_devenv.config import REPO_ROOT, DevConfig


def test_ports_and_folders_come_from_the_environment(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("CHECKOUT_SAGA_APISERVER_PORT", "26443")
    monkeypatch.setenv("CHECKOUT_SAGA_RUN_DIR", str(tmp_path / "run"))
    monkeypatch.setenv("CHECKOUT_SAGA_CACHE", str(tmp_path / "cache"))
    cfg = DevConfig.from_env()
    assert cfg.apiserver_url == "https://127.0.0.1:26443"
    assert cfg.kubeconfig == tmp_path / "run" / "kubeconfig"
    assert cfg.binary("kubectl") == tmp_path / "cache" / "bin" / f"kubectl-{cfg.kube_version}"


def test_kind_config_uses_the_pinned_kubernetes_minor() -> None:
    kind = yaml.safe_load((REPO_ROOT / "kind-config.yaml").read_text())
    assert kind["kind"] == "Cluster"
    assert kind["apiVersion"] == "kind.x-k8s.io/v1alpha4"
    cfg = DevConfig.from_env()
    minor = ".".join(cfg.kube_version.split(".")[:2])
    images = [node["image"] for node in kind["nodes"]]
    assert images and all(img.startswith(f"kindest/node:{minor}.") for img in images)
