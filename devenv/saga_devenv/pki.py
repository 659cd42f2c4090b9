"""Certificates and keys for the local kube-apiserver.

A private CA signs the apiserver's serving certificate and an admin client
certificate in the ``system:masters`` group (the only identity RBAC lets do
anything before any RoleBinding exists). A separate RSA key pair signs
service-account tokens. Files are made once per run folder and reused.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

_VALIDITY = dt.timedelta(days=3650)
_SERVING_NAMES = ["localhost", "kubernetes", "kubernetes.default", "kubernetes.default.svc"]
_SERVING_IPS = ["127.0.0.1", "10.0.0.1"]


@dataclass(frozen=True)
class Pki:
    """Paths of the control plane's certificates and keys."""

    root: Path

    ca_cert = property(lambda self: self.root / "ca.crt")
    ca_key = property(lambda self: self.root / "ca.key")
    serving_cert = property(lambda self: self.root / "apiserver.crt")
    serving_key = property(lambda self: self.root / "apiserver.key")
    admin_cert = property(lambda self: self.root / "admin.crt")
    admin_key = property(lambda self: self.root / "admin.key")
    sa_key = property(lambda self: self.root / "sa.key")
    sa_pub = property(lambda self: self.root / "sa.pub")

    def ensure(self) -> None:
        if all(p.exists() for p in (self.ca_cert, self.serving_cert, self.admin_cert, self.sa_pub)):
            return
        self.root.mkdir(parents=True, exist_ok=True)
        self.root.chmod(0o700)
        ca_key = ec.generate_private_key(ec.SECP256R1())
        ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "checkout-saga-dev-ca")])
        ca_cert = (
            _builder(ca_name, ca_name, ca_key.public_key())
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .add_extension(_key_usage(cert_sign=True), critical=True)
            .sign(ca_key, hashes.SHA256())
        )
        _write_key(self.ca_key, ca_key)
        _write_cert(self.ca_cert, ca_cert)

        serving_key = ec.generate_private_key(ec.SECP256R1())
        san = [x509.DNSName(n) for n in _SERVING_NAMES] + [
            x509.IPAddress(ipaddress.ip_address(ip)) for ip in _SERVING_IPS
        ]
        serving = (
            _builder(_cn("kube-apiserver"), ca_name, serving_key.public_key())
            .add_extension(x509.SubjectAlternativeName(san), critical=False)
            .add_extension(_key_usage(), critical=True)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
            .sign(ca_key, hashes.SHA256())
        )
        _write_key(self.serving_key, serving_key)
        _write_cert(self.serving_cert, serving)

        admin_key = ec.generate_private_key(ec.SECP256R1())
        admin_name = x509.Name(
            [
                x509.NameAttribute(NameOID.ORGANIZATION_NAME, "system:masters"),
                x509.NameAttribute(NameOID.COMMON_NAME, "checkout-saga-admin"),
            ]
        )
        admin = (
            _builder(admin_name, ca_name, admin_key.public_key())
            .add_extension(_key_usage(), critical=True)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
            .sign(ca_key, hashes.SHA256())
        )
        _write_key(self.admin_key, admin_key)
        _write_cert(self.admin_cert, admin)

        sa_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        _write_key(self.sa_key, sa_key)
        self.sa_pub.write_bytes(
            sa_key.public_key().public_bytes(
                serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
            )
        )


def _cn(name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])


def _builder(
    subject: x509.Name, issuer: x509.Name, public_key: ec.EllipticCurvePublicKey
) -> x509.CertificateBuilder:
    now = dt.datetime.now(dt.UTC)
    return (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer)
        .public_key(public_key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + _VALIDITY)
    )


def _key_usage(cert_sign: bool = False) -> x509.KeyUsage:
    return x509.KeyUsage(
        digital_signature=True,
        content_commitment=False,
        key_encipherment=False,
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=cert_sign,
        crl_sign=cert_sign,
        encipher_only=False,
        decipher_only=False,
    )


def _write_key(path: Path, key: ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey) -> None:
    path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    path.chmod(0o600)


def _write_cert(path: Path, cert: x509.Certificate) -> None:
    path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
