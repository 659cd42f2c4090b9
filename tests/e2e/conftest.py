"""The whole system as real processes, like ``scripts/up`` runs it, for HTTP tests."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from dataclasses import dataclass

import httpx
import pytest

from saga_devenv import apps
from tests.conftest import Platform

PASSWORD = "e2e-passw0rd"


@dataclass(frozen=True)
class System:
    """The apps' addresses, on the ports of ``platform.cfg`` (``CHECKOUT_SAGA_API_PORT``, ...)."""

    platform: Platform

    @property
    def users(self) -> str:
        return apps.url(self.platform.cfg.user_http_port, "/api/v1")

    @property
    def products(self) -> str:
        return apps.url(self.platform.cfg.product_http_port, "/api/v1")

    @property
    def api(self) -> str:
        return apps.url(self.platform.cfg.api_port)

    @property
    def listener(self) -> str:
        return apps.url(self.platform.cfg.listener_port, apps.NOTIFICATIONS_PATH)

    @property
    def sandbox(self) -> str:
        return apps.url(self.platform.cfg.sandbox_port)

    @property
    def server_key(self) -> str:
        return apps.sandbox_key(self.platform.cfg)

    async def account(self, http: httpx.AsyncClient) -> tuple[str, dict[str, str]]:
        name = f"u{uuid.uuid4().hex[:10]}"
        reply = await http.post(
            f"{self.users}/users",
            json={"username": name, "email": f"{name}@example.com", "password": PASSWORD},
        )
        assert reply.status_code == 201, reply.text
        login = await http.post(
            f"{self.users}/auth/login", json={"username": name, "password": PASSWORD}
        )
        assert login.status_code == 200, login.text
        return str(reply.json()["id"]), {"Authorization": f"Bearer {login.json()['access_token']}"}

    async def product(
        self, http: httpx.AsyncClient, owner: dict[str, str], price: int = 20_000, stock: int = 10
    ) -> dict[str, object]:
        reply = await http.post(
            f"{self.products}/products",
            json={"name": f"Teh {uuid.uuid4().hex[:8]}", "price": price, "stock": stock},
            headers=owner,
        )
        assert reply.status_code == 201, reply.text
        return dict(reply.json())


@pytest.fixture(scope="session")
def system(platform: Platform) -> Iterator[System]:
    # The apps must run the code under test, not what an earlier `scripts/up` started.
    code = apps.code_fingerprint()
    started = apps.start(platform.cfg, code)
    if stale := apps.not_current(platform.cfg, code):
        pytest.fail(
            f"{', '.join(stale)} not running from this checkout's code and settings; "
            "run `scripts/down && scripts/up`"
        )
    yield System(platform)
    if os.environ.get("CHECKOUT_SAGA_KEEP_RUNNING") != "1":
        for daemon in reversed(apps.daemons(platform.cfg)):
            if daemon.name in started:
                daemon.stop()
