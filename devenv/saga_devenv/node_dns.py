"""CoreDNS as the cluster DNS: a Deployment and the ``kube-dns`` Service in
kube-system at ``CLUSTER_DNS`` (the address in the kubelet's configuration), as
kubeadm installs it, with the image made locally (saga_devenv.node_images).
Names outside ``cluster.local`` go to the host's resolvers."""

from __future__ import annotations

import socket
import struct
import subprocess
import time
from typing import Any

import yaml

from .node_layout import CLUSTER_DNS
from .process import DaemonError

COREFILE = """.:53 {
    errors
    health :8080
    ready :8181
    kubernetes cluster.local in-addr.arpa ip6.arpa {
        pods insecure
        fallthrough in-addr.arpa ip6.arpa
        ttl 30
    }
    forward . /etc/resolv.conf
    cache 30
    loop
    reload
    loadbalance
}
"""

_LABELS = {"k8s-app": "kube-dns"}
_META = {"name": "coredns", "namespace": "kube-system"}


def manifests(image: str) -> list[dict[str, Any]]:
    rbac_rules = [
        {
            "apiGroups": [""],
            "resources": ["endpoints", "services", "pods", "namespaces"],
            "verbs": ["list", "watch"],
        },
        {
            "apiGroups": ["discovery.k8s.io"],
            "resources": ["endpointslices"],
            "verbs": ["list", "watch"],
        },
    ]
    container = {
        "name": "coredns",
        "image": image,
        "imagePullPolicy": "Never",
        "args": ["-conf", "/etc/coredns/Corefile"],
        "ports": [
            {"name": "dns", "containerPort": 53, "protocol": "UDP"},
            {"name": "dns-tcp", "containerPort": 53, "protocol": "TCP"},
        ],
        "readinessProbe": {"httpGet": {"path": "/ready", "port": 8181}, "periodSeconds": 2},
        "livenessProbe": {"httpGet": {"path": "/health", "port": 8080}, "periodSeconds": 10},
        "resources": {"requests": {"cpu": "50m", "memory": "40Mi"}, "limits": {"memory": "170Mi"}},
        "volumeMounts": [{"name": "config", "mountPath": "/etc/coredns", "readOnly": True}],
    }
    pod_spec = {
        "serviceAccountName": "coredns",
        "priorityClassName": "system-cluster-critical",
        "dnsPolicy": "Default",  # the host's resolvers, for names outside the cluster
        "containers": [container],
        "volumes": [{"name": "config", "configMap": {"name": "coredns"}}],
    }
    return [
        {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": _META},
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "ClusterRole",
            "metadata": {"name": "system:coredns"},
            "rules": rbac_rules,
        },
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "ClusterRoleBinding",
            "metadata": {"name": "system:coredns"},
            "roleRef": {
                "apiGroup": "rbac.authorization.k8s.io",
                "kind": "ClusterRole",
                "name": "system:coredns",
            },
            "subjects": [{"kind": "ServiceAccount", **_META}],
        },
        {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": _META,
            "data": {"Corefile": COREFILE},
        },
        {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": {**_META, "labels": _LABELS},
            "spec": {
                "replicas": 1,
                "selector": {"matchLabels": _LABELS},
                "template": {"metadata": {"labels": _LABELS}, "spec": pod_spec},
            },
        },
        {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {"name": "kube-dns", "namespace": "kube-system", "labels": _LABELS},
            "spec": {
                "clusterIP": CLUSTER_DNS,
                "selector": _LABELS,
                "ports": [
                    {"name": "dns", "port": 53, "protocol": "UDP", "targetPort": 53},
                    {"name": "dns-tcp", "port": 53, "protocol": "TCP", "targetPort": 53},
                ],
            },
        },
    ]


def install(kubectl: list[str], image: str, timeout: float = 120.0) -> None:
    """Apply CoreDNS (idempotent) and wait until it answers at the cluster DNS address.

    The answer itself is the signal: after a node restart the Deployment still
    reports its old pod available while the kubelet is recreating it."""
    documents = yaml.safe_dump_all(manifests(image), sort_keys=False)
    subprocess.run(
        [*kubectl, "apply", "--server-side", "--force-conflicts", "-f", "-"],
        input=documents,
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    deadline = time.monotonic() + timeout
    while not resolves("kubernetes.default.svc.cluster.local"):
        if time.monotonic() > deadline:
            raise DaemonError(f"CoreDNS does not answer at {CLUSTER_DNS} after {timeout:.0f}s")
        time.sleep(0.5)


def resolves(name: str, server: str = CLUSTER_DNS) -> bool:
    """Whether ``server`` answers an A query for ``name`` with an address (one UDP
    query through kube-proxy's rules, as a pod's resolver sends it)."""
    query_id = 0x5A6A
    question = b"".join(bytes([len(label)]) + label.encode() for label in name.split("."))
    packet = struct.pack(">6H", query_id, 0x0100, 1, 0, 0, 0) + question + b"\0\0\1\0\1"
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.settimeout(1.0)
        try:
            sock.sendto(packet, (server, 53))
            answer = sock.recv(512)
        except OSError:
            return False
    if len(answer) < 12:
        return False
    answer_id, flags, _, answers = struct.unpack(">4H", answer[:8])
    return bool(answer_id == query_id and flags & 0x000F == 0 and answers > 0)
