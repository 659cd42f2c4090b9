"""Where the local node keeps its files, its fixed addresses and its binaries.

One node per machine: kubelet, kube-proxy, the controller-manager and the
scheduler listen on their usual loopback ports, and kube-proxy's iptables rules
and the CNI bridge are the host's. Everything else lives in ``<run>/node`` except
containerd's sockets, which go under ``/run`` (a socket path must stay short).
"""

from __future__ import annotations

import hashlib
import socket
from dataclasses import dataclass
from pathlib import Path

from .config import REPO_ROOT, DevConfig, _versions
from .process import DaemonError

NODE_NAME = "checkout-saga-node"
SERVICE_CIDR = "10.0.0.0/24"  # the apiserver's --service-cluster-ip-range
CLUSTER_DNS = "10.0.0.10"
CLUSTER_CIDR = "10.244.0.0/16"
POD_CIDR = "10.244.0.0/24"
BRIDGE = "saga-cni0"

CONTAINERD_METRICS_PORT = 10240
KUBELET_HEALTHZ_PORT = 10248
KUBELET_PORT = 10250
PROXY_HEALTHZ_PORT = 10256
CONTROLLER_MANAGER_PORT = 10257
SCHEDULER_PORT = 10259


def node_ip() -> str:
    """The host's address on its default route: where pods reach the apiserver."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        try:
            sock.connect(("203.0.113.1", 9))  # no packet is sent; this picks the route
        except OSError as exc:
            raise DaemonError("the node needs a network interface with a default route") from exc
        address = str(sock.getsockname()[0])
    if address.startswith("127."):
        raise DaemonError("the node needs a non-loopback address (found only loopback)")
    return address


@dataclass(frozen=True)
class NodeLayout:
    """Paths and binaries of the node of one run folder."""

    cfg: DevConfig

    @property
    def root(self) -> Path:
        return self.cfg.run_dir / "node"

    @property
    def enabled_marker(self) -> Path:
        """Present while the node is meant to run (``up --node`` until ``down``)."""
        return self.root / "enabled"

    @property
    def runtime_state(self) -> Path:
        digest = hashlib.sha256(str(self.cfg.run_dir.resolve()).encode()).hexdigest()[:12]
        return Path("/run") / f"checkout-saga-{digest}"

    @property
    def containerd_socket(self) -> Path:
        return self.runtime_state / "containerd.sock"

    @property
    def containerd_socket_link(self) -> Path:
        """A stable path to the socket inside the run folder (scripts/build-image)."""
        return self.root / "containerd" / "containerd.sock"

    @property
    def cni_conf_dir(self) -> Path:
        return self.root / "cni" / "net.d"

    @property
    def kubelet_root(self) -> Path:
        return self.root / "kubelet"

    def binary(self, name: str) -> Path:
        """A node binary in the cache (scripts/build-binaries.sh node)."""
        versions = _versions()
        version = {
            "kubelet": versions["KUBE_VERSION"],
            "kube-controller-manager": versions["KUBE_VERSION"],
            "kube-scheduler": versions["KUBE_VERSION"],
            "kube-proxy": versions["KUBE_VERSION"],
            "coredns": versions["COREDNS_VERSION"],
            "crictl": versions["CRICTL_VERSION"],
            "cni-plugins": versions["CNI_PLUGINS_VERSION"],
            "nodebox": nodebox_version(),
        }[name]
        return self.cfg.bin_dir / f"{name}-{version}"

    def missing_binaries(self) -> list[str]:
        names = ["kubelet", "kube-controller-manager", "kube-scheduler", "kube-proxy"]
        names += ["coredns", "crictl", "cni-plugins", "nodebox"]
        return [name for name in names if not self.binary(name).exists()]


def nodebox_version() -> str:
    """nodebox is keyed by its source's hash, as scripts/build-binaries.sh does."""
    source = REPO_ROOT / "devenv" / "gotools" / "nodebox" / "main.go"
    return hashlib.sha256(source.read_bytes()).hexdigest()[:12]
