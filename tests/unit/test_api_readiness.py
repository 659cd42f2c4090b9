"""The checkout API is not Ready until it holds the User service's token keys, and asks
for them again on each probe until it does: a REST API started before the User
service (a fresh `helm install`) takes no traffic it could only answer 503. Once held,
the keys keep it Ready through a User service outage."""

from __future__ import annotations

import asyncio
import dataclasses
from typing import Any

import grpc
import httpx

from checkout_api.app import ApiDeps, create_app
from saga_kit.grpc_auth import authenticated_channel
from saga_kit.settings import Secret
from saga_kit.signing_keys import PublishedKeys
from tests.helpers.key_server import serve_signing_keys
from tests.helpers.processes import free_port


class ReadModel:
    async def fetchval(self, query: str) -> int:
        return 1


async def _readyz(keys: PublishedKeys) -> httpx.Response:
    deps: list[Any] = [None] * 9
    deps[1] = ReadModel()
    app = create_app(dataclasses.replace(ApiDeps(*deps), token_keys=keys))
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://api"
    ) as http:
        return await http.get("/readyz")


async def test_not_ready_until_the_user_service_publishes_its_keys() -> None:
    port = free_port()
    channel = authenticated_channel(f"127.0.0.1:{port}", Secret("service-token"))
    server: grpc.aio.Server | None = None
    now = [100.0]
    keys = PublishedKeys(channel, timeout=1.0, retry_after=1.0, clock=lambda: now[0])
    try:
        reply = await _readyz(keys)  # nobody listens yet
        assert reply.status_code == 503, reply.text
        assert reply.json()["reason"] == "TOKEN_KEYS_UNAVAILABLE"
        assert reply.headers["Retry-After"]
        assert keys.fetches == 1

        server = await serve_signing_keys(port)
        assert (await _readyz(keys)).status_code == 503  # asked a moment ago: not again
        assert keys.fetches == 1

        now[0] += 1.5
        await asyncio.sleep(1.0)  # the channel's first reconnect backoff (0.5 s + jitter)
        reply = await _readyz(keys)
        assert reply.status_code == 200, reply.text
        assert keys.fetches == 2 and len(keys.keys) == 1

        await server.stop(None)  # an outage later: the keys held keep it Ready
        now[0] += 10
        assert (await _readyz(keys)).status_code == 200
        assert keys.fetches == 2
    finally:
        await channel.close()
        if server is not None:
            await server.stop(None)
