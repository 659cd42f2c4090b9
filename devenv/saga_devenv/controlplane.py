"""The local Kubernetes control plane: etcd and kube-apiserver, envtest-style.

There is no kubelet, scheduler or controller-manager: the apiserver stores and
validates objects (CRDs, CEL rules, RBAC, admission) exactly as a real cluster
does, which is all an operator and its tests talk to. ServiceAccount admission
is disabled because nothing here would create the service-account tokens it
expects; namespaces stay Terminating after deletion (no namespace controller).

``up --node`` starts the apiserver with a few more flags (:func:`node_flags`) and
adds a real node (saga_devenv.node); a bare start reuses such an apiserver.
"""

from __future__ import annotations

import hashlib
import json
import ssl
from pathlib import Path

import yaml

from . import node_pki
from .config import DevConfig
from .pki import Pki
from .process import Daemon, DaemonError, http_get


def pki(cfg: DevConfig) -> Pki:
    return Pki(cfg.run_dir / "pki")


def admin_ssl_context(cfg: DevConfig) -> ssl.SSLContext:
    keys = pki(cfg)
    ctx = ssl.create_default_context(cafile=str(keys.ca_cert))
    ctx.load_cert_chain(str(keys.admin_cert), str(keys.admin_key))
    return ctx


def etcd_daemon(cfg: DevConfig) -> Daemon:
    client = f"http://127.0.0.1:{cfg.etcd_port}"
    peer = f"http://127.0.0.1:{cfg.etcd_peer_port}"

    def healthy() -> bool:
        body = http_get(f"{client}/health")
        return body is not None and json.loads(body).get("health") == "true"

    return Daemon(
        name="etcd",
        argv=[
            str(cfg.binary("etcd")),
            "--name=checkout-saga-dev",
            f"--data-dir={cfg.run_dir / 'etcd'}",
            f"--listen-client-urls={client}",
            f"--advertise-client-urls={client}",
            f"--listen-peer-urls={peer}",
            f"--initial-advertise-peer-urls={peer}",
            f"--initial-cluster=checkout-saga-dev={peer}",
            # A development store: losing the last writes on a power cut is fine,
            # and skipping fsync keeps the apiserver fast on slow disks.
            "--unsafe-no-fsync",
            "--log-level=warn",
        ],
        run_dir=cfg.run_dir,
        port=cfg.etcd_port,
        healthy=healthy,
    )


def node_flags(cfg: DevConfig, node_ip: str) -> dict[str, str | None]:
    """What a node needs of the apiserver (None drops a flag): reachable from pods at
    the node's address (the `kubernetes` Service's endpoint), the Node authorizer for
    kubelets, ServiceAccount admission, and a client certificate towards kubelets."""
    keys = pki(cfg)
    client_cert, client_key = node_pki.apiserver_kubelet_client(keys)
    return {
        "--bind-address": "0.0.0.0",  # noqa: S104  (pods reach it at the node's address)
        "--advertise-address": node_ip,
        "--authorization-mode": "Node,RBAC",
        "--enable-admission-plugins": "NodeRestriction",
        "--disable-admission-plugins": None,
        "--endpoint-reconciler-type": "lease",
        "--kubelet-client-certificate": str(client_cert),
        "--kubelet-client-key": str(client_key),
        "--kubelet-certificate-authority": str(keys.ca_cert),
        "--kubelet-preferred-address-types": "InternalIP",
    }


def _node_stamp(argv: list[str]) -> str:
    return "node " + hashlib.sha256("\n".join(argv).encode()).hexdigest()[:16]


