"""saga_kit.apiserver: connection settings from a kubeconfig or a Pod's service account,
and the apiserver's refusals read from its Status object."""

from __future__ import annotations

import base64
import datetime as dt
import ipaddress
import ssl
import time
from pathlib import Path
from typing import Any

import pytest
import yaml
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from saga_kit.apiserver import ApiError, ConfigError, in_cluster, load_config


def _pem_pair(common_name: str) -> tuple[bytes, bytes]:
    """A self-signed certificate and its key (PEM)."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=1))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .sign(key, hashes.SHA256())
    )
    key_pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    return cert.public_bytes(serialization.Encoding.PEM), key_pem


def _kubeconfig(path: Path, cluster: dict[str, Any], user: dict[str, Any]) -> Path:
    path.write_text(
        yaml.safe_dump(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "current-context": "here",
                "contexts": [{"name": "here", "context": {"cluster": "c", "user": "u"}}],
                "clusters": [{"name": "c", "cluster": cluster}],
                "users": [{"name": "u", "user": user}],
            }
        )
    )
    return path


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def test_kubeconfig_with_inline_certificates(tmp_path: Path) -> None:
    ca, _ = _pem_pair("ca")
    cert, key = _pem_pair("me")
    path = _kubeconfig(
        tmp_path / "config",
        {"server": "https://127.0.0.1:6443/", "certificate-authority-data": _b64(ca)},
        {"client-certificate-data": _b64(cert), "client-key-data": _b64(key)},
    )
    connection = load_config(path)
    assert connection.server == "https://127.0.0.1:6443"
    assert connection.ssl_context is not None
    assert connection.ssl_context.verify_mode == ssl.CERT_REQUIRED
    assert [c["subject"] for c in connection.ssl_context.get_ca_certs()] == [
        ((("commonName", "ca"),),)
    ]
    assert connection.authorization() is None
    assert key.decode() not in repr(connection)


def test_kubeconfig_with_files_relative_to_it_and_a_token(tmp_path: Path) -> None:
    ca, _ = _pem_pair("ca")
    cert, key = _pem_pair("me")
    (tmp_path / "pki").mkdir()
    (tmp_path / "pki" / "ca.crt").write_bytes(ca)
    (tmp_path / "pki" / "me.crt").write_bytes(cert)
    (tmp_path / "pki" / "me.key").write_bytes(key)
    path = _kubeconfig(
        tmp_path / "config",
        {"server": "https://127.0.0.1:6443", "certificate-authority": "pki/ca.crt"},
        {"client-certificate": "pki/me.crt", "client-key": "pki/me.key", "token": "s3cret"},
    )
    connection = load_config(path)
    assert connection.ssl_context is not None and connection.ssl_context.get_ca_certs()
    assert connection.authorization() == "Bearer s3cret"
    assert "s3cret" not in repr(connection)


def test_kubeconfig_from_the_environment_and_insecure(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "token").write_text("from-file\n")
    path = _kubeconfig(
        tmp_path / "config",
        {"server": "https://10.0.0.1", "insecure-skip-tls-verify": True},
        {"tokenFile": "token"},
    )
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    monkeypatch.setenv("KUBECONFIG", str(path))
    connection = load_config()
    assert connection.ssl_context is not None
    assert connection.ssl_context.verify_mode == ssl.CERT_NONE
    assert connection.authorization() == "Bearer from-file"


@pytest.mark.parametrize(
    ("user", "named"),
    [
        ({"exec": {"command": "aws", "apiVersion": "client.authentication.k8s.io/v1"}}, "exec"),
        ({"auth-provider": {"name": "oidc"}}, "auth-provider"),
        ({"username": "admin", "password": "pw"}, "username"),
    ],
)
def test_unsupported_authentication_is_named(
    tmp_path: Path, user: dict[str, Any], named: str
) -> None:
    path = _kubeconfig(tmp_path / "config", {"server": "https://127.0.0.1"}, user)
    with pytest.raises(ConfigError, match=f"'{named}' is not supported"):
        load_config(path)


@pytest.mark.parametrize(
    ("content", "says"),
    [
        ("[1, 2", "not YAML"),
        ("- a list", "not a mapping"),
        ("clusters: []", "no current-context"),
        ("current-context: gone", "'gone' is not defined"),
    ],
)
def test_a_broken_kubeconfig_is_a_clear_error(tmp_path: Path, content: str, says: str) -> None:
    (tmp_path / "config").write_text(content)
    with pytest.raises(ConfigError, match=says):
        load_config(tmp_path / "config")
    with pytest.raises(ConfigError, match="cannot read kubeconfig"):
        load_config(tmp_path / "missing")


def test_a_certificate_without_its_key_is_refused(tmp_path: Path) -> None:
    cert, _ = _pem_pair("me")
    path = _kubeconfig(
        tmp_path / "config",
        {"server": "https://127.0.0.1"},
        {"client-certificate-data": _b64(cert)},
    )
    with pytest.raises(ConfigError, match="needs its key"):
        load_config(path)


def test_in_cluster_reads_the_rotating_token_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    ca, _ = _pem_pair("cluster-ca")
    (tmp_path / "ca.crt").write_bytes(ca)
    (tmp_path / "token").write_text("first")
    monkeypatch.setenv("KUBERNETES_SERVICE_HOST", "fd00::1")
    monkeypatch.setenv("KUBERNETES_SERVICE_PORT", "6443")
    connection = in_cluster(tmp_path)
    assert connection.server == "https://[fd00::1]:6443"
    assert connection.authorization() == "Bearer first"
    (tmp_path / "token").write_text("rotated")
    assert connection.authorization() == "Bearer first"  # read again once a minute
    now = time.monotonic()
    monkeypatch.setattr(time, "monotonic", lambda: now + 61)
    assert connection.authorization() == "Bearer rotated"


def test_in_cluster_without_a_service_account_is_a_clear_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("KUBERNETES_SERVICE_HOST", "10.0.0.1")
    with pytest.raises(ConfigError, match="no service account token"):
        in_cluster(tmp_path)
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST")
    with pytest.raises(ConfigError, match="KUBERNETES_SERVICE_HOST is not set"):
        in_cluster(tmp_path)


def test_an_api_error_reads_the_status_object() -> None:
    status = (
        b'{"kind":"Status","apiVersion":"v1","status":"Failure","message":'
        b'"checkouts.saga.dev \\"co-1\\" not found","reason":"NotFound","code":404}'
    )
    error = ApiError.from_answer(404, "Not Found", status)
    assert (error.status, error.reason) == (404, "NotFound")
    assert error.message == 'checkouts.saga.dev "co-1" not found'
    assert isinstance(error.body, dict) and error.body["code"] == 404
    proxy = ApiError.from_answer(502, "Bad Gateway", b"<html>upstream down</html>")
    assert (proxy.status, proxy.reason, proxy.message) == (
        502,
        "Bad Gateway",
        "<html>upstream down</html>",
    )
    gone = ApiError.from_status({"kind": "Status", "code": 410, "reason": "Expired"})
    assert (gone.status, gone.reason) == (410, "Expired")
    assert ApiError.from_status({"message": "no code"}).status == 500
