"""`down` leaves the host clean and `up --node` brings the node and its pods back.

Runs before test_node.py (file order) and leaves the node up for it.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from saga_devenv import node
from saga_devenv.node_layout import BRIDGE, NodeLayout
from tests.helpers.waiting import eventually_sync
from tests.node.conftest import Cluster
from tests.node.workloads import pod, server

pytestmark = pytest.mark.node


def leftovers(layout: NodeLayout) -> list[str]:
    """What a stopped node would still hold on the host."""
    found = []
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        point = line.split()[4]
        if point.startswith((str(layout.root), str(layout.runtime_state))):
            found.append(f"mount {point}")
    if subprocess.run(["ip", "link", "show", BRIDGE], capture_output=True).returncode == 0:
        found.append(f"bridge {BRIDGE}")
    rules = subprocess.run(["iptables-save"], capture_output=True, text=True).stdout
    found += [f"iptables {line}" for line in rules.splitlines() if "KUBE-" in line]
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            try:
                cmdline = (proc / "cmdline").read_bytes().decode()
            except OSError:
                continue
            if str(layout.containerd_socket) in cmdline or str(layout.root) in cmdline:
                found.append(f"process {proc.name} {cmdline[:80]!r}")
    found += [f"cgroup {p}" for p in Path("/sys/fs/cgroup").glob("*/kubepods")]
    found += [f"network namespace {p}" for p in Path("/run/netns").glob("cni-*")]
    return found


def test_down_leaves_the_host_clean_and_up_brings_pods_back(
    cluster: Cluster, namespace: str
) -> None:
    cluster.apply(namespace, pod("web", server(cluster.image)))
    cluster.wait(namespace, "condition=Ready", "pod/web")
    layout = NodeLayout(cluster.cfg)

    node.stop(cluster.cfg)
    assert leftovers(layout) == []

    node.start(cluster.cfg)

    def answers() -> bool:  # the kubelet recreated the pod's sandbox and container
        try:
            reply = cluster.kubectl(
                "exec",
                "web",
                "--",
                "/nodebox",
                "get",
                "http://localhost:8080/",
                namespace=namespace,
            )
        except AssertionError:
            return False
        return reply == "hello from web\n"

    eventually_sync(answers, within=60, failure="pod web did not come back after up --node")