def apiserver_daemon(cfg: DevConfig, node_ip: str | None = None) -> Daemon:
    keys = pki(cfg)

    def healthy() -> bool:
        return http_get(f"{cfg.apiserver_url}/readyz", admin_ssl_context(cfg)) == b"ok"

    audit_policy = cfg.run_dir / "audit-policy.yaml"
    argv = [
        f"--etcd-servers=http://127.0.0.1:{cfg.etcd_port}",
        "--bind-address=127.0.0.1",
        "--advertise-address=127.0.0.1",
        f"--secure-port={cfg.apiserver_port}",
        f"--cert-dir={cfg.run_dir / 'apiserver-certs'}",
        f"--tls-cert-file={keys.serving_cert}",
        f"--tls-private-key-file={keys.serving_key}",
        f"--client-ca-file={keys.ca_cert}",
        "--authorization-mode=RBAC",
        "--service-account-issuer=https://kubernetes.default.svc.cluster.local",
        f"--service-account-key-file={keys.sa_pub}",
        f"--service-account-signing-key-file={keys.sa_key}",
        "--service-cluster-ip-range=10.0.0.0/24",
        "--disable-admission-plugins=ServiceAccount",
        "--allow-privileged=true",
        # The advertise address is loopback, which the kubernetes Endpoints refuse.
        "--endpoint-reconciler-type=none",
        # Metadata-level audit of writes: how the project counts API writes per
        # checkout (see docs); reads are left out to keep the log small.
        f"--audit-policy-file={audit_policy}",
        f"--audit-log-path={cfg.run_dir / 'logs' / 'audit.log'}",
        "--audit-log-maxsize=100",
        "--audit-log-maxbackup=2",
        "--v=1",
    ]
    if node_ip is not None:
        override = node_flags(cfg, node_ip)
        argv = [a for a in argv if a.split("=", 1)[0] not in override]
        argv += [f"{flag}={value}" for flag, value in override.items() if value is not None]
    return Daemon(
        name="kube-apiserver",
        argv=[str(cfg.binary("kube-apiserver")), *argv],
        run_dir=cfg.run_dir,
        port=cfg.apiserver_port,
        healthy=healthy,
        start_timeout=60.0,
        # `up --node` restarts an apiserver started without (or with other) node flags.
        stamp=_node_stamp(argv) if node_ip else "",
    )


_AUDIT_POLICY = {
    "apiVersion": "audit.k8s.io/v1",
    "kind": "Policy",
    "omitStages": ["RequestReceived"],
    "rules": [
        {"level": "Metadata", "verbs": ["create", "update", "patch", "delete", "deletecollection"]},
        {"level": "None"},
    ],
}


def write_kubeconfig(cfg: DevConfig) -> Path:
    keys = pki(cfg)
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [
            {
                "name": "checkout-saga-dev",
                "cluster": {
                    "server": cfg.apiserver_url,
                    "certificate-authority": str(keys.ca_cert),
                },
            }
        ],
        "users": [
            {
                "name": "checkout-saga-admin",
                "user": {
                    "client-certificate": str(keys.admin_cert),
                    "client-key": str(keys.admin_key),
                },
            }
        ],
        "contexts": [
            {
                "name": "checkout-saga-dev",
                "context": {"cluster": "checkout-saga-dev", "user": "checkout-saga-admin"},
            }
        ],
        "current-context": "checkout-saga-dev",
    }
    cfg.kubeconfig.write_text(yaml.safe_dump(config, sort_keys=False))
    cfg.kubeconfig.chmod(0o600)
    return cfg.kubeconfig


def link_kubectl(cfg: DevConfig) -> Path:
    """Put the matching kubectl first on PATH via ``<run>/bin/kubectl``."""
    bindir = cfg.run_dir / "bin"
    bindir.mkdir(parents=True, exist_ok=True)
    for name in ("kubectl", "helm"):
        link = bindir / name
        target = cfg.binary(name)
        if target.exists() and (not link.is_symlink() or link.resolve() != target):
            link.unlink(missing_ok=True)
            link.symlink_to(target)
    return bindir / "kubectl"


def daemons(cfg: DevConfig) -> list[Daemon]:
    return [etcd_daemon(cfg), apiserver_daemon(cfg)]


def start(cfg: DevConfig, node_ip: str | None = None) -> list[str]:
    """Start (or reuse) etcd and kube-apiserver; return the names started now.

    With ``node_ip`` the apiserver serves a node (:func:`node_flags`); without, any
    running one is reused, a node's included."""
    for name in ("etcd", "kube-apiserver"):
        if not cfg.binary(name).exists():
            raise DaemonError(f"{cfg.binary(name)} missing: run scripts/build-binaries.sh")
    cfg.run_dir.mkdir(parents=True, exist_ok=True)
    pki(cfg).ensure()
    (cfg.run_dir / "audit-policy.yaml").write_text(yaml.safe_dump(_AUDIT_POLICY))
    (cfg.run_dir / "logs").mkdir(exist_ok=True)
    apiserver = apiserver_daemon(cfg, node_ip)
    if apiserver.pid() is None:  # what starts now has no node flags unless asked
        apiserver.stampfile.unlink(missing_ok=True)
    started = [d.name for d in (etcd_daemon(cfg), apiserver) if d.ensure()]
    write_kubeconfig(cfg)
    link_kubectl(cfg)
    return started


def stop(cfg: DevConfig) -> list[str]:
    return [d.name for d in reversed(daemons(cfg)) if d.stop()]
