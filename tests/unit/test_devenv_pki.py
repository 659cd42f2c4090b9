"""The control plane's certificates: a CA, a serving cert, an admin in system:masters."""

from __future__ import annotations

import ipaddress
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from saga_devenv.pki import Pki


def load(path: Path) -> x509.Certificate:
    return x509.load_pem_x509_certificate(path.read_bytes())


def test_certificates_chain_to_the_ca_with_the_right_names(tmp_path: Path) -> None:
    pki = Pki(tmp_path / "pki")
    pki.ensure()
    ca, serving, admin = load(pki.ca_cert), load(pki.serving_cert), load(pki.admin_cert)
    assert isinstance(ca.public_key(), ec.EllipticCurvePublicKey)
    for cert in (serving, admin):
        cert.verify_directly_issued_by(ca)
    san = serving.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert ipaddress.ip_address("127.0.0.1") in san.get_values_for_type(x509.IPAddress)
    assert "kubernetes.default.svc" in san.get_values_for_type(x509.DNSName)
    orgs = admin.subject.get_attributes_for_oid(NameOID.ORGANIZATION_NAME)
    assert [o.value for o in orgs] == ["system:masters"]
    usage = admin.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert ExtendedKeyUsageOID.CLIENT_AUTH in usage


def test_keys_are_private_and_reused(tmp_path: Path) -> None:
    pki = Pki(tmp_path / "pki")
    pki.ensure()
    before = pki.ca_cert.read_bytes()
    pki.ensure()
    assert pki.ca_cert.read_bytes() == before
    for key in (pki.ca_key, pki.serving_key, pki.admin_key, pki.sa_key):
        assert key.stat().st_mode & 0o077 == 0
