"""Postgres, Redis and NATS JetStream are real servers, started idempotently."""

from __future__ import annotations

import uuid

import asyncpg
import redis.asyncio as aioredis
from nats.js.api import StreamConfig

from saga_devenv import controlplane, servers
from tests.conftest import Platform
from tests.helpers.leaks import made_streams


async def test_postgres_accepts_the_dsn_and_refuses_a_wrong_password(platform: Platform) -> None:
    conn = await asyncpg.connect(platform.postgres_dsn)
    try:
        assert await conn.fetchval("SELECT current_database()") == servers.POSTGRES_DB
        assert await conn.fetchval("SHOW server_version_num") >= "150000"
    finally:
        await conn.close()
    wrong = platform.postgres_dsn.replace(servers.postgres_password(platform.cfg), "wrong")
    try:
        await asyncpg.connect(wrong)
    except asyncpg.InvalidPasswordError:
        pass
    else:
        raise AssertionError("a wrong password was accepted")


async def test_redis_round_trip(platform: Platform) -> None:
    r = aioredis.Redis.from_url(platform.cfg.redis_url)
    key = f"test:{uuid.uuid4()}"
    await r.set(key, "v", ex=10)
    assert await r.get(key) == b"v"
    assert (await r.config_get("appendonly"))["appendonly"] == "yes"
    await r.aclose()


async def test_nats_jetstream_persists_and_deduplicates(platform: Platform) -> None:
    nc = await platform.nats()
    js = nc.jetstream()
    stream = f"TEST_{uuid.uuid4().hex[:8]}"
    made_streams(stream)
    info = await js.add_stream(StreamConfig(name=stream, subjects=[f"{stream}.>"]))
    assert info.config.name == stream
    first = await js.publish(f"{stream}.a", b"x", headers={"Nats-Msg-Id": "m-1"})
    again = await js.publish(f"{stream}.a", b"x", headers={"Nats-Msg-Id": "m-1"})
    assert again.duplicate and again.seq == first.seq
    assert (await js.stream_info(stream)).state.messages == 1
    await js.delete_stream(stream)
    await nc.close()
    server = await platform.nats()
    assert server.connected_server_version.major == 2
    assert server.connected_server_version.minor >= 10
    await server.close()


def test_start_is_idempotent_and_reuses_healthy_servers(platform: Platform) -> None:
    pids = {
        d.name: d.pid() for d in controlplane.daemons(platform.cfg) + servers.daemons(platform.cfg)
    }
    assert controlplane.start(platform.cfg) == []
    assert servers.start(platform.cfg) == []
    after = {
        d.name: d.pid() for d in controlplane.daemons(platform.cfg) + servers.daemons(platform.cfg)
    }
    assert pids == after and all(after.values())
