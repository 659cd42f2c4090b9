"""The project's own processes, run locally on top of the platform.

User and Product services, the Midtrans sandbox, the operator and the arq
expiry worker, each a supervised :class:`Daemon` with its log in the run
folder and a health check. Local secrets (service token, JWT key, sandbox
server key) are generated once into ``<run>/secrets`` (mode 0600) and passed
through the environment; none is printed.
"""

from __future__ import annotations

import secrets
import socket
import sys
import urllib.request
from pathlib import Path

from .config import DevConfig
from .process import Daemon
from .servers import postgres_dsn

USER_HTTP, USER_GRPC = 18100, 18101
PRODUCT_HTTP, PRODUCT_GRPC = 18200, 18201
OPERATOR_METRICS = 18300
CHECKOUT_API = 18080
LISTENER = 18081
SANDBOX = 18900


def _secret(cfg: DevConfig, name: str, factory: str = "token") -> str:
    folder = cfg.run_dir / "secrets"
    folder.mkdir(parents=True, exist_ok=True)
    folder.chmod(0o700)
    path = folder / name
    if not path.exists():
        value = secrets.token_urlsafe(32) if factory == "token" else factory
        path.write_text(value)
        path.chmod(0o600)
    return path.read_text().strip()


def _http_ok(url: str) -> bool:
    with urllib.request.urlopen(url, timeout=1.0) as resp:  # noqa: S310 (loopback)
        return bool(resp.status == 200)


def _redis_key_exists(port: int, key: str) -> bool:
    with socket.create_connection(("127.0.0.1", port), timeout=0.5) as sock:
        sock.sendall(f"EXISTS {key}\r\n".encode())
        return sock.recv(16).startswith(b":1")


def common_env(cfg: DevConfig) -> dict[str, str]:
    return {
        "SERVICE_TOKENS": _secret(cfg, "service-token"),
        "PYTHONUNBUFFERED": "1",
    }


def sandbox_key(cfg: DevConfig) -> str:
    return _secret(cfg, "midtrans-server-key", "SB-Mid-server-" + secrets.token_hex(12))


