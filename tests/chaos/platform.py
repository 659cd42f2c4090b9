"""A private copy of the whole local system, for the chaos suite to break.

The chaos suite restarts NATS and Redis and makes Postgres refuse writes; done to the
shared platform (``.run/``) that would break every other test using it at that moment.
So the suite brings up its own control plane and servers, fresh each run, in
``.run/chaos`` on free ports, with the same ``saga_devenv`` code ``scripts/up`` uses.
Only the apps keep their fixed ports (``saga_devenv.apps``): run the suite under
``flock /tmp/e2e.lock`` like the e2e tests. Apps of the shared system idling on those
ports (left by ``CHECKOUT_SAGA_KEEP_RUNNING=1``) are stopped for the run and started
again afterwards.

``CHECKOUT_SAGA_CHAOS_KEEP_RUNNING=1`` leaves the private system up after the run for
a look (``source .run/chaos/env.sh``); it then holds the fixed app ports until
``saga-devenv down`` is run with that env file's settings.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import shutil
import signal
from collections.abc import Iterator, Mapping
from pathlib import Path

from saga_devenv import apps, controlplane, servers
from saga_devenv.cli import apply_crds, write_env_file
from saga_devenv.config import REPO_ROOT, DevConfig
from saga_devenv.process import Daemon, free_port, port_open

RUN_DIR = Path(os.environ.get("CHECKOUT_SAGA_CHAOS_RUN_DIR", REPO_ROOT / ".run" / "chaos"))
KEEP_RUNNING = "CHECKOUT_SAGA_CHAOS_KEEP_RUNNING"

# Settings of the apps under chaos, passed through the environment they inherit (none of
# them is set by saga_devenv.apps, so these are not overridden there).
APP_SETTINGS = {
    # Checkouts that finish early are deleted while the faults go on (TTL deletes meet
    # them too); those that finish late are still there when the audit compares
    # resources with the read model.
    "CHECKOUT_TTL_AFTER_FINISHED_SECONDS": "45",
    # A SIGKILLed operator's successor takes over after 6 s instead of 15 s: more kills
    # fit in the run. Renewal still three times per lease duration.
    "CHECKOUT_LEASE_DURATION_SECONDS": "6",
    "CHECKOUT_LEASE_RENEW_SECONDS": "2",
}

_PORTS = (
    "etcd_port",
    "etcd_peer_port",
    "apiserver_port",
    "postgres_port",
    "redis_port",
    "nats_port",
    "nats_monitor_port",
)


def private_config() -> DevConfig:
    """The shared config with its own run folder and free ports for every server."""
    shared = DevConfig.from_env()
    # Not one the shared platform is configured to take later in the run, either.
    taken = {getattr(shared, name) for name in _PORTS}
    ports: set[int] = set()
    while len(ports) < len(_PORTS):
        port = free_port()
        if port not in taken:
            ports.add(port)
    etcd, peer, apiserver, postgres, redis, nats, monitor = sorted(ports)
    return dataclasses.replace(
        shared,
        run_dir=RUN_DIR,
        etcd_port=etcd,
        etcd_peer_port=peer,
        apiserver_port=apiserver,
        postgres_port=postgres,
        redis_port=redis,
        nats_port=nats,
        nats_monitor_port=monitor,
    )


def config_env(cfg: DevConfig) -> dict[str, str]:
    """The environment under which ``DevConfig.from_env()`` (e.g. ``saga-devenv audit``)
    finds this platform."""
    return {
        "CHECKOUT_SAGA_RUN_DIR": str(cfg.run_dir),
        **{
            f"CHECKOUT_SAGA_{name.removesuffix('_port').upper()}_PORT": str(getattr(cfg, name))
            for name in _PORTS
        },
    }


def _all_daemons(cfg: DevConfig) -> list[Daemon]:
    """Every process of the platform, in stopping order (apps before what they use, so
    Postgres is not kept waiting for its clients)."""
    return [
        *reversed(apps.daemons(cfg)),
        *reversed(servers.daemons(cfg)),
        *reversed(controlplane.daemons(cfg)),
    ]


def _stop_leftovers(cfg: DevConfig) -> None:
    """Stop what an earlier chaos run left (found by its pidfiles), then forget its data."""
    for daemon in _all_daemons(cfg):
        pid = daemon.pid()
        if pid is not None:
            # A run killed during a Postgres freeze leaves it stopped (SIGSTOP).
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(pid, signal.SIGCONT)
            daemon.stop()
    shutil.rmtree(servers.postgres_root(cfg), ignore_errors=True)
    shutil.rmtree(cfg.run_dir, ignore_errors=True)


def _free_app_ports() -> list[Daemon]:
    """Stop the shared system's apps that hold the fixed app ports; they are started again
    by :func:`restore_shared_apps`. Another holder is an error that says so."""
    shared = DevConfig.from_env()
    stopped = [d for d in apps.daemons(shared) if d.port and d.pid() is not None]
    for daemon in stopped:
        daemon.stop()
    taken = [f"{a.name} ({a.port})" for a in apps.APPS if a.port and port_open(a.port)]
    if taken:
        raise RuntimeError(
            f"the chaos suite needs the fixed app ports, held by something else: {', '.join(taken)}"
        )
    return stopped


@contextlib.contextmanager
def app_settings(settings: Mapping[str, str] = APP_SETTINGS) -> Iterator[None]:
    """``settings`` in this process's environment (which the started apps inherit)."""
    before = {key: os.environ.get(key) for key in settings}
    os.environ.update(settings)
    try:
        yield
    finally:
        for key, value in before.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def start_apps(cfg: DevConfig) -> list[str]:
    """Start every app that is not running (and healthy) on the private platform."""
    with app_settings():
        return apps.start(cfg)


@contextlib.contextmanager
def private_system() -> Iterator[DevConfig]:
    """Start a fresh private platform and the apps on it; stop it all afterwards."""
    cfg = private_config()
    _stop_leftovers(cfg)
    shared_apps_stopped: list[Daemon] = []
    try:
        controlplane.start(cfg)
        servers.start(cfg)
        apply_crds(cfg)
        write_env_file(cfg)
        (cfg.run_dir / "ports.env").write_text(
            "".join(f"export {k}={v}\n" for k, v in config_env(cfg).items())
        )
        shared_apps_stopped = _free_app_ports()
        start_apps(cfg)
        yield cfg
    finally:
        if os.environ.get(KEEP_RUNNING) != "1":
            for daemon in _all_daemons(cfg):
                daemon.stop()
            if shared_apps_stopped:
                apps.start(DevConfig.from_env())
