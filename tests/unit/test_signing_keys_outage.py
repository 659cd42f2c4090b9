"""Forged kids while the User service is down: one attempt, the rest answered
unavailable at once (no queue of calls behind it)."""

from __future__ import annotations

import asyncio
import uuid

import grpc
import pytest

from saga_kit.signing_keys import PublishedKeys
from tests.helpers.processes import free_port


async def test_unknown_kids_during_an_outage_cost_one_call_a_second() -> None:
    now = [100.0]
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{free_port()}")  # nobody listens
    try:
        keys = PublishedKeys(channel, timeout=1.0, clock=lambda: now[0])
        answers = await asyncio.gather(
            *(keys.get(uuid.uuid4().hex) for _ in range(50)), return_exceptions=True
        )
        assert keys.fetches == 1
        assert all(isinstance(a, grpc.aio.AioRpcError) for a in answers)
        assert {a.code() for a in answers if isinstance(a, grpc.aio.AioRpcError)} == {
            grpc.StatusCode.UNAVAILABLE
        }
        now[0] += 1.5  # a second later the User service is asked again
        with pytest.raises(grpc.aio.AioRpcError):
            await keys.get("another")
        assert keys.fetches == 2
    finally:
        await channel.close()
