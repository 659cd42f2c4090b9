"""The project's own processes, run locally on top of the platform.

User and Product services, the REST checkout API, the webhook listener, the
Midtrans sandbox, the operator and the arq expiry worker: one table row each,
run as supervised :class:`Daemon` s with logs in the run folder. Local secrets
(service token, token signing key, sandbox server key) are generated once into
``<run>/secrets`` (mode 0600) when the system starts, and passed through the
environment; none is printed. ``status`` and ``stop`` create nothing.

Each app's ports come from the :class:`DevConfig` (``CHECKOUT_SAGA_API_PORT``, ...), and
so do the addresses the apps are given of one another.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import secrets
import sys
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from saga_kit.access_tokens import new_private_key_pem
from saga_kit.nats_access import Role

from .config import REPO_ROOT, DevConfig
from .process import Daemon, http_get, redis_command
from .servers import nats_password_file, postgres_dsn

NOTIFICATIONS_PATH = "/midtrans/notifications"  # the listener's webhook
EXPIRY_HEALTH_KEY = "arq:queue:health-check"  # refreshed by the worker every 5 s
SOURCE_ROOTS = ("operator", "services", "gen/python")  # what the apps import


@dataclass(frozen=True)
class App:
    name: str
    module: str
    port: int  # 0: no port (the expiry worker)
    health_path: str  # HTTP path on `port`; "" = the worker's health key in Redis


def table(cfg: DevConfig) -> tuple[App, ...]:
    """Every app with the port it answers on in ``cfg``."""
    return (  # in start order: a process comes after what it calls
        App("midtrans-sandbox", "midtrans_sandbox", cfg.sandbox_port, "/_sandbox/health"),
        App("payment-listener", "payment_listener", cfg.listener_port, "/readyz"),
        App("user-service", "user_service", cfg.user_http_port, "/readyz"),
        App("product-service", "product_service", cfg.product_http_port, "/readyz"),
        App("checkout-operator", "checkout_operator", cfg.operator_metrics_port, "/readyz"),
        App("checkout-api", "checkout_api", cfg.api_port, "/readyz"),
        App("expiry-worker", "checkout_operator.worker", 0, ""),
    )


def url(port: int, path: str = "") -> str:
    """An app's address on loopback."""
    return f"http://127.0.0.1:{port}{path}"


# The names scripts used before the ports moved to DevConfig, now read from the
# environment when first used (examples/demo.py, benchmarks/, tests/chaos/).
_LEGACY: dict[str, Callable[[DevConfig], object]] = {
    "USER_HTTP": lambda cfg: cfg.user_http_port,
    "USER_GRPC": lambda cfg: cfg.user_grpc_port,
    "PRODUCT_HTTP": lambda cfg: cfg.product_http_port,
    "PRODUCT_GRPC": lambda cfg: cfg.product_grpc_port,
    "OPERATOR_METRICS": lambda cfg: cfg.operator_metrics_port,
    "CHECKOUT_API": lambda cfg: cfg.api_port,
    "LISTENER": lambda cfg: cfg.listener_port,
    "SANDBOX": lambda cfg: cfg.sandbox_port,
    "SANDBOX_URL": lambda cfg: url(cfg.sandbox_port),
    "APPS": table,
}


def __getattr__(name: str) -> Any:
    if name in _LEGACY:
        return _LEGACY[name](DevConfig.from_env())
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def sandbox_key(cfg: DevConfig) -> str:
    return cfg.secret("midtrans-server-key", "SB-Mid-server-" + secrets.token_hex(12))


def _nats(cfg: DevConfig, role: Role) -> dict[str, str]:
    """The app's own NATS user (see saga_kit.nats_access); the password by file."""
    return {"NATS_USER": role.value, "NATS_PASSWORD_FILE": str(nats_password_file(cfg, role))}


