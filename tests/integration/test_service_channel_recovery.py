"""A service channel whose server was away for a while calls through again within a
couple of seconds of the server coming back.

gRPC's default reconnect backoff grows to 120 s, and calls fail at once while it
waits: the chart's checkout API, started before the User service was serving, kept
answering USER_SERVICE_UNAVAILABLE after the User service was Ready (CI, node stage).
"""

from __future__ import annotations

import asyncio
import time

import grpc

from checkout.user.v1 import user_pb2, user_pb2_grpc
from saga_kit.grpc_auth import MAX_RECONNECT_BACKOFF_MS, authenticated_channel
from saga_kit.settings import Secret
from tests.helpers.key_server import serve_signing_keys
from tests.helpers.processes import free_port

OUTAGE_SECONDS = 20.0  # with gRPC's defaults the next attempt is ~6 s after this


async def _check(stub: user_pb2_grpc.UserServiceAsyncStub) -> bool:
    try:
        await stub.ListSigningKeys(user_pb2.ListSigningKeysRequest(), timeout=0.5)
    except grpc.aio.AioRpcError:
        return False
    return True


async def test_a_channel_calls_through_soon_after_its_server_comes_back() -> None:
    port = free_port()
    channel = authenticated_channel(f"127.0.0.1:{port}", Secret("token"))
    stub = user_pb2_grpc.UserServiceStub(channel)
    server: grpc.aio.Server | None = None
    try:
        # The server is away: every call fails, and the channel backs off.
        deadline = time.monotonic() + OUTAGE_SECONDS
        while time.monotonic() < deadline:
            assert not await _check(stub)
            await asyncio.sleep(0.5)

        server = await serve_signing_keys(port)
        back = time.monotonic()
        while not await _check(stub):
            await asyncio.sleep(0.1)
            assert time.monotonic() - back < 4.0, "the channel was still backing off"
        # The bound is the backoff cap plus its jitter (20 %) and a connect.
        assert time.monotonic() - back < MAX_RECONNECT_BACKOFF_MS / 1000 * 1.2 + 1.0
    finally:
        await channel.close()
        if server is not None:
            await server.stop(None)
