"""Certificates of the node's components, signed by the control plane's CA.

Each component has the identity Kubernetes' built-in RBAC roles expect
(``system:kube-controller-manager``, ``system:kube-scheduler``, ``system:kube-proxy``,
``system:node:<name>`` in ``system:nodes`` for the Node authorizer). The kubelet's
serving certificate is signed by the same CA so the apiserver verifies it when it
proxies ``kubectl logs`` and ``exec``; the apiserver's client certificate towards
kubelets is in ``system:masters``.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from .pki import Pki

_VALIDITY = dt.timedelta(days=3650)


@dataclass(frozen=True)
class Identity:
    """Who a certificate names: common name, groups, and (for a server) its addresses."""

    file: str
    common_name: str
    groups: tuple[str, ...] = ()
    server_names: tuple[str, ...] = ()
    server_ips: tuple[str, ...] = ()


def ensure(ca: Pki, identity: Identity) -> tuple[Path, Path]:
    """The certificate and key for ``identity`` under ``<pki>/node``, made once."""
    folder = ca.root / "node"
    cert_path, key_path = folder / f"{identity.file}.crt", folder / f"{identity.file}.key"
    if cert_path.exists() and key_path.exists():
        return cert_path, key_path
    folder.mkdir(parents=True, exist_ok=True)
    folder.chmod(0o700)
    ca_key = serialization.load_pem_private_key(ca.ca_key.read_bytes(), password=None)
    ca_cert = x509.load_pem_x509_certificate(ca.ca_cert.read_bytes())
    if not isinstance(ca_key, ec.EllipticCurvePrivateKey):
        raise TypeError(f"{ca.ca_key} is not the EC key this platform makes")
    key = ec.generate_private_key(ec.SECP256R1())
    names = [x509.NameAttribute(NameOID.ORGANIZATION_NAME, g) for g in identity.groups]
    names.append(x509.NameAttribute(NameOID.COMMON_NAME, identity.common_name))
    now = dt.datetime.now(dt.UTC)
    server = bool(identity.server_names or identity.server_ips)
    usage = ExtendedKeyUsageOID.SERVER_AUTH if server else ExtendedKeyUsageOID.CLIENT_AUTH
    builder = (
        x509.CertificateBuilder()
        .subject_name(x509.Name(names))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + _VALIDITY)
        .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
    )
    if server:
        san: list[x509.GeneralName] = [x509.DNSName(n) for n in identity.server_names]
        san += [x509.IPAddress(ipaddress.ip_address(ip)) for ip in identity.server_ips]
        builder = builder.add_extension(x509.SubjectAlternativeName(san), critical=False)
    cert = builder.sign(ca_key, hashes.SHA256())
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    key_path.chmod(0o600)
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return cert_path, key_path


def apiserver_kubelet_client(ca: Pki) -> tuple[Path, Path]:
    """What the apiserver shows a kubelet (logs, exec, port-forward)."""
    return ensure(
        ca,
        Identity(
            "apiserver-kubelet-client", "kube-apiserver-kubelet-client", groups=("system:masters",)
        ),
    )
