"""Postgres, Redis and NATS JetStream on loopback, with data under the run folder.

Postgres and Redis come from Debian's packages (installed by scripts/bootstrap.sh),
NATS from the Go module proxy (scripts/build-binaries.sh). Each is started
directly as a foreground process we supervise through its pidfile, never as a
system service, so nothing outside the run folder is touched.

Every server asks for a password. NATS requires a user: one per component with the
permissions of :mod:`saga_kit.nats_access` (passwords in ``<run>/secrets/nats-<user>``),
plus ``admin`` for tests and people. Postgres has its user's password
(scram-sha-256). Redis gets ``requirepass`` from ``<run>/secrets/redis-password``
always, not only when pods may reach it: then one Redis serves the host and the
node with one URL form, and the main suite runs against the very server the pods use.
(A second, password-only Redis for pods would split their data from the host's.)

While a node runs (``up --node``, docs/node.md), pods reach these servers at the
node's address: Postgres and Redis listen there besides loopback, and Postgres
lets only the pod network and the node's address log in, by password. NATS can
bind one address only, so it binds all of them then; its monitor stays on
loopback. :func:`pod_urls` are the URLs pods use. Each server's config is rendered
at every start and a running server with another (another config, or other
addresses) is restarted: its stamp is the config's hash.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import hashlib
import json
import os
import pwd
import secrets
import shutil
import signal
import subprocess
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from saga_kit.events import Topology, ensure_streams
from saga_kit.nats_access import NatsCredentials, Role, any_namespace, authorization, connect
from saga_kit.settings import Secret

from .config import DevConfig
from .node_layout import CLUSTER_CIDR, NodeLayout
from .process import Daemon, DaemonError, redis_command

POSTGRES_USER = "saga"
POSTGRES_DB = "checkout"
LOOPBACK = "127.0.0.1"


def listen_addresses(node_ip: str | None) -> list[str]:
    """Loopback, and the node's address while pods need to reach the host."""
    return [LOOPBACK, *([node_ip] if node_ip else [])]


def running_node_ip(cfg: DevConfig) -> str | None:
    """The address of the node ``up --node`` brought up and ``down`` has not stopped."""
    try:
        return NodeLayout(cfg).enabled_marker.read_text().strip() or None
    except FileNotFoundError:
        return None


def _digest(*parts: str) -> str:
    return hashlib.sha256("\0".join(parts).encode()).hexdigest()


def _postgres_bindir() -> Path:
    versions = sorted(
        Path("/usr/lib/postgresql").glob("*/bin/postgres"),
        key=lambda p: int(p.parent.parent.name),
    )
    if not versions:
        raise DaemonError("PostgreSQL is not installed: run scripts/bootstrap.sh")
    return versions[-1].parent


def _postgres_os_user() -> str | None:
    """Postgres refuses to run as root; as root we run it as the `postgres` user."""
    if os.geteuid() != 0:
        return None
    try:
        pwd.getpwnam("postgres")
    except KeyError as exc:
        raise DaemonError("running as root needs the `postgres` OS user (Debian package)") from exc
    return "postgres"


def postgres_root(cfg: DevConfig) -> Path:
    """Postgres' folder: in the run folder, unless the `postgres` user can't reach it.

    As root, Postgres runs as the `postgres` user, which cannot enter a checkout
    under a private home folder (e.g. /root); then its data lives under /var/tmp,
    in a folder named after the run folder so checkouts never share one.
    """
    inside = cfg.run_dir / "postgres"
    if _postgres_os_user() is None or all(
        p.stat().st_mode & 0o001 for p in [cfg.run_dir, *cfg.run_dir.parents] if p.exists()
    ):
        return inside
    digest = hashlib.sha256(str(cfg.run_dir.resolve()).encode()).hexdigest()[:12]
    return Path("/var/tmp") / f"checkout-saga-postgres-{digest}"  # noqa: S108


def postgres_password(cfg: DevConfig) -> str:
    return (postgres_root(cfg) / "password").read_text().strip()


