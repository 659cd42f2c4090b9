"""Postgres, Redis and NATS JetStream on loopback, with data under the run folder.

Postgres and Redis come from Debian's packages (installed by scripts/bootstrap.sh),
NATS from the Go module proxy (scripts/build-binaries.sh). Each is started
directly as a foreground process we supervise through its pidfile, never as a
system service, so nothing outside the run folder is touched.

NATS requires a user: one per component with the permissions of
:mod:`saga_kit.nats_access` (passwords in ``<run>/secrets/nats-<user>``), plus
``admin`` for tests and people. Its config is rendered at every start; a running
server whose config differs is restarted (its stamp is the config's hash).
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
import subprocess
import urllib.request
from pathlib import Path

from saga_kit.events import Topology, ensure_streams
from saga_kit.nats_access import NatsCredentials, Role, any_namespace, authorization, connect
from saga_kit.settings import Secret

from .config import DevConfig
from .process import Daemon, DaemonError, redis_command

POSTGRES_USER = "saga"
POSTGRES_DB = "checkout"


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


def postgres_dsn(cfg: DevConfig, database: str = POSTGRES_DB) -> str:
    return (
        f"postgresql://{POSTGRES_USER}:{postgres_password(cfg)}"
        f"@127.0.0.1:{cfg.postgres_port}/{database}"
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


def postgres_daemon(cfg: DevConfig) -> Daemon:
    user = _postgres_os_user()
    data = postgres_root(cfg) / "data"
    return Daemon(
        name="postgres",
        argv=[
            str(_postgres_bindir() / "postgres"),
            "-D",
            str(data),
            "-p",
            str(cfg.postgres_port),
            "-c",
            "listen_addresses=127.0.0.1",
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


def redis_daemon(cfg: DevConfig) -> Daemon:
    server = shutil.which("redis-server") or "/usr/bin/redis-server"
    return Daemon(
        name="redis",
        argv=[
            server,
            "--bind",
            "127.0.0.1",
            "--port",
            str(cfg.redis_port),
            "--dir",
            str(cfg.run_dir / "redis"),
            # arq keeps its queue here: an append-only file survives a restart.
            "--appendonly",
            "yes",
            "--save",
            "",
            "--daemonize",
            "no",
        ],
        run_dir=cfg.run_dir,
        port=cfg.redis_port,
        healthy=lambda: redis_command(cfg.redis_port, "PING").startswith(b"+PONG"),
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
    """The server's config (JSON, which nats-server reads): users and permissions.

    The permissions cover the default names and every namespaced topology, since
    tests share this server with their own streams.
    """
    passwords = {role.value: nats_credentials(cfg, role.value).password.value for role in Role}
    admin = nats_credentials(cfg, NATS_ADMIN).password.value
    auth = authorization(passwords, [Topology(), any_namespace()], admin=admin)
    return json.dumps({"authorization": auth}, indent=2) + "\n"


def _write_nats_config(cfg: DevConfig) -> str:
    """Write the config (mode 0600: it holds passwords); return its hash."""
    text = nats_config(cfg)
    path = cfg.run_dir / "nats.conf"
    path.touch(mode=0o600)
    if path.read_text() != text:
        path.write_text(text)
    return hashlib.sha256(text.encode()).hexdigest()


def nats_daemon(cfg: DevConfig, stamp: str = "") -> Daemon:
    return Daemon(
        name="nats",
        stamp=stamp,
        argv=[
            str(cfg.binary("nats-server")),
            "--config",
            str(cfg.run_dir / "nats.conf"),
            "--addr",
            "127.0.0.1",
            "--port",
            str(cfg.nats_port),
            "--http_port",
            str(cfg.nats_monitor_port),
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


def daemons(cfg: DevConfig, nats_stamp: str = "") -> list[Daemon]:
    return [postgres_daemon(cfg), redis_daemon(cfg), nats_daemon(cfg, nats_stamp)]


def start(cfg: DevConfig) -> list[str]:
    """Start (or reuse) Postgres, Redis and NATS; return the names started now."""
    cfg.run_dir.mkdir(parents=True, exist_ok=True)
    if shutil.which("redis-server") is None:
        raise DaemonError("redis-server is not installed: run scripts/bootstrap.sh")
    if not cfg.binary("nats-server").exists():
        raise DaemonError(f"{cfg.binary('nats-server')} missing: run scripts/build-binaries.sh")
    _init_postgres(cfg, _postgres_os_user())
    (cfg.run_dir / "redis").mkdir(exist_ok=True)
    stamp = _write_nats_config(cfg)
    started = [d.name for d in daemons(cfg, stamp) if d.ensure()]
    _ensure_database(cfg)
    # In a thread of its own: a caller may be running an event loop already.
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        pool.submit(asyncio.run, _provision_streams(cfg)).result()
    return started


def stop(cfg: DevConfig) -> list[str]:
    return [d.name for d in reversed(daemons(cfg)) if d.stop()]
