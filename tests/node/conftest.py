"""The local node for tests marked ``node``: started (or reused) once per run.

These tests need root and the node's binaries (scripts/bootstrap.sh --node), and
restart a bare apiserver with the node's flags, so they run only when asked for
(pyproject's addopts deselect them): ``scripts/test -m node``, CI's node stage.
Postgres, Redis and NATS run as ``up --node`` runs them, reachable from pods at the
node's address (``servers.pod_urls``).
What this run started is stopped at the end unless ``CHECKOUT_SAGA_KEEP_RUNNING=1``.
"""

from __future__ import annotations

import json
import os
import subprocess
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest

from saga_devenv import controlplane, node, servers
from saga_devenv.config import DevConfig
from saga_devenv.node_images import nodebox_image
from saga_devenv.node_layout import NodeLayout
from tests.helpers.waiting import budget


@dataclass(frozen=True)
class Cluster:
    """The control plane with its node, as the tests drive it."""

    cfg: DevConfig
    node_ip: str
    image: str  # the nodebox test image (saga_devenv.node_images)

    def kubectl(self, *args: str, namespace: str | None = None, stdin: str | None = None) -> str:
        argv = [*node.kubectl(self.cfg), *([f"--namespace={namespace}"] if namespace else [])]
        result = subprocess.run(
            [*argv, *args], input=stdin, capture_output=True, text=True, check=False, timeout=180
        )
        if result.returncode != 0:
            raise AssertionError(f"kubectl {' '.join(args)} failed:\n{result.stderr}")
        return result.stdout

    def apply(self, namespace: str, *objects: dict[str, Any]) -> None:
        document = json.dumps({"apiVersion": "v1", "kind": "List", "items": list(objects)})
        self.kubectl("apply", "-f", "-", namespace=namespace, stdin=document)

    def get(self, namespace: str, *what: str) -> Any:
        return json.loads(self.kubectl("get", *what, "-o", "json", namespace=namespace))

    def wait(self, namespace: str, condition: str, *what: str, seconds: float = 60) -> None:
        timeout = f"--timeout={budget(seconds):.0f}s"
        self.kubectl("wait", f"--for={condition}", timeout, *what, namespace=namespace)


@pytest.fixture(scope="session")
def cluster() -> Iterator[Cluster]:
    cfg = DevConfig.from_env()
    started = node.start(cfg)
    ip = node.node_ip()
    started_servers = servers.start(cfg, ip)
    layout = NodeLayout(cfg)
    yield Cluster(cfg, ip, nodebox_image(layout).name)
    if os.environ.get("CHECKOUT_SAGA_KEEP_RUNNING") != "1":
        for daemon in reversed(servers.daemons(cfg)):
            if daemon.name in started_servers:
                daemon.stop()
        if set(started) - {"etcd", "kube-apiserver"}:
            node.stop(cfg)
        for daemon in reversed(controlplane.daemons(cfg)):
            if daemon.name in started:
                daemon.stop()


@pytest.fixture
def namespace(cluster: Cluster) -> Iterator[str]:
    """A fresh namespace; deleted afterwards (the namespace controller empties it)."""
    name = f"node-test-{uuid.uuid4().hex[:8]}"
    cluster.kubectl("create", "namespace", name)
    try:
        # The service-account controller makes `default`; pods are refused until then.
        cluster.wait(name, "create", "serviceaccount/default", seconds=30)
        yield name
    finally:
        cluster.kubectl("delete", "namespace", name, "--wait=false")
