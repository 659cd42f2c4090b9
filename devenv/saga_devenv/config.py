"""Where the local platform keeps its files and which loopback ports it uses.

Every value can be overridden from the environment (``CHECKOUT_SAGA_*``) so two
checkouts, or a developer's instance and a CI run, can live side by side: the servers'
ports and the apps' (``CHECKOUT_SAGA_API_PORT``, ...). A port outside 1..65535, or one
given to two things, stops :meth:`DevConfig.from_env` with a message naming the variables.
"""

from __future__ import annotations

import os
import secrets
from dataclasses import dataclass
from pathlib import Path

from saga_kit.settings import ConfigError, env_port

REPO_ROOT = Path(__file__).resolve().parents[2]


def _versions() -> dict[str, str]:
    values: dict[str, str] = {}
    for line in (REPO_ROOT / "devenv" / "gotools" / "versions.env").read_text().splitlines():
        line = line.strip()
        if line and not line.startswith("#") and "=" in line:
            key, _, value = line.partition("=")
            values[key.strip()] = value.strip()
    return values


# Field of DevConfig -> (CHECKOUT_SAGA_<name>_PORT, default).
PORTS = {
    "etcd_port": ("ETCD", 23790),
    "etcd_peer_port": ("ETCD_PEER", 23800),
    "apiserver_port": ("APISERVER", 16443),
    "postgres_port": ("POSTGRES", 15432),
    "redis_port": ("REDIS", 16379),
    "nats_port": ("NATS", 14222),
    "nats_monitor_port": ("NATS_MONITOR", 18222),
    # The apps (saga_devenv.apps), which are also told each other's addresses.
    "sandbox_port": ("SANDBOX", 18900),
    "listener_port": ("LISTENER", 18081),
    "user_http_port": ("USER_HTTP", 18100),
    "user_grpc_port": ("USER_GRPC", 18101),
    "product_http_port": ("PRODUCT_HTTP", 18200),
    "product_grpc_port": ("PRODUCT_GRPC", 18201),
    "operator_metrics_port": ("OPERATOR_METRICS", 18300),
    "api_port": ("API", 18080),
}


def port_variable(field: str) -> str:
    return f"CHECKOUT_SAGA_{PORTS[field][0]}_PORT"


def _ports() -> dict[str, int]:
    """Every port from its variable or its default; ConfigError naming the variable(s)
    for one that is not a port or one given twice."""
    ports = {
        field: env_port(port_variable(field), default) for field, (_, default) in PORTS.items()
    }
    holder: dict[int, str] = {}
    for field, port in ports.items():
        if (other := holder.setdefault(port, field)) != field:
            raise ConfigError(f"{port_variable(other)} and {port_variable(field)} are both {port}")
    return ports


@dataclass(frozen=True)
class DevConfig:
    """Paths, pinned versions and ports of one local platform instance."""

    cache_dir: Path
    run_dir: Path
    kube_version: str
    etcd_version: str
    nats_version: str
    helm_version: str
    etcd_port: int
    etcd_peer_port: int
    apiserver_port: int
    postgres_port: int
    redis_port: int
    nats_port: int
    nats_monitor_port: int
    sandbox_port: int
    listener_port: int
    user_http_port: int
    user_grpc_port: int
    product_http_port: int
    product_grpc_port: int
    operator_metrics_port: int
    api_port: int

    @classmethod
    def from_env(cls) -> DevConfig:
        versions = _versions()
        cache = Path(
            os.environ.get(
                "CHECKOUT_SAGA_CACHE",
                Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "checkout-saga",
            )
        )
        run_dir = Path(os.environ.get("CHECKOUT_SAGA_RUN_DIR", REPO_ROOT / ".run"))
        return cls(
            cache_dir=cache,
            run_dir=run_dir,
            kube_version=versions["KUBE_VERSION"],
            etcd_version=versions["ETCD_VERSION"],
            nats_version=versions["NATS_SERVER_VERSION"],
            helm_version=versions["HELM_VERSION"],
            **_ports(),
        )

    def secret(self, name: str, make: str | None = None) -> str:
        """The local secret ``name`` in ``<run>/secrets`` (mode 0600), created (random,
        or ``make``) on first use."""
        return self.secret_file(name, make).read_text().strip()

    def secret_file(self, name: str, make: str | None = None) -> Path:
        folder = self.run_dir / "secrets"
        path = folder / name
        if not path.exists():
            folder.mkdir(parents=True, exist_ok=True)
            folder.chmod(0o700)
            path.write_text(make or secrets.token_urlsafe(32))
            path.chmod(0o600)
        return path

    @property
    def bin_dir(self) -> Path:
        return self.cache_dir / "bin"

    def binary(self, name: str) -> Path:
        version = {
            "kube-apiserver": self.kube_version,
            "kubectl": self.kube_version,
            "etcd": self.etcd_version,
            "nats-server": self.nats_version,
            "helm": self.helm_version,
        }[name]
        return self.bin_dir / f"{name}-{version}"

    @property
    def kubeconfig(self) -> Path:
        return self.run_dir / "kubeconfig"

    @property
    def apiserver_url(self) -> str:
        return f"https://127.0.0.1:{self.apiserver_port}"

    @property
    def redis_password(self) -> str:
        """Redis' ``requirepass`` (``<run>/secrets/redis-password``): it is always set, so
        the same URLs work whether Redis listens on loopback only or for pods too."""
        return self.secret("redis-password")

    @property
    def redis_url(self) -> str:
        return self.redis_url_at("127.0.0.1")

    def redis_url_at(self, host: str) -> str:
        """Database 0 at ``host`` (loopback, or the node's address for pods), password included."""
        return f"redis://:{self.redis_password}@{host}:{self.redis_port}/0"

    @property
    def redis_display_url(self) -> str:
        """The URL without its password, to print."""
        return f"redis://127.0.0.1:{self.redis_port}/0"

    @property
    def nats_url(self) -> str:
        return self.nats_url_at("127.0.0.1")

    def nats_url_at(self, host: str) -> str:
        return f"nats://{host}:{self.nats_port}"
