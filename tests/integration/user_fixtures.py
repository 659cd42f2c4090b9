"""A real User service (its own schema, real gRPC server) for tests of its callers."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass

import asyncpg
import httpx
import pytest

from saga_kit.access_tokens import SigningKey, new_private_key_pem
from saga_kit.settings import Secret
from tests.conftest import Platform
from user_service.app import (
    RunningGrpcServer,
    create_rest_app,
    open_runtime,
    start_grpc_server,
)
from user_service.config import UserServiceConfig

PASSWORD = "s3cret-passw0rd"


@dataclass
class UserEnv:
    grpc_target: str
    http: httpx.AsyncClient
    grpc_server: RunningGrpcServer  # stop it to show a caller does without
    signing_key: SigningKey  # the key its tokens are signed with, to craft tokens

    async def token_for(self, username: str) -> tuple[str, str]:
        """Register ``username`` and log in; returns (user id, access token)."""
        reply = await self.http.post(
            "/api/v1/users",
            json={"username": username, "email": f"{username}@example.com", "password": PASSWORD},
        )
        assert reply.status_code == 201, reply.text
        login = await self.http.post(
            "/api/v1/auth/login", json={"username": username, "password": PASSWORD}
        )
        assert login.status_code == 200, login.text
        return str(reply.json()["id"]), str(login.json()["access_token"])


@pytest.fixture
async def user_env(platform: Platform, service_token: Secret) -> AsyncIterator[UserEnv]:
    schema = f"tu_{uuid.uuid4().hex[:12]}"
    runtime = await open_runtime(
        UserServiceConfig(
            database_url=Secret(platform.postgres_dsn),
            db_schema=schema,
            redis_url=Secret(platform.cfg.redis_url),
            signing_keys=Secret(new_private_key_pem()),
            token_ttl_seconds=600,
            http_host="127.0.0.1",
            http_port=0,
            grpc_host="127.0.0.1",
            grpc_port=0,
            service_tokens=(service_token,),
        )
    )
    server = await start_grpc_server(runtime, "127.0.0.1", 0)
    transport = httpx.ASGITransport(app=create_rest_app(runtime))
    async with httpx.AsyncClient(transport=transport, base_url="http://user-service") as http:
        key = runtime.config.load_keys()[0]
        yield UserEnv(f"127.0.0.1:{server.port}", http, server, key)
    await server.stop(0)
    await runtime.close()
    conn = await asyncpg.connect(platform.postgres_dsn)
    try:
        await conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
    finally:
        await conn.close()