def postgres_dsn(cfg: DevConfig, database: str = POSTGRES_DB, host: str = LOOPBACK) -> str:
    return (
        f"postgresql://{POSTGRES_USER}:{postgres_password(cfg)}"
        f"@{host}:{cfg.postgres_port}/{database}"
    )


@dataclass(frozen=True)
class PodUrls:
    """Where pods on the node reach the host's servers (passwords included)."""

    postgres: str  # the `checkout` database as the `saga` user
    redis: str  # database 0
    nats: str  # no user: each component logs in as its own (nats_credentials)


def pod_urls(cfg: DevConfig, node_ip: str) -> PodUrls:
    """The servers at the node's address, as a chart's external values want them.
    They answer there only while the servers run in node mode (``start(cfg, node_ip)``)."""
    return PodUrls(
        postgres=postgres_dsn(cfg, host=node_ip),
        redis=cfg.redis_url_at(node_ip),
        nats=cfg.nats_url_at(node_ip),
    )


def _chown_for(path: Path, user: str | None) -> None:
    if user is not None:
        entry = pwd.getpwnam(user)
        for p in [path, *path.rglob("*")]:
            os.chown(p, entry.pw_uid, entry.pw_gid)


def _init_postgres(cfg: DevConfig, user: str | None) -> Path:
    root = postgres_root(cfg)
    data = root / "data"
    if (data / "PG_VERSION").exists():
        return data
    root.mkdir(parents=True, exist_ok=True)
    password_file = root / "password"
    if not password_file.exists():
        password_file.write_text(secrets.token_urlsafe(24) + "\n")
        password_file.chmod(0o600)
    (root / "sock").mkdir(exist_ok=True)
    pwfile = root / "initdb.pw"
    pwfile.write_text(postgres_password(cfg) + "\n")
    _chown_for(root, user)
    try:
        subprocess.run(
            [
                str(_postgres_bindir() / "initdb"),
                f"--pgdata={data}",
                f"--username={POSTGRES_USER}",
                f"--pwfile={pwfile}",
                "--auth-host=scram-sha-256",
                "--auth-local=peer",
                "--encoding=UTF8",
                "--no-instructions",
            ],
            check=True,
            capture_output=True,
            user=user,
        )
    except subprocess.CalledProcessError as exc:
        raise DaemonError(f"initdb failed: {exc.stderr.decode(errors='replace')}") from exc
    finally:
        pwfile.unlink(missing_ok=True)
    return data


def _postgres_accepts(cfg: DevConfig) -> bool:
    result = subprocess.run(
        [
            str(_postgres_bindir() / "pg_isready"),
            "-q",
            "-h",
            "127.0.0.1",
            "-p",
            str(cfg.postgres_port),
        ],
        check=False,
    )
    return result.returncode == 0


def postgres_hba(node_ip: str | None) -> str:
    """Who may log in how: the OS user over the socket; TCP by password only, from
    loopback and, with a node, from its address and the pod network."""
    sources = [f"{LOOPBACK}/32", *([f"{node_ip}/32", CLUSTER_CIDR] if node_ip else [])]
    lines = ["local all all peer"]
    lines += [f"host all all {source} scram-sha-256" for source in sources]
    return "\n".join(lines) + "\n"


def _hba_file(cfg: DevConfig) -> Path:
    return postgres_root(cfg) / "pg_hba.conf"


def _write_postgres_hba(cfg: DevConfig, node_ip: str | None) -> str:
    """Write the hba file (read by the `postgres` user); return Postgres' stamp."""
    text = postgres_hba(node_ip)
    path = _hba_file(cfg)
    if not path.exists() or path.read_text() != text:
        path.write_text(text)
        _chown_for(path, _postgres_os_user())
    return _digest(text, *postgres_daemon(cfg, node_ip).argv)


