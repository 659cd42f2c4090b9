"""Where the apiserver is and how to prove who we are: in a Pod its service account,
elsewhere the kubeconfig's current context ($KUBECONFIG, else ~/.kube/config).

Supported: server, certificate-authority(-data), client-certificate(-data) with
client-key(-data), token, tokenFile, insecure-skip-tls-verify. Exec plugins,
auth-provider and basic auth are refused with a :class:`ConfigError` naming them.
A client certificate goes through files (``ssl.load_cert_chain`` reads only files): a
private directory, mode 0600, removed as soon as the key is loaded. Token files are
read again every minute: a Pod's bound service-account token rotates.
"""

from __future__ import annotations

import base64
import contextlib
import os
import ssl
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

SERVICE_ACCOUNT = Path("/var/run/secrets/kubernetes.io/serviceaccount")
TOKEN_REREAD_SECONDS = 60.0


class ConfigError(Exception):
    """The connection settings cannot be used (missing, malformed or unsupported)."""


@dataclass
class Connection:
    """The apiserver's base URL, its TLS context and the bearer token (if any)."""

    server: str
    ssl_context: ssl.SSLContext | None  # None: plain http (a local test server)
    token: str | None = field(default=None, repr=False)
    token_file: Path | None = None
    _read_at: float = field(default=-TOKEN_REREAD_SECONDS, repr=False)

    def authorization(self) -> str | None:
        """The Authorization header's value, the token file re-read once a minute."""
        if self.token_file is not None:
            now = time.monotonic()
            if now - self._read_at >= TOKEN_REREAD_SECONDS or self.token is None:
                try:
                    self.token = self.token_file.read_text().strip()
                except OSError as exc:
                    if self.token is None:
                        raise ConfigError(
                            f"cannot read token file {self.token_file}: {exc}"
                        ) from exc
                    # A rotation in progress: keep the token we have, try again soon.
                self._read_at = now
        return f"Bearer {self.token}" if self.token else None


def load_config(kubeconfig: str | os.PathLike[str] | None = None) -> Connection:
    """In a Pod (KUBERNETES_SERVICE_HOST set, no file given): its service account;
    elsewhere the kubeconfig at ``kubeconfig``, $KUBECONFIG or ~/.kube/config."""
    if kubeconfig is None and os.environ.get("KUBERNETES_SERVICE_HOST"):
        return in_cluster()
    paths = str(kubeconfig) if kubeconfig is not None else os.environ.get("KUBECONFIG", "")
    files = [Path(p).expanduser() for p in paths.split(os.pathsep) if p]
    return load_kubeconfig(files or [Path("~/.kube/config").expanduser()])


def in_cluster(account: Path = SERVICE_ACCOUNT) -> Connection:
    host = os.environ.get("KUBERNETES_SERVICE_HOST", "")
    port = os.environ.get("KUBERNETES_SERVICE_PORT", "443")
    if not host:
        raise ConfigError("in-cluster: KUBERNETES_SERVICE_HOST is not set")
    token_file = account / "token"
    ca = account / "ca.crt"
    if not token_file.is_file() or not ca.is_file():
        raise ConfigError(f"in-cluster: no service account token and ca.crt in {account}")
    host = f"[{host}]" if ":" in host else host  # an IPv6 address
    try:
        context = ssl.create_default_context(cafile=str(ca))
    except (ssl.SSLError, OSError) as exc:
        raise ConfigError(f"in-cluster: unusable {ca} ({exc})") from exc
    connection = Connection(f"https://{host}:{port}", context, token_file=token_file)
    connection.authorization()  # fail now, not at the first request
    return connection


def load_kubeconfig(files: list[Path]) -> Connection:
    """The current context of these kubeconfig files (merged: the first file that names
    a cluster, user or context wins, as kubectl does)."""
    merged: dict[str, dict[str, tuple[Path, dict[str, Any]]]] = {
        "clusters": {},
        "users": {},
        "contexts": {},
    }
    current = ""
    for path in files:
        document = _read_yaml(path)
        current = current or str(document.get("current-context") or "")
        for section, entries in merged.items():
            for entry in document.get(section) or []:
                if isinstance(entry, dict) and isinstance(entry.get("name"), str):
                    body = entry.get(section[:-1]) or {}
                    entries.setdefault(entry["name"], (path.parent, body))
    if not current:
        raise ConfigError(f"kubeconfig {_names(files)}: no current-context")
    if current not in merged["contexts"]:
        raise ConfigError(f"kubeconfig {_names(files)}: context {current!r} is not defined")
    context = merged["contexts"][current][1]
    cluster_name, user_name = str(context.get("cluster")), str(context.get("user"))
    if cluster_name not in merged["clusters"]:
        raise ConfigError(f"kubeconfig context {current!r}: cluster {cluster_name!r} not defined")
    base, cluster = merged["clusters"][cluster_name]
    user_base, user = merged["users"].get(user_name, (base, {}))
    server = str(cluster.get("server") or "").rstrip("/")
    if not server.startswith(("https://", "http://")):
        raise ConfigError(f"kubeconfig cluster {cluster_name!r}: no https:// server")
    context_ssl = _tls(cluster, user, base, user_base) if server.startswith("https") else None
    return Connection(server, context_ssl, **_token(user, user_base, user_name))


