"""The node's Kubernetes processes: kubelet, kube-proxy, controller-manager, scheduler.

All run on the host as root, talking to the apiserver on loopback with their own
client certificates (saga_devenv.node_pki). The kubelet runs pods through our
containerd; the host has cgroups v1, which kubelet 1.35 only accepts with
``failCgroupV1: false`` (cgroupfs driver). kube-proxy programs the host's iptables
(Services, NodePorts on every host address including loopback) and is told to
clean up after itself on ``down``. The controller-manager runs each controller
under its own service account (as kubeadm does) and signs with the cluster CA.
"""

from __future__ import annotations

import contextlib
import hashlib
import ssl
from pathlib import Path

import yaml

from . import controlplane, node_pki
from .node_layout import (
    CLUSTER_CIDR,
    CLUSTER_DNS,
    CONTROLLER_MANAGER_PORT,
    KUBELET_HEALTHZ_PORT,
    KUBELET_PORT,
    NODE_NAME,
    PROXY_HEALTHZ_PORT,
    SCHEDULER_PORT,
    SERVICE_CIDR,
    NodeLayout,
)
from .node_runtime import quietly
from .process import Daemon, http_get

CLIENTS = {
    "kubelet": node_pki.Identity("kubelet", f"system:node:{NODE_NAME}", ("system:nodes",)),
    "kube-proxy": node_pki.Identity("kube-proxy", "system:kube-proxy"),
    "kube-controller-manager": node_pki.Identity(
        "kube-controller-manager", "system:kube-controller-manager"
    ),
    "kube-scheduler": node_pki.Identity("kube-scheduler", "system:kube-scheduler"),
}


def kubeconfig(layout: NodeLayout, component: str) -> Path:
    """A kubeconfig for ``component`` with its own client certificate."""
    keys = controlplane.pki(layout.cfg)
    cert, key = node_pki.ensure(keys, CLIENTS[component])
    user = {"client-certificate": str(cert), "client-key": str(key)}
    cluster = {"server": layout.cfg.apiserver_url, "certificate-authority": str(keys.ca_cert)}
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "local", "cluster": cluster}],
        "users": [{"name": component, "user": user}],
        "contexts": [{"name": "local", "context": {"cluster": "local", "user": component}}],
        "current-context": "local",
    }
    path = layout.root / f"{component}.kubeconfig"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    path.chmod(0o600)
    return path


def _written(layout: NodeLayout, name: str, content: dict[str, object]) -> tuple[Path, str]:
    """Write a component's config file; return it with a stamp of its content."""
    text = yaml.safe_dump(content, sort_keys=False)
    path = layout.root / name
    # kube-proxy exits when its file is written to, even with the same content.
    if not path.exists() or path.read_text() != text:
        path.write_text(text)
    return path, hashlib.sha256(text.encode()).hexdigest()[:16]


def _https_ok(port: int) -> bool:
    # Health endpoints are open to anonymous callers; the serving certificate is the
    # component's own self-signed one, so only the answer matters here.
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    return http_get(f"https://127.0.0.1:{port}/healthz", context) == b"ok"


def kubelet_daemon(layout: NodeLayout, node_ip: str) -> Daemon:
    keys = controlplane.pki(layout.cfg)
    serving = node_pki.Identity(
        f"kubelet-serving-{node_ip}",
        NODE_NAME,
        server_names=(NODE_NAME, "localhost"),
        server_ips=(node_ip, "127.0.0.1"),
    )
    cert, key = node_pki.ensure(keys, serving)
    config, stamp = _written(
        layout,
        "kubelet.yaml",
        {
            "apiVersion": "kubelet.config.k8s.io/v1beta1",
            "kind": "KubeletConfiguration",
            "failCgroupV1": False,
            "cgroupDriver": "cgroupfs",
            "failSwapOn": False,
            "oomScoreAdj": 0,  # lowering it is refused on some hosts (see node_runtime)
            "containerRuntimeEndpoint": f"unix://{layout.containerd_socket}",
            "address": node_ip,
            "port": KUBELET_PORT,
            "readOnlyPort": 0,
            "healthzBindAddress": "127.0.0.1",
            "healthzPort": KUBELET_HEALTHZ_PORT,
            "tlsCertFile": str(cert),
            "tlsPrivateKeyFile": str(key),
            "authentication": {
                "anonymous": {"enabled": False},
                "webhook": {"enabled": True},
                "x509": {"clientCAFile": str(keys.ca_cert)},
            },
            "authorization": {"mode": "Webhook"},
            "clusterDomain": "cluster.local",
            "clusterDNS": [CLUSTER_DNS],
            "resolvConf": "/etc/resolv.conf",
            # A development machine's disk is often fuller than a cluster node's: evict
            # only when it is nearly full, and keep the locally imported images.
            "evictionHard": {
                "memory.available": "100Mi",
                "nodefs.available": "2%",
                "imagefs.available": "2%",
                "nodefs.inodesFree": "2%",
            },
            "imageGCHighThresholdPercent": 99,
            "imageGCLowThresholdPercent": 98,
            "serializeImagePulls": False,
            "maxPods": 60,
        },
    )
    return Daemon(
        name="kubelet",
        argv=[
            str(layout.binary("kubelet")),
            f"--config={config}",
            f"--kubeconfig={kubeconfig(layout, 'kubelet')}",
            f"--root-dir={layout.kubelet_root}",
            f"--hostname-override={NODE_NAME}",
            f"--node-ip={node_ip}",
            "--v=1",
        ],
        run_dir=layout.cfg.run_dir,
        port=KUBELET_HEALTHZ_PORT,
        healthy=lambda: http_get(f"http://127.0.0.1:{KUBELET_HEALTHZ_PORT}/healthz") == b"ok",
        start_timeout=60.0,
        stamp=stamp,
    )