def postgres_daemon(cfg: DevConfig, node_ip: str | None = None, stamp: str = "") -> Daemon:
    user = _postgres_os_user()
    data = postgres_root(cfg) / "data"
    return Daemon(
        name="postgres",
        stamp=stamp,
        argv=[
            str(_postgres_bindir() / "postgres"),
            "-D",
            str(data),
            "-p",
            str(cfg.postgres_port),
            "-c",
            f"listen_addresses={','.join(listen_addresses(node_ip))}",
            "-c",
            f"hba_file={_hba_file(cfg)}",
            "-c",
            f"unix_socket_directories={postgres_root(cfg) / 'sock'}",
            "-c",
            "max_connections=300",
        ],
        run_dir=cfg.run_dir,
        port=cfg.postgres_port,
        healthy=lambda: _postgres_accepts(cfg),
        user=user,
    )


def _stop_stale_postgres(daemon: Daemon) -> None:
    """Stop a Postgres started with another config, at once: its SIGTERM (what
    Daemon.stop sends) would wait for every client to leave; SIGINT ends their sessions."""
    pid = daemon.pid()
    if pid is not None and daemon.stale():
        os.kill(pid, signal.SIGINT)
        daemon.stop()


def _ensure_database(cfg: DevConfig) -> None:
    env = {**os.environ, "PGPASSWORD": postgres_password(cfg)}
    base = [
        str(_postgres_bindir() / "psql"),
        "-h",
        "127.0.0.1",
        "-p",
        str(cfg.postgres_port),
        "-U",
        POSTGRES_USER,
        "-d",
        "postgres",
        "-tAc",
    ]
    exists = subprocess.run(
        [*base, f"SELECT 1 FROM pg_database WHERE datname = '{POSTGRES_DB}'"],  # noqa: S608 (a constant)
        env=env,
        check=True,
        capture_output=True,
        text=True,
    )
    if exists.stdout.strip() != "1":
        subprocess.run(
            [*base, f"CREATE DATABASE {POSTGRES_DB}"], env=env, check=True, capture_output=True
        )


def redis_config(cfg: DevConfig, node_ip: str | None) -> str:
    """The server's config file: the password is here rather than in its argv."""
    settings = {
        "bind": " ".join(listen_addresses(node_ip)),
        "port": str(cfg.redis_port),
        "dir": json.dumps(str(cfg.run_dir / "redis")),
        "requirepass": json.dumps(cfg.redis_password),
        # arq keeps its queue here: an append-only file survives a restart.
        "appendonly": "yes",
        "save": '""',
        "daemonize": "no",
    }
    return "".join(f"{key} {value}\n" for key, value in settings.items())


def _redis_config_file(cfg: DevConfig) -> Path:
    return cfg.run_dir / "redis.conf"


def _write_private(path: Path, text: str) -> str:
    """Write a config holding passwords (mode 0600); return its hash."""
    path.touch(mode=0o600)
    if path.read_text() != text:
        path.write_text(text)
    return _digest(text)


def redis_daemon(cfg: DevConfig, stamp: str = "") -> Daemon:
    server = shutil.which("redis-server") or "/usr/bin/redis-server"
    return Daemon(
        name="redis",
        stamp=stamp,
        argv=[server, str(_redis_config_file(cfg))],
        run_dir=cfg.run_dir,
        port=cfg.redis_port,
        healthy=lambda: redis_command(cfg.redis_port, "PING", cfg.redis_password).startswith(
            b"+PONG"
        ),
    )


def _nats_jetstream_healthy(cfg: DevConfig) -> bool:
    url = f"http://127.0.0.1:{cfg.nats_monitor_port}/jsz"
    with urllib.request.urlopen(url, timeout=1.0) as resp:
        return bool(json.loads(resp.read()).get("config"))


NATS_ADMIN = "admin"


def nats_credentials(cfg: DevConfig, user: str) -> NatsCredentials:
    """The local NATS user ``user`` (a :class:`Role` value or ``admin``)."""
    return NatsCredentials(user, Secret(cfg.secret(_nats_secret(user))))


def nats_password_file(cfg: DevConfig, user: str) -> Path:
    return cfg.secret_file(_nats_secret(user))


def _nats_secret(user: str) -> str:
    """The local secret holding ``user``'s NATS password (a Role is a str: its value)."""
    return f"nats-{user}"