def daemons(cfg: DevConfig) -> list[Daemon]:
    py = sys.executable
    try:
        dsn = postgres_dsn(cfg)
    except FileNotFoundError:  # Postgres never initialised: only stop/status can ask
        dsn = ""
    env = common_env(cfg)
    key = sandbox_key(cfg)
    sandbox_url = f"http://127.0.0.1:{SANDBOX}"
    return [
        Daemon(
            name="midtrans-sandbox",
            argv=[py, "-m", "midtrans_sandbox"],
            run_dir=cfg.run_dir,
            port=SANDBOX,
            healthy=lambda: _http_ok(f"{sandbox_url}/_sandbox/health"),
            env={
                **env,
                "MIDTRANS_SANDBOX_SERVER_KEY": key,
                "MIDTRANS_SANDBOX_PORT": str(SANDBOX),
                "MIDTRANS_SANDBOX_NOTIFICATION_URL": (
                    f"http://127.0.0.1:{LISTENER}/midtrans/notifications"
                ),
            },
        ),
        Daemon(
            name="payment-listener",
            argv=[py, "-m", "payment_listener"],
            run_dir=cfg.run_dir,
            port=LISTENER,
            healthy=lambda: _http_ok(f"http://127.0.0.1:{LISTENER}/readyz"),
            env={
                **env,
                "MIDTRANS_SERVER_KEY": key,
                "LISTENER_NATS_URL": cfg.nats_url,
                "LISTENER_PORT": str(LISTENER),
            },
        ),
        Daemon(
            name="user-service",
            argv=[py, "-m", "user_service"],
            run_dir=cfg.run_dir,
            port=USER_HTTP,
            healthy=lambda: _http_ok(f"http://127.0.0.1:{USER_HTTP}/readyz"),
            env={
                **env,
                "USER_DATABASE_URL": dsn,
                "USER_REDIS_URL": cfg.redis_url,
                "USER_JWT_SECRET": _secret(cfg, "jwt-secret"),
                "USER_HTTP_PORT": str(USER_HTTP),
                "USER_GRPC_PORT": str(USER_GRPC),
            },
        ),
        Daemon(
            name="product-service",
            argv=[py, "-m", "product_service"],
            run_dir=cfg.run_dir,
            port=PRODUCT_HTTP,
            healthy=lambda: _http_ok(f"http://127.0.0.1:{PRODUCT_HTTP}/readyz"),
            env={
                **env,
                "PRODUCT_DATABASE_URL": dsn,
                "PRODUCT_NATS_URL": cfg.nats_url,
                "PRODUCT_USER_SERVICE": f"127.0.0.1:{USER_GRPC}",
                "PRODUCT_HTTP_PORT": str(PRODUCT_HTTP),
                "PRODUCT_GRPC_PORT": str(PRODUCT_GRPC),
            },
        ),
        Daemon(
            name="checkout-operator",
            argv=[py, "-m", "checkout_operator"],
            run_dir=cfg.run_dir,
            port=OPERATOR_METRICS,
            healthy=lambda: _http_ok(f"http://127.0.0.1:{OPERATOR_METRICS}/metrics"),
            env={**env, **operator_env(cfg, dsn, key, sandbox_url)},
        ),
        Daemon(
            name="checkout-api",
            argv=[py, "-m", "checkout_api"],
            run_dir=cfg.run_dir,
            port=CHECKOUT_API,
            healthy=lambda: _http_ok(f"http://127.0.0.1:{CHECKOUT_API}/readyz"),
            env={
                **env,
                "KUBECONFIG": str(cfg.kubeconfig),
                "CHECKOUT_DATABASE_URL": dsn,
                "CHECKOUT_USER_SERVICE": f"127.0.0.1:{USER_GRPC}",
                "CHECKOUT_PRODUCT_SERVICE": f"127.0.0.1:{PRODUCT_GRPC}",
                "CHECKOUT_API_PORT": str(CHECKOUT_API),
                "CHECKOUT_API_NAMESPACE": "default",
            },
        ),
        Daemon(
            name="expiry-worker",
            argv=[py, "-m", "checkout_operator.worker"],
            run_dir=cfg.run_dir,
            port=0,
            healthy=lambda: _redis_key_exists(cfg.redis_port, "arq:queue:health-check"),
            env={**env, **operator_env(cfg, dsn, key, sandbox_url)},
        ),
    ]


def operator_env(cfg: DevConfig, dsn: str, key: str, sandbox_url: str) -> dict[str, str]:
    return {
        "KUBECONFIG": str(cfg.kubeconfig),
        # The local system lives in `default` (where the REST API creates Checkouts);
        # tests use namespaces of their own that this operator must not touch.
        "CHECKOUT_NAMESPACE": "default",
        "CHECKOUT_DATABASE_URL": dsn,
        "CHECKOUT_NATS_URL": cfg.nats_url,
        "CHECKOUT_REDIS_URL": cfg.redis_url,
        "CHECKOUT_USER_SERVICE": f"127.0.0.1:{USER_GRPC}",
        "CHECKOUT_PRODUCT_SERVICE": f"127.0.0.1:{PRODUCT_GRPC}",
        "CHECKOUT_METRICS_PORT": str(OPERATOR_METRICS),
        "CHECKOUT_POLL_INTERVAL_SECONDS": "5",
        "CHECKOUT_POLL_MIN_AGE_SECONDS": "2",
        "MIDTRANS_SERVER_KEY": key,
        "MIDTRANS_SNAP_URL": sandbox_url,
        "MIDTRANS_CORE_URL": sandbox_url,
    }


def start(cfg: DevConfig) -> list[str]:
    return [d.name for d in daemons(cfg) if d.ensure()]


def stop(cfg: DevConfig) -> list[str]:
    return [d.name for d in reversed(daemons(cfg)) if d.stop()]


def log_dir(cfg: DevConfig) -> Path:
    return cfg.run_dir / "logs"