def _read_yaml(path: Path) -> dict[str, Any]:
    try:
        document = yaml.safe_load(path.read_text())
    except OSError as exc:
        raise ConfigError(f"cannot read kubeconfig {path}: {exc}") from exc
    except yaml.YAMLError as exc:
        raise ConfigError(f"kubeconfig {path} is not YAML: {exc}") from exc
    if not isinstance(document, dict):
        raise ConfigError(f"kubeconfig {path} is not a mapping")
    return document


def _names(files: list[Path]) -> str:
    return os.pathsep.join(map(str, files))


def _token(user: dict[str, Any], base: Path, name: Any) -> dict[str, Any]:
    for unsupported in ("exec", "auth-provider", "username", "password"):
        if user.get(unsupported):
            raise ConfigError(
                f"kubeconfig user {name!r}: {unsupported!r} is not supported "
                "(use a token, a token file or a client certificate)"
            )
    if user.get("token"):
        return {"token": str(user["token"])}
    if user.get("tokenFile"):
        return {"token_file": base / str(user["tokenFile"])}
    return {}


def _tls(
    cluster: dict[str, Any], user: dict[str, Any], base: Path, user_base: Path
) -> ssl.SSLContext:
    # The cluster's CA only, when it names one (the system's CAs otherwise).
    if cluster.get("insecure-skip-tls-verify"):
        context = ssl.create_default_context()
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    elif cluster.get("certificate-authority-data"):
        pem = _decoded(cluster["certificate-authority-data"], "certificate-authority-data")
        context = _trusting(cadata=pem.decode("ascii", "replace"))
    elif cluster.get("certificate-authority"):
        context = _trusting(cafile=str(base / str(cluster["certificate-authority"])))
    else:
        context = ssl.create_default_context()
    cert = _pem(user, "client-certificate", user_base)
    key = _pem(user, "client-key", user_base)
    if (cert is None) != (key is None):
        raise ConfigError("kubeconfig user: a client certificate needs its key (and vice versa)")
    if cert is not None and key is not None:
        _load_cert_chain(context, cert, key)
    return context


def _trusting(cafile: str | None = None, cadata: str | None = None) -> ssl.SSLContext:
    try:
        return ssl.create_default_context(cafile=cafile, cadata=cadata)
    except (ssl.SSLError, OSError) as exc:
        raise ConfigError(f"kubeconfig cluster: unusable certificate authority ({exc})") from exc


def _pem(user: dict[str, Any], name: str, base: Path) -> bytes | None:
    if user.get(f"{name}-data"):
        return _decoded(user[f"{name}-data"], f"{name}-data")
    if user.get(name):
        path = base / str(user[name])
        try:
            return path.read_bytes()
        except OSError as exc:
            raise ConfigError(f"kubeconfig user: cannot read {name} {path}: {exc}") from exc
    return None


def _decoded(data: Any, name: str) -> bytes:
    try:
        return base64.b64decode(str(data), validate=True)
    except ValueError as exc:
        raise ConfigError(f"kubeconfig: {name} is not base64") from exc


def _load_cert_chain(context: ssl.SSLContext, cert: bytes, key: bytes) -> None:
    with tempfile.TemporaryDirectory(prefix="apiserver-") as private:  # mode 0700
        paths = []
        for name, pem in (("client.crt", cert), ("client.key", key)):
            path = os.path.join(private, name)
            descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with open(descriptor, "wb") as out:
                out.write(pem)
            paths.append(path)
        try:
            context.load_cert_chain(paths[0], paths[1])
        except (ssl.SSLError, OSError) as exc:  # never the key's text in the message
            raise ConfigError(f"kubeconfig user: unusable client certificate/key ({exc})") from None
        finally:
            for path in paths:
                with contextlib.suppress(OSError):
                    os.remove(path)