def nats_config(cfg: DevConfig) -> str:
    """The server's config (JSON, which nats-server reads): users and permissions,
    and the monitor on loopback whatever the clients' address.

    The permissions cover the default names and every namespaced topology, since
    tests share this server with their own streams.
    """
    passwords = {role.value: nats_credentials(cfg, role.value).password.value for role in Role}
    admin = nats_credentials(cfg, NATS_ADMIN).password.value
    auth = authorization(passwords, [Topology(), any_namespace()], admin=admin)
    monitor = f"{LOOPBACK}:{cfg.nats_monitor_port}"
    return json.dumps({"authorization": auth, "http": monitor}, indent=2) + "\n"


def nats_address(node_ip: str | None) -> str:
    """Loopback, or every address with a node: nats-server binds one address only."""
    return "0.0.0.0" if node_ip else LOOPBACK  # noqa: S104 (every client needs a password)


def nats_daemon(cfg: DevConfig, stamp: str = "", node_ip: str | None = None) -> Daemon:
    return Daemon(
        name="nats",
        stamp=stamp,
        argv=[
            str(cfg.binary("nats-server")),
            "--config",
            str(cfg.run_dir / "nats.conf"),
            "--addr",
            nats_address(node_ip),
            "--port",
            str(cfg.nats_port),
            "--jetstream",
            "--store_dir",
            str(cfg.run_dir / "nats"),
            "--server_name",
            "checkout-saga-dev",
        ],
        run_dir=cfg.run_dir,
        port=cfg.nats_port,
        healthy=lambda: _nats_jetstream_healthy(cfg),
    )


async def _provision_streams(cfg: DevConfig) -> None:
    """Create the default streams as the operator does, so the Product service and
    the listener (which may not create them) can start before the operator."""
    nc = await connect(cfg.nats_url, nats_credentials(cfg, Role.OPERATOR.value), "saga-devenv")
    try:
        await ensure_streams(nc.jetstream(), Topology())
    finally:
        await nc.close()


def daemons(cfg: DevConfig) -> list[Daemon]:
    """The servers as daemons to look at or stop (no stamps: nothing is written)."""
    return [postgres_daemon(cfg), redis_daemon(cfg), nats_daemon(cfg)]


def _configured(cfg: DevConfig, node_ip: str | None) -> list[Daemon]:
    """The servers as they should run now, their configs written."""
    postgres = postgres_daemon(cfg, node_ip, _write_postgres_hba(cfg, node_ip))
    redis_stamp = _write_private(_redis_config_file(cfg), redis_config(cfg, node_ip))
    nats_stamp = _digest(
        _write_private(cfg.run_dir / "nats.conf", nats_config(cfg)), nats_address(node_ip)
    )
    return [postgres, redis_daemon(cfg, redis_stamp), nats_daemon(cfg, nats_stamp, node_ip)]


def start(cfg: DevConfig, node_ip: str | None = None) -> list[str]:
    """Start (or reuse) Postgres, Redis and NATS; return the names started now.

    With ``node_ip``, or while a node runs (its marker), they listen for pods at the
    node's address too; otherwise on loopback only. A server listening elsewhere than
    it should is restarted."""
    cfg.run_dir.mkdir(parents=True, exist_ok=True)
    if shutil.which("redis-server") is None:
        raise DaemonError("redis-server is not installed: run scripts/bootstrap.sh")
    if not cfg.binary("nats-server").exists():
        raise DaemonError(f"{cfg.binary('nats-server')} missing: run scripts/build-binaries.sh")
    _init_postgres(cfg, _postgres_os_user())
    (cfg.run_dir / "redis").mkdir(exist_ok=True)
    configured = _configured(cfg, node_ip or running_node_ip(cfg))
    _stop_stale_postgres(configured[0])
    started = [d.name for d in configured if d.ensure()]
    _ensure_database(cfg)
    # In a thread of its own: a caller may be running an event loop already.
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        pool.submit(asyncio.run, _provision_streams(cfg)).result()
    return started


def stop(cfg: DevConfig) -> list[str]:
    return [d.name for d in reversed(daemons(cfg)) if d.stop()]