def proxy_daemon(layout: NodeLayout) -> Daemon:
    config, stamp = _written(layout, "kube-proxy.yaml", _proxy_config(layout))
    return Daemon(
        name="kube-proxy",
        argv=[str(layout.binary("kube-proxy")), f"--config={config}", "--v=1"],
        run_dir=layout.cfg.run_dir,
        port=PROXY_HEALTHZ_PORT,
        healthy=lambda: http_get(f"http://127.0.0.1:{PROXY_HEALTHZ_PORT}/healthz") is not None,
        start_timeout=60.0,
        stamp=stamp,
    )


def _proxy_config(layout: NodeLayout) -> dict[str, object]:
    return {
        "apiVersion": "kubeproxy.config.k8s.io/v1alpha1",
        "kind": "KubeProxyConfiguration",
        "mode": "iptables",
        "clientConnection": {"kubeconfig": str(kubeconfig(layout, "kube-proxy"))},
        "hostnameOverride": NODE_NAME,
        "clusterCIDR": CLUSTER_CIDR,
        "healthzBindAddress": f"127.0.0.1:{PROXY_HEALTHZ_PORT}",
        "metricsBindAddress": "127.0.0.1:10249",
        # Leave the host's conntrack table sizes alone.
        "conntrack": {"maxPerCore": 0},
    }


def proxy_cleanup(layout: NodeLayout) -> None:
    """Remove kube-proxy's iptables rules (after it stopped)."""
    config, _ = _written(layout, "kube-proxy.yaml", _proxy_config(layout))
    quietly(str(layout.binary("kube-proxy")), f"--config={config}", "--cleanup")


def controller_manager_daemon(layout: NodeLayout) -> Daemon:
    keys = controlplane.pki(layout.cfg)
    return _control_daemon(
        layout,
        "kube-controller-manager",
        CONTROLLER_MANAGER_PORT,
        # One instance, but its Lease (kube-system/kube-controller-manager) is how
        # clients tell that a namespace controller runs: the tests' namespace helper
        # finalizes a namespace itself without one, which leaves its pods orphaned
        # on the node, holding their CPU requests.
        "--leader-elect=true",
        "--use-service-account-credentials=true",
        f"--service-account-private-key-file={keys.sa_key}",
        f"--root-ca-file={keys.ca_cert}",
        f"--cluster-signing-cert-file={keys.ca_cert}",
        f"--cluster-signing-key-file={keys.ca_key}",
        f"--service-cluster-ip-range={SERVICE_CIDR}",
        f"--cluster-cidr={CLUSTER_CIDR}",
    )


def scheduler_daemon(layout: NodeLayout) -> Daemon:
    return _control_daemon(layout, "kube-scheduler", SCHEDULER_PORT, "--leader-elect=false")


def _control_daemon(layout: NodeLayout, name: str, port: int, *flags: str) -> Daemon:
    """The controller-manager or the scheduler (one instance); restarted when its
    flags change (the stamp)."""
    config = kubeconfig(layout, name)
    argv = [
        str(layout.binary(name)),
        f"--kubeconfig={config}",
        f"--authentication-kubeconfig={config}",
        f"--authorization-kubeconfig={config}",
        "--bind-address=127.0.0.1",
        f"--secure-port={port}",
        f"--cert-dir={layout.root / f'{name}-certs'}",
        *flags,
        "--v=1",
    ]
    return Daemon(
        name=name,
        argv=argv,
        run_dir=layout.cfg.run_dir,
        port=port,
        healthy=lambda: _https_ok(port),
        start_timeout=60.0,
        stamp=hashlib.sha256("\0".join(argv).encode()).hexdigest()[:16],
    )


def kubelet_cleanup() -> None:
    """Remove what the kubelet leaves on the host once it and the pods are gone: its
    iptables chains and the (empty) pod cgroups."""
    for tool in ("iptables", "ip6tables"):
        for table in ("filter", "nat", "mangle"):
            for chain in ("INPUT", "OUTPUT"):
                quietly(tool, "-t", table, "-D", chain, "-j", "KUBE-FIREWALL")
            for own in ("KUBE-FIREWALL", "KUBE-KUBELET-CANARY", "KUBE-IPTABLES-HINT"):
                quietly(tool, "-t", table, "-F", own)
                quietly(tool, "-t", table, "-X", own)
    for hierarchy in Path("/sys/fs/cgroup").glob("*/kubepods"):
        for folder in sorted(hierarchy.rglob("*"), key=lambda p: len(p.parts), reverse=True):
            if folder.is_dir():
                with contextlib.suppress(OSError):
                    folder.rmdir()
        with contextlib.suppress(OSError):
            hierarchy.rmdir()
