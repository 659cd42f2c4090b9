"""A real node on the local control plane: ``saga-devenv up --node`` (docs/node.md).

Adds to etcd and the apiserver (started with :func:`controlplane.node_flags`)
the controller-manager and scheduler, containerd with runc, the kubelet (Node
``checkout-saga-node``), CNI bridge networking, kube-proxy and CoreDNS, so Pods
start, Services resolve and NodePorts answer on the host. Everything is started
idempotently (a healthy process is reused) and stopped by :func:`stop`, which
also removes what pods leave on the host. Needs root (mounts, iptables, cgroups).
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import time

from . import controlplane, node_dns, node_images, node_kube, node_runtime
from .config import DevConfig
from .node_layout import NODE_NAME, NodeLayout, node_ip
from .process import Daemon, DaemonError, port_open

__all__ = ["NODE_NAME", "enabled", "node_ip", "start", "status", "stop"]


def daemons(layout: NodeLayout, ip: str) -> list[Daemon]:
    """In start order."""
    sandbox = node_images.pause_image(layout).name
    return [
        node_kube.controller_manager_daemon(layout),
        node_kube.scheduler_daemon(layout),
        node_runtime.containerd_daemon(layout, sandbox),
        node_kube.kubelet_daemon(layout, ip),
        node_kube.proxy_daemon(layout),
    ]


def enabled(cfg: DevConfig) -> bool:
    """Whether ``up --node`` brought a node up that ``down`` has not stopped."""
    return NodeLayout(cfg).enabled_marker.exists()


def kubectl(cfg: DevConfig) -> list[str]:
    return [str(cfg.binary("kubectl")), f"--kubeconfig={cfg.kubeconfig}"]


def start(cfg: DevConfig) -> list[str]:
    """Start (or reuse) the control plane with node flags and the node; return the
    names started now. The Node is Ready and CoreDNS answers when this returns."""
    if os.geteuid() != 0:
        raise DaemonError("the node needs root (mounts, iptables, cgroups)")
    layout = NodeLayout(cfg)
    if missing := layout.missing_binaries():
        raise DaemonError(f"missing {', '.join(missing)}: run scripts/bootstrap.sh --node")
    ip = node_ip()
    started = controlplane.start(cfg, ip)
    sandbox = node_images.pause_image(layout)
    node_runtime.prepare(layout, sandbox.name)
    layout.enabled_marker.write_text(f"{ip}\n")
    for daemon in daemons(layout, ip):
        if daemon.pid() is not None and daemon.stale():
            restart(daemon)
        if daemon.ensure():
            started.append(daemon.name)
        if daemon.name == "containerd":
            coredns = node_images.coredns_image(layout)
            node_images.ensure_imported(layout, sandbox, coredns, node_images.nodebox_image(layout))
    wait_node_ready(cfg)
    node_dns.install(kubectl(cfg), node_images.coredns_image(layout).name)
    return started


def restart(daemon: Daemon) -> None:
    """Stop a process whose config changed and wait until its port is free (a kubelet
    may still hold it for a moment after its pid is gone)."""
    daemon.stop()
    deadline = time.monotonic() + 10
    while port_open(daemon.port) and time.monotonic() < deadline:
        time.sleep(0.1)


def wait_node_ready(cfg: DevConfig, timeout: float = 90.0) -> None:
    jsonpath = '{.status.conditions[?(@.type=="Ready")].status}'
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        ready = subprocess.run(
            [*kubectl(cfg), "get", "node", NODE_NAME, "-o", f"jsonpath={jsonpath}"],
            capture_output=True,
            text=True,
            check=False,
        )
        if ready.stdout == "True":
            return
        time.sleep(0.5)
    raise DaemonError(
        f"node {NODE_NAME} not Ready after {timeout:.0f}s (see .run/logs/kubelet.log)"
    )


def stop(cfg: DevConfig) -> list[str]:
    """Stop the node's processes and remove pods' traces from the host."""
    layout = NodeLayout(cfg)
    if not layout.root.exists():
        return []
    ip = layout.enabled_marker.read_text().strip() if enabled(cfg) else "127.0.0.1"
    parts = {d.name: d for d in daemons(layout, ip)}
    stopped = [name for name in ("kubelet", "kube-proxy") if parts[name].stop()]
    containerd = parts["containerd"]
    if containerd.pid() is None and (layout.root / "containerd").exists():
        # Only containerd can undo its sandboxes (network namespaces, addresses):
        # start it again if it died, so nothing stays behind.
        with contextlib.suppress(DaemonError, OSError):
            node_runtime.prepare(layout, node_images.pause_image(layout).name)
            containerd.ensure()
    if containerd.pid() is not None:
        node_runtime.remove_pods(layout)
    stopped += [
        n for n in ("containerd", "kube-scheduler", "kube-controller-manager") if parts[n].stop()
    ]
    node_runtime.teardown(layout)
    node_kube.proxy_cleanup(layout)
    node_kube.kubelet_cleanup()  # pod cgroups go once their processes have
    layout.enabled_marker.unlink(missing_ok=True)
    return stopped


def status(cfg: DevConfig) -> list[tuple[Daemon, str]]:
    """The node's processes with their state, when a node is meant to run."""
    if not enabled(cfg):
        return []
    layout = NodeLayout(cfg)
    ip = layout.enabled_marker.read_text().strip()
    return [(daemon, _state(daemon)) for daemon in daemons(layout, ip)]


def _state(daemon: Daemon) -> str:
    if daemon.pid() is None:
        return "stopped"
    return "healthy" if daemon.is_healthy() else "UNHEALTHY"
