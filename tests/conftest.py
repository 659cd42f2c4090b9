"""Shared fixtures: the local platform, once per run, and a namespace per test.

Tests under ``tests/unit`` are marked ``unit`` and need no server; tests under
``tests/integration`` are marked ``integration`` and get the real control plane
and servers, started (or reused when already healthy) the first time a test asks
for them. What this run started is stopped at the end, unless
``CHECKOUT_SAGA_KEEP_RUNNING=1``. Each test's namespace is removed for good when it
ends, and the run fails if a namespace or stream it made is still there at the end
(tests/helpers/leaks.py). How long tests wait: tests/helpers/waiting.py.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

import asyncpg
import pytest
from kubernetes import client, config
from nats.aio.client import Client as NATS

from saga_devenv import controlplane, servers
from saga_devenv.cli import apply_crds
from saga_devenv.config import DevConfig
from saga_kit.nats_access import NatsCredentials, connect
from saga_kit.settings import Secret
from tests.helpers import leaks
from tests.helpers.marker_summary import pytest_configure  # noqa: F401  (the closing tally)
from tests.helpers.namespaces import remove_namespace


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        parts = Path(str(item.fspath)).parts
        if "unit" in parts:
            item.add_marker(pytest.mark.unit)
        elif "integration" in parts:
            item.add_marker(pytest.mark.integration)
        elif "e2e" in parts:
            item.add_marker(pytest.mark.e2e)


@dataclass(frozen=True)
class Platform:
    """The running local platform as tests see it."""

    cfg: DevConfig

    @property
    def kubeconfig(self) -> Path:
        return self.cfg.kubeconfig

    @property
    def audit_log(self) -> Path:
        """The apiserver's audit log (read it with tests.helpers.audit_log)."""
        return self.cfg.run_dir / "logs" / "audit.log"

    @property
    def postgres_dsn(self) -> str:
        return servers.postgres_dsn(self.cfg)

    def nats_credentials(self, user: str = servers.NATS_ADMIN) -> NatsCredentials:
        """A local NATS user: a component's (a ``Role``) or ``admin`` (may do anything)."""
        return servers.nats_credentials(self.cfg, user)

    async def nats(self, user: str = servers.NATS_ADMIN) -> NATS:
        """A connection as ``user`` (admin by default: set-up and clean-up)."""
        return await connect(self.cfg.nats_url, self.nats_credentials(user), f"test-{user}")

    def kubectl(
        self, *args: str, namespace: str | None = None, stdin: str | None = None, check: bool = True
    ) -> subprocess.CompletedProcess[str]:
        argv = [str(self.cfg.binary("kubectl")), f"--kubeconfig={self.kubeconfig}"]
        if namespace:
            argv.append(f"--namespace={namespace}")
        result = subprocess.run(
            [*argv, *args], input=stdin, capture_output=True, text=True, check=False, timeout=60
        )
        if check and result.returncode != 0:
            raise AssertionError(f"kubectl {' '.join(args)} failed:\n{result.stderr}")
        return result


@pytest.fixture(scope="session")
def platform() -> Iterator[Platform]:
    cfg = DevConfig.from_env()
    started = controlplane.start(cfg) + servers.start(cfg)
    apply_crds(cfg)
    running = Platform(cfg)
    yield running
    try:
        assert_nothing_left(running)
    finally:
        if os.environ.get("CHECKOUT_SAGA_KEEP_RUNNING") != "1":
            for daemon in reversed(controlplane.daemons(cfg) + servers.daemons(cfg)):
                if daemon.name in started:
                    daemon.stop()


def assert_nothing_left(platform: Platform) -> None:
    """The run fails if a namespace or stream a test made outlived it (then removed)."""
    api: client.ApiClient = config.new_client_from_config(  # type: ignore[no-untyped-call]
        config_file=str(platform.kubeconfig)
    )
    core = client.CoreV1Api(api)
    namespaces = sorted(n for n in leaks.namespaces() if _exists(core, n))
    for name in namespaces:
        remove_namespace(api, name)

    async def streams() -> list[str]:
        nc = await platform.nats()
        try:
            return await leaks.leftover_streams(nc)
        finally:
            await nc.close()

    left = asyncio.run(streams())
    assert not namespaces and not left, f"left behind: namespaces {namespaces}, streams {left}"


def _exists(core: client.CoreV1Api, namespace: str) -> bool:
    try:
        core.read_namespace(namespace)
    except client.ApiException as exc:
        if exc.status == 404:
            return False
        raise
    return True


@pytest.fixture(scope="session")
def kube_client(platform: Platform) -> client.ApiClient:
    api: client.ApiClient = config.new_client_from_config(  # type: ignore[no-untyped-call]
        config_file=str(platform.kubeconfig)
    )
    return api


@pytest.fixture
def namespace(platform: Platform, kube_client: client.ApiClient) -> Iterator[str]:
    """A fresh namespace for one test, gone with all it holds when the test ends."""
    name = f"t-{uuid.uuid4().hex[:10]}"
    core = client.CoreV1Api(kube_client)
    core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=name)))
    leaks.made_namespace(name)
    yield name
    remove_namespace(kube_client, name)


@pytest.fixture
async def db_schema(platform: Platform) -> AsyncIterator[str]:
    """A fresh Postgres schema for one test's service tables, dropped afterwards."""
    schema = f"t_{uuid.uuid4().hex[:12]}"
    yield schema
    conn = await asyncpg.connect(platform.postgres_dsn)
    try:
        await conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
    finally:
        await conn.close()


@pytest.fixture
def service_token() -> Secret:
    """The shared gRPC service credential for one test."""
    return Secret(f"svc-{uuid.uuid4().hex}")