def _env(cfg: DevConfig) -> dict[str, dict[str, str]]:
    """Each app's environment (on top of the shared part)."""
    dsn = postgres_dsn(cfg)
    key = sandbox_key(cfg)
    users, products = f"127.0.0.1:{cfg.user_grpc_port}", f"127.0.0.1:{cfg.product_grpc_port}"
    sandbox = url(cfg.sandbox_port)
    operator = {
        "KUBECONFIG": str(cfg.kubeconfig),
        # The local system lives in `default` (where the REST API creates Checkouts);
        # tests use namespaces of their own that this operator must not touch.
        "CHECKOUT_NAMESPACE": "default",
        "CHECKOUT_DATABASE_URL": dsn,
        "CHECKOUT_NATS_URL": cfg.nats_url,
        "CHECKOUT_REDIS_URL": cfg.redis_url,
        "CHECKOUT_USER_SERVICE": users,
        "CHECKOUT_PRODUCT_SERVICE": products,
        "CHECKOUT_METRICS_PORT": str(cfg.operator_metrics_port),
        "CHECKOUT_POLL_INTERVAL_SECONDS": "5",
        "CHECKOUT_POLL_MIN_AGE_SECONDS": "2",
        "MIDTRANS_SERVER_KEY": key,
        "MIDTRANS_SNAP_URL": sandbox,
        "MIDTRANS_CORE_URL": sandbox,
    }
    return {
        "midtrans-sandbox": {
            "MIDTRANS_SANDBOX_SERVER_KEY": key,
            "MIDTRANS_SANDBOX_PORT": str(cfg.sandbox_port),
            "MIDTRANS_SANDBOX_NOTIFICATION_URL": url(cfg.listener_port, NOTIFICATIONS_PATH),
            # Kept across scripts/down and up, as Midtrans keeps every order: the audit
            # and the operator's status calls still find orders paid before a restart.
            "MIDTRANS_SANDBOX_STATE_FILE": str(cfg.run_dir / "midtrans-sandbox.sqlite3"),
        },
        "payment-listener": {
            "MIDTRANS_SERVER_KEY": key,
            "LISTENER_NATS_URL": cfg.nats_url,
            **_nats(cfg, Role.PAYMENT_LISTENER),
            "LISTENER_PORT": str(cfg.listener_port),
            # It settles a paid Checkout itself once Midtrans confirms the payment.
            "KUBECONFIG": str(cfg.kubeconfig),
            "CHECKOUT_NAMESPACE": operator["CHECKOUT_NAMESPACE"],
            "MIDTRANS_CORE_URL": operator["MIDTRANS_CORE_URL"],
        },
        "user-service": {
            "USER_DATABASE_URL": dsn,
            "USER_REDIS_URL": cfg.redis_url,
            "USER_SIGNING_KEYS": cfg.secret("signing-keys", new_private_key_pem()),
            "USER_HTTP_PORT": str(cfg.user_http_port),
            "USER_GRPC_PORT": str(cfg.user_grpc_port),
        },
        "product-service": {
            "PRODUCT_DATABASE_URL": dsn,
            "PRODUCT_NATS_URL": cfg.nats_url,
            **_nats(cfg, Role.PRODUCT_SERVICE),
            "PRODUCT_USER_SERVICE": users,
            "PRODUCT_HTTP_PORT": str(cfg.product_http_port),
            "PRODUCT_GRPC_PORT": str(cfg.product_grpc_port),
        },
        "checkout-operator": {**operator, **_nats(cfg, Role.OPERATOR)},
        "checkout-api": {
            "KUBECONFIG": str(cfg.kubeconfig),
            "CHECKOUT_DATABASE_URL": dsn,
            "CHECKOUT_USER_SERVICE": users,
            "CHECKOUT_PRODUCT_SERVICE": products,
            "CHECKOUT_API_PORT": str(cfg.api_port),
            "CHECKOUT_API_NAMESPACE": "default",
            "CHECKOUT_REDIS_URL": cfg.redis_url,  # rate limit, open-checkout bookkeeping
        },
        "expiry-worker": {**operator, **_nats(cfg, Role.EXPIRY_WORKER)},
    }


def code_fingerprint(root: Path = REPO_ROOT) -> str:
    """Which code an app started now would run: the checkout's path and every file under
    the source roots (any change restarts every app; which app imports what is not tracked)."""
    digest = hashlib.sha256(str(root.resolve()).encode())
    for base in SOURCE_ROOTS:
        for path in sorted((root / base).rglob("*")):
            if path.is_file() and "__pycache__" not in path.parts:
                with contextlib.suppress(FileNotFoundError):  # removed while we read
                    digest.update(f"\0{path.relative_to(root)}\0".encode() + path.read_bytes())
    return digest.hexdigest()


def _daemon(cfg: DevConfig, app: App, env: dict[str, str], code: str = "") -> Daemon:
    if app.health_path:
        health = url(app.port, app.health_path)

        def healthy() -> bool:
            return http_get(health) is not None

    else:

        def healthy() -> bool:
            answer = redis_command(
                cfg.redis_port, f"EXISTS {EXPIRY_HEALTH_KEY}", cfg.redis_password
            )
            return answer.startswith(b":1")

    return Daemon(
        name=app.name,
        argv=[sys.executable, "-m", app.module],
        run_dir=cfg.run_dir,
        port=app.port,
        healthy=healthy,
        env=env,
        # A running app started with another environment (e.g. before NATS needed
        # a user) or from other code is restarted rather than reused.
        stamp=(
            hashlib.sha256(
                json.dumps({"env": env, "code": code}, sort_keys=True).encode()
            ).hexdigest()
            if env
            else ""
        ),
    )


def daemons(cfg: DevConfig) -> list[Daemon]:
    """The apps as daemons to look at or stop (no environment: nothing is created)."""
    return [_daemon(cfg, app, {}) for app in table(cfg)]


def _configured(cfg: DevConfig, code: str) -> list[Daemon]:
    """The apps as they should run: this environment, this code."""
    shared = {"SERVICE_TOKENS": cfg.secret("service-token"), "PYTHONUNBUFFERED": "1"}
    envs = _env(cfg)
    return [_daemon(cfg, app, {**shared, **envs[app.name]}, code) for app in table(cfg)]


def start(cfg: DevConfig, code: str | None = None) -> list[str]:
    """Start what is not running, restart what runs other code or settings (``code``:
    a :func:`code_fingerprint`, taken now if not given); the names of those started."""
    daemons = _configured(cfg, code_fingerprint() if code is None else code)
    return [d.name for d in daemons if d.ensure()]


def not_current(cfg: DevConfig, code: str) -> list[str]:
    """The apps not running, or running from other code or settings than ``code``."""
    return outdated(_configured(cfg, code))


def outdated(daemons: Iterable[Daemon]) -> list[str]:
    """The names of those not running, or running with another stamp than their own."""
    return [d.name for d in daemons if d.pid() is None or d.stale()]


def stop(cfg: DevConfig) -> list[str]:
    return [d.name for d in reversed(daemons(cfg)) if d.stop()]
